package server

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/round"
)

// roundExec carries out one round: it feeds the state machine of
// server/round with what the sites do and performs the actions it returns.
type roundExec struct {
	c      *Coordinator
	a      *armRun
	r      int
	rounds int
	sm     *round.Round
	rr     *roundRun
	agg    aggregators.Round
	stored *storedModel

	tasks   map[string]*pendingTask // by site
	updates map[string]*receivedUpdate
	replies map[string]chan error
	timer   *time.Timer
	queue   []round.Event // events the actions themselves produced

	started       time.Time
	bytesReceived int64
	energy        energyTally
	// pending holds the energy reports of sites whose work the round has
	// not yet counted: counted as training (or evaluation) once their
	// update is aggregated, as wasted when it is not.
	pending       map[string]siteEnergyReports
	fedEvalN      float64
	fedEvalAcc    float64
	fedEvalLoss   float64
	next          *model.Weights
	serverMetrics map[string]float64
	commit        *round.Commit

	// Screening (screen.go): the delta norms of this round's updates by
	// site, the updates waiting for the adaptive bound's reference, the
	// decisions to record, and the sites in the order they were
	// aggregated.
	norms  normSet
	parked map[string]*receivedUpdate
	held   []*spilledUpdate // folded updates the aggregate reads again from their files
	// retired is the round's global model file once the committed model
	// replaced it, closed with the round's tasks.
	retired *globalFile
	notes   map[string]screenNote
	added   []string
	// From the aggregate at commit: each added update's share of the
	// weight (in the order of added) and a stateful strategy's next state.
	weights   []float64
	nextState *model.Weights

	// sample is the round's virtual clients, ascending (virtual.go).
	sample []int64
	// virt moves the slices of workers that fail (virtual_rescue.go).
	virt virtualRescue
}

func (c *Coordinator) runRound(ctx context.Context, a *armRun, r, rounds int) (err error) {
	defer func() {
		// The state machine's errors say "round N" themselves.
		if err != nil && !errors.Is(err, round.ErrQuorumUnreachable) && !errors.Is(err, round.ErrDeadlineExceeded) &&
			!errors.Is(err, round.ErrCanceled) && !errors.Is(err, context.Canceled) {
			err = fmt.Errorf("round %d: %w", r, err)
		}
	}()
	spec := a.j.spec
	cands, err := c.candidates(ctx, a, r == 1)
	if err != nil {
		return err
	}
	fraction, quorum := spec.Sites.Fraction, spec.Sites.MinPerRound
	if a.kind == pb.TaskKind_TASK_KIND_CENTRALIZED_TRAIN {
		fraction, quorum = 1, 1
	}
	sm, err := round.New(round.Config{
		Round: r, Candidates: cands, Fraction: fraction, MinPerRound: quorum,
		Deadline: spec.Deadline.Round, Seed: spec.Seed, OverSelect: spec.Sites.OverSelect,
	})
	if err != nil {
		return err
	}
	defer paceGC(a.modelBytes())() // before the sum is allocated
	agg, err := c.beginRound(a, r)
	if err != nil {
		return fmt.Errorf("starting aggregation: %w", err)
	}
	var stored *storedModel
	if a.file != nil {
		stored = c.models.putFile(a.file)
	} else if stored, err = c.models.put(a.global); err != nil {
		return err
	}
	defer c.models.release(stored)
	x := &roundExec{
		c: c, a: a, r: r, rounds: rounds, sm: sm, agg: agg, stored: stored,
		tasks:   make(map[string]*pendingTask),
		updates: make(map[string]*receivedUpdate),
		replies: make(map[string]chan error),
		pending: make(map[string]siteEnergyReports),
		started: time.Now(),
		norms:   normSet{by: make(map[string]float64)},
		parked:  make(map[string]*receivedUpdate),
		notes:   make(map[string]screenNote),
	}
	// Work of an earlier attempt at this round was discarded: it counts
	// here (as do late reports, which finish takes).
	x.energy.merge(&a.carry)
	a.carry = energyTally{}
	x.rr = newRoundRun(func(site string, p *pb.TaskProgress) {
		c.log.Debug("site_progress", "job", a.j.id, "arm", a.arm.Name, "round", r, "site", site,
			"epoch", p.GetEpoch(), "batch", p.GetBatch(), "batches", p.GetBatches(), "loss", p.GetLoss())
	}, &a.late)
	x.timer = time.NewTimer(time.Hour)
	x.timer.Stop()
	defer x.cleanup()

	a.rec.publish(RoundStarted{Arm: a.arm.Name, Round: r, Rounds: rounds, Attempt: a.attempt})
	a.j.emit(&pb.JobEvent{Kind: "round_started", Arm: a.arm.Name, Round: int32(r), Rounds: int32(rounds)}, func(info *pb.Job) {
		info.Arm, info.Round, info.Rounds, info.SitesReporting = a.arm.Name, int32(r), int32(rounds), 0
	})
	x.apply(ctx, sm.Start(time.Now()))
	for !sm.Done() {
		select {
		case ev := <-x.rr.events:
			x.handle(ctx, ev)
		case now := <-x.timer.C:
			if !now.Before(sm.Deadline()) {
				x.releaseParked(ctx) // the round closes with what it has
			}
			x.apply(ctx, sm.Tick(now))
		case <-ctx.Done():
			x.apply(ctx, sm.Step(time.Now(), round.Cancel{Reason: "job cancelled"}))
		}
	}
	out := sm.Outcome()
	if out.Phase != round.PhaseCommitted {
		// The attempt's energy was spent for nothing; the next attempt (a
		// retry, or the next leader's) counts it as wasted.
		x.discardPending()
		x.energy.wasteAll()
		a.carry.merge(&x.energy)
		a.j.emit(&pb.JobEvent{Kind: "round_failed", Arm: a.arm.Name, Round: int32(r), Rounds: int32(rounds),
			Message: fmt.Sprintf("%s round %d failed: %v", a.arm.Name, r, out.Err)}, nil)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return x.virtualFailure(out.Err)
	}
	return x.finish(ctx)
}

// cleanup forgets the round's tasks and closes its mailbox, answering any
// upload still waiting.
func (x *roundExec) cleanup() {
	x.timer.Stop()
	// What the round's tasks report late still counts (as wasted) in the
	// arm, until the next round closes.
	x.c.forgetClosed(x.a.closedTasks)
	x.a.closedTasks = x.a.closedTasks[:0]
	for _, t := range x.tasks {
		x.a.closedTasks = append(x.a.closedTasks, t.id)
	}
	x.a.closedTasks = append(x.a.closedTasks, x.virt.retiredIDs()...)
	x.c.closeTasks(x.a.closedTasks, &x.a.late)
	close(x.rr.closed)
	x.retired.close()
	for _, s := range x.held { // updates the aggregate read from their files
		s.remove()
	}
	x.held = nil
	for site, up := range x.parked { // the round closed without them
		up.discard()
		delete(x.parked, site)
	}
	for site, reply := range x.replies {
		reply <- fmt.Errorf("%w: round %d of %s ended before the update was used", ErrStaleRound, x.r, x.a.arm.Name)
		delete(x.replies, site)
	}
}

// handle turns a gRPC-side event into state machine events.
func (x *roundExec) handle(ctx context.Context, ev roundEvent) {
	if x.reroute(&ev) { // a worker of virtual clients failed
		return
	}
	now := time.Now()
	switch ev.kind {
	case evUpdate:
		up := ev.update
		if old, ok := x.replies[ev.site]; ok {
			old <- fmt.Errorf("superseded by a newer upload")
		}
		x.replies[ev.site] = ev.reply
		x.pending[ev.site] = siteEnergyReports{train: up.energy, eval: up.evalEnergy}
		x.parked[ev.site].discard()
		delete(x.parked, ev.site) // a newer upload replaces a parked one
		x.admit(ctx, ev.site, up)
	case evRejected:
		x.holdEnergy(ev.site, ev.energy)
		x.apply(ctx, x.sm.Step(now, round.UpdateRejected{Site: ev.site, Reason: ev.reason}))
	case evFailed:
		x.holdEnergy(ev.site, ev.energy)
		x.apply(ctx, x.sm.Step(now, round.SiteFailed{Site: ev.site, Reason: ev.reason}))
	case evDisconnected:
		x.parked[ev.site].discard()
		delete(x.parked, ev.site)
		x.apply(ctx, x.sm.Step(now, round.SiteDisconnected{Site: ev.site}))
	case evResult:
		// A training task answers with an update, never a bare result.
		x.c.log.Warn("round_ignored_result", "job", x.a.j.id, "arm", x.a.arm.Name, "round", x.r, "site", ev.site)
	}
	// Parked updates go on once nothing else can arrive.
	x.releaseIfStuck(ctx)
}

// validate checks what the aggregator cannot: the aggregator's Add checks
// shapes and finite values while it folds, so they are not scanned twice.
func (x *roundExec) validate(up *receivedUpdate) error {
	if up.numSamples < 1 {
		return fmt.Errorf("update reports %d samples; a site must train on at least one", up.numSamples)
	}
	return nil
}

// apply performs actions, then any events they produced, until none is left.
func (x *roundExec) apply(ctx context.Context, acts []round.Action) {
	for {
		for _, act := range acts {
			x.do(ctx, act)
		}
		if len(x.queue) == 0 {
			return
		}
		ev := x.queue[0]
		x.queue = x.queue[1:]
		acts = x.sm.Step(time.Now(), ev)
	}
}

func (x *roundExec) do(ctx context.Context, act round.Action) {
	c, a := x.c, x.a
	switch act := act.(type) {
	case round.SendTask:
		if err := x.sendTask(act.Site, act.Site); err != nil {
			x.sendFailed(act.Site, err)
		}
	case round.SetTimer:
		x.timer.Reset(time.Until(act.At))
	case round.Aggregate:
		up := x.updates[act.Site]
		if up == nil || (up.weights == nil && up.spill == nil) { // folded already
			x.queue = append(x.queue, round.UpdateRejected{Site: act.Site, Reason: "update vanished before aggregation"})
			return
		}
		stop := c.meterAggregation(ctx)
		kept, err := x.fold(up, act.NumSamples)
		x.account(stop())
		if err != nil {
			x.queue = append(x.queue, round.UpdateRejected{Site: act.Site, Reason: err.Error()})
			return
		}
		// Folded: the aggregate holds what it needs (a robust rule, its
		// own copy; a file it reads again, kept until the round ends), so
		// the update's weights go now, not when the round ends or the
		// upload's call returns.
		up.weights = nil
		if kept {
			x.held = append(x.held, up.spill)
		} else {
			up.discard()
		}
		up.spill = nil
		x.bytesReceived += up.bytes
		x.added = append(x.added, act.Site)
		x.siteReported(act.Site, up)
		if reply, ok := x.replies[act.Site]; ok {
			reply <- nil
			delete(x.replies, act.Site)
		}
		x.queue = append(x.queue, round.UpdateAggregated{Site: act.Site})
	case round.CancelTask:
		if t, ok := x.tasks[act.Site]; ok {
			_ = c.sendTo(t.site, &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Cancel{Cancel: &pb.CancelTask{TaskId: t.id, Reason: act.Reason}}})
		}
	case round.RecordSite:
		if act.Status == round.StatusOK {
			return
		}
		if reply, ok := x.replies[act.Site]; ok {
			reply <- fmt.Errorf("%s: %s", act.Status, act.Reason)
			delete(x.replies, act.Site)
		}
		x.discard(act.Site)
		msg := fmt.Sprintf("%s round %d: site %s %s: %s", a.arm.Name, x.r, act.Site, act.Status, act.Reason)
		c.log.Warn("site_not_counted", "job", a.j.id, "arm", a.arm.Name, "round", x.r, "site", act.Site, "status", act.Status.String(), "reason", act.Reason)
		a.j.emit(&pb.JobEvent{Kind: "site_failed", Arm: a.arm.Name, Round: int32(x.r), Site: act.Site, Message: msg}, nil)
		ev := UpdateRefused{Arm: a.arm.Name, Round: x.r, Site: act.Site, Status: act.Status.String(), Reason: act.Reason}
		if n, ok := x.notes[act.Site]; ok {
			ev.Screened, ev.Norm = n.decision, n.norm
		}
		a.rec.publish(ev)
	case round.Ignored:
		c.log.Warn("round_ignored_event", "job", a.j.id, "arm", a.arm.Name, "round", x.r, "site", act.Site, "reason", act.Reason)
	case round.Commit:
		stop := c.meterAggregation(ctx)
		result := x.agg.Result
		if f, ok := x.agg.(aggregators.Finisher); ok {
			result = f.Finish // the round ends here: its sum may become the next model
		}
		next, metrics, err := result()
		x.account(stop())
		if err != nil {
			// Nothing usable came out of the aggregate: fail the round.
			x.queue = append(x.queue, round.Cancel{Reason: "aggregation failed: " + err.Error()})
			return
		}
		x.next, x.serverMetrics, x.commit = next, metrics, &act
		if sr, ok := x.agg.(aggregators.StatefulRound); ok {
			x.nextState = sr.NextState()
		}
		if wr, ok := x.agg.(aggregators.WeightReporter); ok {
			x.weights = wr.Weights()
		}
	case round.Fail:
		c.log.Warn("round_failed", "job", a.j.id, "arm", a.arm.Name, "round", x.r, "err", act.Err)
	}
}

// fold adds an update to the round's aggregate: a spilled one read from
// its file chunk by chunk where the strategy can fold a stream (and kept
// as its file where the weight cap holds it back: kept), decoded at this
// moment where it cannot.
func (x *roundExec) fold(up *receivedUpdate, n int64) (kept bool, err error) {
	if up.spill == nil {
		return false, x.agg.Add(up.weights, n)
	}
	if bh, ok := x.agg.(aggregators.BlockHolder); ok {
		// A robust rule keeps every update: as its file, read a block of
		// coordinates at a time at Result.
		return true, bh.HoldBlocks(up.spill.openBlocks, n)
	}
	if sh, ok := x.agg.(aggregators.StreamHolder); ok {
		kept, err := sh.HoldStream(up.spill.open, n)
		if !errors.Is(err, aggregators.ErrNoStream) {
			return kept, err
		}
	} else if sa, ok := x.agg.(aggregators.StreamAdder); ok {
		err := sa.AddStream(up.spill.open, n)
		if !errors.Is(err, aggregators.ErrNoStream) {
			return false, err
		}
	}
	w, err := up.spill.decode()
	if err != nil {
		return false, err
	}
	if oa, ok := x.agg.(aggregators.OwnedAdder); ok {
		// Nothing else holds w: a round that must keep it keeps it
		// rather than a copy.
		return false, oa.AddOwned(w, n)
	}
	return false, x.agg.Add(w, n)
}

func (c *Coordinator) meterAggregation(ctx context.Context) func() (float64, string) {
	if c.deps.Meter == nil {
		return func() (float64, string) { return 0, "" }
	}
	return c.deps.Meter.Measure(ctx)
}

// account adds the coordinator's own energy to the round.
func (x *roundExec) account(joules float64, method string) {
	x.energy.addCoordinator(purposeTrain, joules, method)
}

// siteEnergyReports are the reports of one site's task: its training and
// its evaluation of the model it received.
type siteEnergyReports struct {
	train, eval *pb.EnergyReport
}

// holdEnergy keeps the report a failed or refused task came with, until
// the round decides what it counts as.
func (x *roundExec) holdEnergy(site string, r *pb.EnergyReport) {
	if r == nil {
		return
	}
	p := x.pending[site]
	p.train = r
	x.pending[site] = p
}

// discard counts a site's held reports as wasted.
func (x *roundExec) discard(site string) {
	p, ok := x.pending[site]
	if !ok {
		return
	}
	delete(x.pending, site)
	if p.train != nil {
		x.energy.addReport(purposeWasted, p.train)
	}
	if p.eval != nil {
		x.energy.addReport(purposeWasted, p.eval)
	}
}

// discardPending counts every report still held as wasted.
func (x *roundExec) discardPending() {
	for site := range x.pending {
		x.discard(site)
	}
}

// withClientSettings writes the settings the strategy has the sites
// train with into a task's train parameters, and returns p. It is the
// writer of what sites read with [aggregators.ReadClientSettings].
func withClientSettings(p *pb.TrainParams, cs aggregators.ClientSettings) *pb.TrainParams {
	p.Mu = cs.Mu
	return p
}

// sendTask sends site the task of the round's slot, site's own or (in a
// virtual-clients round) the slice of a worker that failed.
func (x *roundExec) sendTask(site, slot string) error {
	c, a := x.c, x.a
	spec := a.j.spec
	tp := spec.ArmTrain(a.arm)
	epochs, lr := tp.Epochs, tp.RoundLR(x.r)
	if a.kind == pb.TaskKind_TASK_KIND_CENTRALIZED_TRAIN {
		epochs, lr = 1, tp.EpochLR(x.r) // a centralized round is one epoch
	}
	t := &pendingTask{id: newID(), site: site, box: x.rr, global: x.stored, job: a.j.id, arm: a.arm.Name, round: int32(x.r)}
	x.tasks[slot] = t
	c.addTask(t)
	task := &pb.Task{
		TaskId: t.id, JobId: a.j.id, Arm: a.arm.Name, Round: int32(x.r), Kind: a.kind,
		Model: a.prep.Spec,
		Train: withClientSettings(&pb.TrainParams{
			Epochs: int32(epochs), BatchSize: int32(tp.BatchSize), Lr: lr, Momentum: tp.Momentum,
			WeightDecay: tp.WeightDecay, Seed: spec.Seed*1_000_003 + int64(x.r),
		}, aggregators.ClientParams(a.strategy)),
		Dataset:          spec.Data.Dataset,
		DeadlineUnixMs:   x.started.Add(spec.Deadline.Round).UnixMilli(),
		EvaluateGlobal:   a.kind == pb.TaskKind_TASK_KIND_TRAIN && spec.Sites.Virtual == 0, // workers of virtual clients hold no test split of their own
		EnergyIntervalMs: spec.Energy.Interval.Milliseconds(),
		CpuWattsPerCore:  spec.Energy.CPUWattsPerCore,
		Virtual:          x.virtualClients(slot),
	}
	x.stored.taskModel(task)
	if err := c.sendTo(site, &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Task{Task: task}}); err != nil {
		return err
	}
	x.rr.addBytesSent(int64(len(task.ModelData))) // as FetchModel counts what it sends
	return nil
}
