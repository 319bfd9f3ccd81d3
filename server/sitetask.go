package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// ErrSiteTask is returned when a task run on one named site (an init or
// evaluate task) does not complete: the site never connected, failed the
// task, disconnected, sent something unusable or missed the deadline.
var ErrSiteTask = errors.New("site task failed")

// siteOutcome is what a task run on one site returned.
type siteOutcome struct {
	// weights are an init task's initial model.
	weights *model.Weights
	// metrics are an evaluate task's result.
	metrics map[string]float64
	energy  *pb.EnergyReport
}

// runSiteTask sends task to the named site and awaits its outcome: the
// weights it uploads (an init task) or the result it reports (an evaluate
// task). It waits up to the coordinator's SiteWait for the site to connect
// and up to deadline for the answer; key is the job key that named the site,
// for messages. global is the model the task fetches (nil for none); the
// caller keeps its reference. task's TaskId is set here.
func (c *Coordinator) runSiteTask(ctx context.Context, site, key string, task *pb.Task, global *storedModel, deadline time.Duration) (*siteOutcome, error) {
	what := taskWord(task.GetKind())
	if err := c.awaitSite(ctx, site, key); err != nil {
		return nil, err
	}
	box := newRoundRun(nil, nil)
	t := &pendingTask{id: newID(), site: site, box: box, global: global, job: task.GetJobId(), arm: task.GetArm(), round: task.GetRound()}
	task.TaskId = t.id
	task.DeadlineUnixMs = time.Now().Add(deadline).UnixMilli()
	c.addTask(t)
	defer func() {
		c.removeTask(t.id)
		close(box.closed)
	}()
	if err := c.sendTo(site, &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Task{Task: task}}); err != nil {
		return nil, fmt.Errorf("%w: sending the %s task to site %q: %v", ErrSiteTask, what, site, err)
	}
	c.log.Info("site_task_sent", "job", task.GetJobId(), "site", site, "kind", what, "task", t.id)
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	cancel := func(reason string) {
		_ = c.sendTo(site, &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Cancel{Cancel: &pb.CancelTask{TaskId: t.id, Reason: reason}}})
	}
	for {
		select {
		case <-ctx.Done():
			cancel("job cancelled")
			return nil, ctx.Err()
		case <-timer.C:
			cancel("deadline passed")
			return nil, fmt.Errorf("%w: site %q did not finish the %s task within %s (deadline.round); raise deadline.round or check the site's logs", ErrSiteTask, site, what, deadline)
		case ev := <-box.events:
			switch ev.kind {
			case evUpdate:
				if task.GetKind() != pb.TaskKind_TASK_KIND_INIT {
					ev.update.discard()
					ev.reply <- fmt.Errorf("a %s task returns a result, not weights", what)
					continue
				}
				if err := ev.update.weights.CheckFinite(); err != nil {
					ev.reply <- err
					return nil, fmt.Errorf("%w: site %q sent initial weights that are not finite: %v; fix the trainer's init", ErrSiteTask, site, err)
				}
				ev.reply <- nil
				return &siteOutcome{weights: ev.update.weights, metrics: ev.update.metrics, energy: ev.update.energy}, nil
			case evResult:
				if task.GetKind() == pb.TaskKind_TASK_KIND_INIT {
					return nil, fmt.Errorf("%w: site %q answered the init task without weights; update the site", ErrSiteTask, site)
				}
				return &siteOutcome{metrics: ev.metrics, energy: ev.energy}, nil
			case evFailed:
				return nil, fmt.Errorf("%w: site %q failed the %s task: %s", ErrSiteTask, site, what, ev.reason)
			case evRejected:
				return nil, fmt.Errorf("%w: site %q's answer to the %s task was refused: %s", ErrSiteTask, site, what, ev.reason)
			case evDisconnected:
				return nil, fmt.Errorf("%w: site %q disconnected during the %s task (%s); restart it and resubmit the job", ErrSiteTask, site, what, ev.reason)
			}
		}
	}
}

// awaitSite waits up to SiteWait for site to be connected.
func (c *Coordinator) awaitSite(ctx context.Context, site, key string) error {
	timer := time.NewTimer(c.cfg.SiteWait)
	defer timer.Stop()
	for {
		c.mu.Lock()
		_, ok := c.sites[site]
		changed := c.siteCond
		c.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			return fmt.Errorf("%w: site %q (%s) did not connect within %s; start it (cohort site -c site.yaml) or name a site that is up in %s", ErrSiteTask, site, key, c.cfg.SiteWait, key)
		case <-changed:
		}
	}
}

func taskWord(k pb.TaskKind) string {
	switch k {
	case pb.TaskKind_TASK_KIND_INIT:
		return "init"
	case pb.TaskKind_TASK_KIND_EVALUATE:
		return "evaluate"
	case pb.TaskKind_TASK_KIND_CENTRALIZED_TRAIN:
		return "centralized-train"
	default:
		return "train"
	}
}

// siteEvaluator evaluates global models with evaluate tasks on one site
// (the job's eval.site), on that site's test set.
type siteEvaluator struct {
	c    *Coordinator
	j    *jobRun
	site string
	spec *pb.ModelSpec
}

var _ Evaluator = (*siteEvaluator)(nil)

// Evaluate implements Evaluator.
func (e *siteEvaluator) Evaluate(ctx context.Context, w *model.Weights) (Evaluation, error) {
	stored, err := e.c.models.put(w)
	if err != nil {
		return Evaluation{}, err
	}
	defer e.c.models.release(stored)
	spec := e.j.spec
	task := &pb.Task{
		JobId: e.j.id, Kind: pb.TaskKind_TASK_KIND_EVALUATE,
		Model: e.spec, Dataset: spec.Data.Dataset,
		Train:            &pb.TrainParams{BatchSize: int32(spec.Train.BatchSize), Seed: spec.Seed},
		EnergyIntervalMs: spec.Energy.Interval.Milliseconds(),
		CpuWattsPerCore:  spec.Energy.CPUWattsPerCore,
	}
	stored.taskModel(task)
	out, err := e.c.runSiteTask(ctx, e.site, "eval.site", task, stored, spec.Deadline.Round)
	if err != nil {
		return Evaluation{}, err
	}
	m := out.metrics
	n := int64(m["num_samples"])
	if n < 1 {
		return Evaluation{}, fmt.Errorf("%w: site %q evaluated on %d samples; give it a test set (its data folder's t10k files)", ErrSiteTask, e.site, n)
	}
	ev := Evaluation{Loss: m["loss"], Accuracy: m["accuracy"], NumSamples: n}
	switch en := energyOf(out.energy); {
	case en.measured:
		ev.EnergyJoules, ev.EnergyMethod = en.gpuJ+en.cpuJ, "measured"
	case out.energy != nil:
		ev.EnergyJoules, ev.EnergyMethod = en.estimatedJ, "estimated"
	}
	return ev, nil
}

// initialModel returns a job's global model before round 1: the prepared
// one, or the weights an init task on the prepared site makes. The
// weights of an init task are made once per job run and shared by its
// arms; a job that resumes makes them again only if an arm has no
// committed round, and a seeded trainer makes the same ones.
func (c *Coordinator) initialModel(ctx context.Context, j *jobRun, prep *Prepared) (*model.Weights, error) {
	if prep.Initial != nil {
		return prep.Initial, nil
	}
	j.initMu.Lock()
	defer j.initMu.Unlock()
	if j.initial != nil {
		return j.initial, nil
	}
	if prep.InitSite == "" {
		return nil, errors.New("the model provider gave neither initial weights nor an init site; set model.init in the job")
	}
	spec := j.spec
	j.emit(&pb.JobEvent{Kind: "init", Site: prep.InitSite, Message: "initial weights from an init task on site " + prep.InitSite}, nil)
	task := &pb.Task{
		JobId: j.id, Kind: pb.TaskKind_TASK_KIND_INIT, Model: prep.Spec, Dataset: spec.Data.Dataset,
		Train:            &pb.TrainParams{Seed: spec.Seed},
		EnergyIntervalMs: spec.Energy.Interval.Milliseconds(),
		CpuWattsPerCore:  spec.Energy.CPUWattsPerCore,
	}
	out, err := c.runSiteTask(ctx, prep.InitSite, "model.init.site", task, nil, spec.Deadline.Round)
	if err != nil {
		return nil, fmt.Errorf("making the initial weights: %w", err)
	}
	c.log.Info("site_task_done", "job", j.id, "site", prep.InitSite, "kind", "init", "tensors", len(out.weights.Tensors))
	j.emit(&pb.JobEvent{Kind: "init_done", Site: prep.InitSite, Message: fmt.Sprintf("site %s made the initial weights", prep.InitSite)}, nil)
	j.initial = out.weights
	return j.initial, nil
}

// dropInitial forgets the job's initial weights once no arm will start
// from them, so that they are freed when the arms' global models move on.
func (j *jobRun) dropInitial() {
	j.initMu.Lock()
	defer j.initMu.Unlock()
	j.initial = nil
}
