package server

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/round"
	"github.com/cohortfl/cohort/tracking"
)

type evKind int

const (
	evUpdate evKind = iota
	evRejected
	evFailed
	evDisconnected
	evResult
)

// roundEvent is what the gRPC handlers tell a running round.
type roundEvent struct {
	kind   evKind
	site   string
	taskID string
	reason string
	update *receivedUpdate
	reply  chan error // for evUpdate: nil when accepted
	// For evResult: what a task that returns no weights reported.
	metrics map[string]float64
	// energy is what the site measured of a task that reported a result,
	// failed, or whose update was refused before it reached the round.
	energy *pb.EnergyReport
}

// roundRun is the mailbox of one running round, or of one task run on its
// own (runSiteTask).
type roundRun struct {
	events    chan roundEvent
	closed    chan struct{}
	bytesSent atomic.Int64
	onProg    func(site string, p *pb.TaskProgress)
	late      *lateEnergy // the arm's: reports of tasks whose round closed
}

func newRoundRun(onProg func(string, *pb.TaskProgress), late *lateEnergy) *roundRun {
	return &roundRun{events: make(chan roundEvent), closed: make(chan struct{}), onProg: onProg, late: late}
}

// deliver hands an event to the round; false when the round has closed,
// in which case the energy the event reports is kept for the arm's next
// round, as wasted work.
func (r *roundRun) deliver(ev roundEvent) bool {
	select {
	case r.events <- ev:
		return true
	case <-r.closed:
		if ev.update != nil {
			r.late.add(ev.update.energy)
			r.late.add(ev.update.evalEnergy)
		} else {
			r.late.add(ev.energy)
		}
		return false
	}
}

func (r *roundRun) addBytesSent(n int64) { r.bytesSent.Add(n) }

func (r *roundRun) progress(site string, p *pb.TaskProgress) {
	if r.onProg != nil {
		r.onProg(site, p)
	}
}

// armRun is the state of one arm of a running job.
type armRun struct {
	j    *jobRun
	rec  *recorder
	arm  job.Arm
	prep *Prepared
	// runID and siteRuns are the arm's tracking runs known when it
	// resumed after a failover (the recorder owns the runs).
	runID    string
	strategy aggregators.Strategy
	kind     pb.TaskKind
	// global is the arm's global model in memory; nil where file reads
	// it from the blob store instead (globalfile.go). inMemory says the
	// strategy turned out to need it whole: it stays in memory.
	global   *model.Weights
	file     *globalFile
	inMemory bool
	siteRuns map[string]string
	// resumed are what resumeArm found to record (a failover, a round to
	// backfill), published once the arm's runs are known.
	resumed []Event
	// attempt is the number of the current attempt at the round (a
	// retried round runs again).
	attempt int

	started       time.Time
	energyJ       float64 // cumulative, measured where every site measured
	co2Grams      float64 // cumulative
	measuredAny   bool
	bytesSent     int64
	bytesReceived int64
	lastAcc       float64
	// lastFedAcc is the last round's federated accuracy (the sites'
	// evaluation of the model they received), when hasFedAcc.
	lastFedAcc float64
	hasFedAcc  bool

	// carry is the energy of failed attempts at a round, counted (as
	// wasted) by the next attempt; late collects reports that arrive after
	// their round closed; closedTasks are the last closed round's tasks,
	// whose ids the coordinator keeps so that those reports find the arm.
	carry       energyTally
	late        lateEnergy
	closedTasks []string
	// prevNorms are the delta norms of the last committed round's
	// updates: the adaptive screening bound's reference early in a round.
	prevNorms []float64
	// seed is the arm's secret seed of randomized aggregation (DP-FedAvg's
	// noise): drawn on each coordinator that runs the arm, never logged.
	seed uint64
	// capWarned are the sites whose capped sample count was logged at WARN.
	capWarned map[string]bool
}

// noiseSeed draws a secret seed; whoever knows the seed could subtract
// DP-FedAvg's noise, so it is neither logged nor derived from the job.
func noiseSeed() uint64 {
	var b [8]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return binary.LittleEndian.Uint64(b[:])
}

func (c *Coordinator) runJob(ctx context.Context, j *jobRun) error {
	spec := j.spec
	prep, err := c.deps.Models.Prepare(ctx, spec)
	if err != nil {
		return fmt.Errorf("preparing the model: %w", err)
	}
	if prep.Initial == nil && prep.InitSite == "" {
		return errors.New("preparing the model: no initial weights; set model.init: {site: NAME} or model.init: {weights: FILE}")
	}
	if prep.Initial != nil {
		// The arms take the initial weights from j.initial, and the last
		// arm drops them: the prepared copy would otherwise hold a model
		// besides the global one for the whole job.
		j.initial = prep.Initial
		p := *prep
		p.Initial = nil
		prep = &p
	}
	if prep.EvalSite != "" {
		p := *prep
		p.Evaluator = &siteEvaluator{c: c, j: j, site: prep.EvalSite, spec: prep.Spec}
		prep = &p
	}
	tr, closeTracker, err := c.openTracker(ctx, spec)
	if err != nil {
		return err
	}
	j.tracker = tr
	if id := j.runIDs.Job; id != "" {
		// A job resumes into the runs it started: a coordinator that
		// cannot see them would scatter the job over two stores.
		if _, err := tr.GetRun(ctx, id); err != nil {
			closeTracker()
			return fmt.Errorf("resuming on coordinator %s: the job's tracking run %s is not in this coordinator's tracking store (%v); the coordinators of a cluster must share one tracking store: an MLflow server (tracking: {uri: \"http://…\"}) or one SQLite file", c.rep.ID(), id, err)
		}
	}
	rec := c.newRecorder(ctx, j, tr, closeTracker)
	started := JobStarted{Experiment: spec.Tracking.Experiment, Resumed: j.runIDs}
	if started.Resumed.Job == "" {
		started.Params = spec.Flatten()
	} else {
		started.Coordinator = c.rep.ID()
	}
	if c.deps.Idle != nil {
		w, err := c.deps.Idle.IdleWatts(ctx, IdleWindow)
		switch {
		case err != nil:
			c.log.Warn("idle_power_unavailable", "job", j.id, "err", err)
		case w > 0:
			j.idleWatts = w
			started.IdleWatts = w
		}
	}
	rec.publish(started)
	runErr := func() error {
		for _, arm := range spec.Arms {
			if err := c.runArm(ctx, j, rec, prep, arm); err != nil {
				return fmt.Errorf("arm %s: %w", arm.Name, err)
			}
		}
		return nil
	}()
	rec.publish(JobFinished{Err: runErr, Cancelled: ctx.Err() != nil, Interrupted: c.interrupted(ctx, j, runErr)})
	// The job's end is recorded before it is reported: `cohort run` reads
	// the comparison back once the job has ended.
	rec.finish(c.cfg.RecordDrain)
	return runErr
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func (c *Coordinator) runArm(ctx context.Context, j *jobRun, rec *recorder, prep *Prepared, arm job.Arm) error {
	spec := j.spec
	a := &armRun{
		j: j, rec: rec, arm: arm, prep: prep,
		siteRuns:  make(map[string]string),
		started:   time.Now(),
		capWarned: make(map[string]bool),
	}
	kindTag := tracking.KindFederated
	rounds := spec.Rounds
	params := map[string]string{"arm": arm.Name}
	strategyName := "fedavg"
	sp := map[string]float64{}
	if arm.Centralized != nil {
		kindTag = tracking.KindCentralized
		rounds = arm.Centralized.Epochs
		a.kind = pb.TaskKind_TASK_KIND_CENTRALIZED_TRAIN
		params["epochs"] = strconv.Itoa(rounds)
	} else {
		a.kind = pb.TaskKind_TASK_KIND_TRAIN
		st := arm.Strategy
		strategyName = st.Name
		all := map[string]float64{aggregators.ParamMu: st.Mu, "server_lr": st.ServerLR, "beta": st.Beta, "f": float64(st.F), "m": float64(st.M),
			"eta": st.ServerOpt.Eta, "beta1": st.ServerOpt.Beta1, "beta2": st.ServerOpt.Beta2, "tau": st.ServerOpt.Tau,
			"momentum": st.ServerOpt.Momentum, "max_weight_fraction": st.MaxWeightFraction}
		if st.DP != nil {
			all["dp_clip"], all["dp_noise"] = st.DP.Clip, st.DP.NoiseMultiplier
		}
		for _, k := range aggregators.Params(strategyName) { // what this strategy takes
			sp[k] = all[k]
		}
		params["strategy"] = strategyName
		for _, k := range []string{"beta", "f", "m"} {
			if _, ok := sp[k]; ok {
				params[k] = strconv.FormatFloat(sp[k], 'g', -1, 64)
			}
		}
		params["rounds"] = strconv.Itoa(rounds)
	}
	st, err := aggregators.New(strategyName, sp)
	if err != nil {
		return err
	}
	if a.kind == pb.TaskKind_TASK_KIND_TRAIN {
		for k, v := range aggregators.ClientParams(st).Params() { // what the sites train with
			params[k] = strconv.FormatFloat(v, 'g', -1, 64)
		}
	}
	a.strategy = st
	a.seed = noiseSeed()
	defer func() { a.file.close() }() // a global model read in place
	last, err := c.resumeArm(ctx, a)
	if err != nil {
		return err
	}
	tr := spec.ArmTrain(arm)
	params["train.epochs"], params["train.batch_size"] = strconv.Itoa(tr.Epochs), strconv.Itoa(tr.BatchSize)
	params["train.lr"], params["train.momentum"] = strconv.FormatFloat(tr.LR, 'g', -1, 64), strconv.FormatFloat(tr.Momentum, 'g', -1, 64)
	// The arm's runs (those of a resumed arm, or new ones) come first;
	// what resumeArm found to record follows.
	rec.publish(ArmStarted{Arm: arm.Name, Kind: kindTag, Rounds: rounds, Params: params, EvalMethod: prep.evalMethod(),
		RunID: a.runID, SiteRuns: a.siteRuns})
	for _, ev := range a.resumed {
		rec.publish(ev)
	}
	a.resumed = nil
	if a.runID != "" && last >= rounds {
		// The arm ended before the failover; its runs may still be open.
		return c.endArm(ctx, a, nil)
	}
	if a.global == nil && a.file == nil { // no committed round to resume from
		init, err := c.initialModel(ctx, j, prep)
		if err != nil {
			return err
		}
		// Shared, not copied: a global model is never changed in place
		// (each round's aggregate is a new one).
		a.global = init
		if arm.Name == spec.Arms[len(spec.Arms)-1].Name {
			j.dropInitial() // the last arm: nothing else starts from it
		}
	}
	j.emit(&pb.JobEvent{Kind: "arm_started", Arm: arm.Name, Rounds: int32(rounds), Message: kindTag,
		Metrics: map[string]float64{MetricCentralized: b2f(arm.Centralized != nil)}}, func(info *pb.Job) {
		info.Arm, info.Round, info.Rounds = arm.Name, int32(last), int32(rounds)
		info.NoTestSet = prep.Evaluator == nil
	})
	defer func() { c.forgetClosed(a.closedTasks) }()
	if last == 0 && prep.Evaluator != nil {
		// Step 0: the initial model, so every curve starts at the same point.
		if ev, err := c.evaluate(ctx, a, &a.carry); err == nil {
			rec.publish(Evaluated{Arm: arm.Name, Step: 0, Accuracy: ev.Accuracy, Loss: ev.Loss, Evaluator: true})
		}
	}
	if last == 0 {
		if err := c.putInitial(ctx, a); err != nil {
			return err
		}
	}
	var armErr error
	retries := spec.Deadline.Retries
	a.attempt = 1
	for r := last + 1; r <= rounds; r++ {
		// The tracker catches up to a round's events before the next
		// round adds its own (see recorder.catchUp).
		if waited := rec.catchUp(ctx, rec.roundBacklog(), c.cfg.RecordDrain); waited >= time.Second {
			c.log.Info("round_waited_for_tracking", "job", j.id, "arm", arm.Name, "round", r, "waited", waited.Round(time.Millisecond),
				"why", "the tracker was more than a round's events behind; it catches up before the next round adds its own")
		}
		err := c.runRound(ctx, a, r, rounds)
		retry := err != nil && retries > 0 && ctx.Err() == nil && retryable(err)
		if err != nil {
			rec.publish(RoundFailed{Arm: arm.Name, Round: r, Err: err.Error(), Retry: retry})
		}
		if retry {
			retries--
			a.attempt++
			msg := fmt.Sprintf("%s round %d runs again (%d retries left): %v", arm.Name, r, retries, err)
			c.log.Warn("round_retry", "job", j.id, "arm", arm.Name, "round", r, "retries_left", retries, "err", err)
			j.emit(&pb.JobEvent{Kind: "round_retry", Arm: arm.Name, Round: int32(r), Rounds: int32(rounds), Message: msg}, nil)
			r--
			continue
		}
		if err != nil {
			armErr = err // round errors name their round
			break
		}
		a.attempt = 1
	}
	if c.interrupted(ctx, j, armErr) {
		return armErr // the runs stay open for the next leader
	}
	return c.endArm(ctx, a, armErr)
}

// Flags in the metrics of job events, for `cohort watch` and `logs`,
// which print from the events' fields and never parse their message.
const (
	// MetricCentralized is 1 in an arm_started event's metrics when the
	// arm is centralized: its rounds are epochs.
	MetricCentralized = "centralized"
	// MetricResumed is 1 in a job_queued event's metrics when the job
	// resumes on a new leader after a failover.
	MetricResumed = "resumed"
)

// b2f is 1 for true, 0 for false.
func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// endArm ends an arm's runs with the arm's outcome.
func (c *Coordinator) endArm(ctx context.Context, a *armRun, armErr error) error {
	j := a.j
	status := tracking.StatusFinished
	if armErr != nil {
		status = tracking.StatusFailed
		if ctx.Err() != nil {
			status = tracking.StatusKilled
		}
	}
	strategy := tracking.KindCentralized
	if a.arm.Strategy != nil {
		strategy = a.arm.Strategy.Name
	}
	final := a.global
	if a.file != nil && j.spec.Register != nil { // only registration reads it
		var err error
		if final, err = a.file.load(); err != nil {
			c.log.Error("final_model_unreadable", "job", j.id, "arm", a.arm.Name, "err", err)
		}
	}
	a.rec.publish(ArmFinished{Arm: a.arm.Name, Status: status, Err: armErr, MeasuredAny: a.measuredAny,
		Final: final, Spec: a.prep.Spec, Strategy: strategy})
	// test_accuracy only where the coordinator evaluates (its test set or
	// an eval site): without one, the arm has no test accuracy, not 0.
	done := map[string]float64{tracking.MetricWallSeconds: time.Since(a.started).Seconds()}
	if a.prep.Evaluator != nil {
		done[tracking.MetricTestAccuracy] = a.lastAcc
	}
	if a.hasFedAcc {
		done[tracking.MetricFederatedAccuracy] = a.lastFedAcc
	}
	j.emit(&pb.JobEvent{Kind: "arm_finished", Arm: a.arm.Name, Metrics: done}, nil)
	return armErr
}

// candidates returns the sites a round may select. The first round of an
// arm waits for every site of the job (up to SiteWait, then settles for
// min_per_round); later rounds take whoever of them is connected, as long
// as that is at least min_per_round.
func (c *Coordinator) candidates(ctx context.Context, a *armRun, first bool) ([]string, error) {
	spec := a.j.spec
	centralized := a.kind == pb.TaskKind_TASK_KIND_CENTRALIZED_TRAIN
	need, want := spec.Sites.MinPerRound, spec.Sites.Count
	named := ""
	if centralized {
		need, want = 1, 1
		named = a.arm.Centralized.Site
	}
	if !first {
		want = need
	}
	deadline := time.NewTimer(c.cfg.SiteWait)
	defer deadline.Stop()
	var logged time.Time
	for {
		names, caps, changed := c.connected()
		cands := eligible(spec, names, caps, centralized, named)
		if len(cands) >= want {
			return cands, nil
		}
		if time.Since(logged) > 10*time.Second {
			logged = time.Now()
			msg := fmt.Sprintf("waiting for sites: %d of %d connected", len(cands), want)
			switch {
			case named != "":
				msg = fmt.Sprintf("waiting for site %s, which trains arm %s (centralized.site)", named, a.arm.Name)
			case centralized:
				msg = "waiting for a site that holds the pooled data (trainer capability " + pb.PooledDataTrainer + ")"
			}
			a.j.emit(&pb.JobEvent{Kind: "waiting", Arm: a.arm.Name, Message: msg}, nil)
			c.log.Info("waiting_for_sites", "job", a.j.id, "connected", len(cands), "want", want)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			if len(cands) >= need {
				return cands, nil
			}
			if named != "" {
				return nil, fmt.Errorf("site %q, named by arm %s's centralized.site, did not connect within %s; start it or name a site that is up", named, a.arm.Name, c.cfg.SiteWait)
			}
			return nil, fmt.Errorf("only %d of the %d sites needed connected within %s; start the missing sites or lower sites.min_per_round", len(cands), need, c.cfg.SiteWait)
		case <-changed:
		}
	}
}

// eligible picks, from the connected sites, those a job's arm may use: the
// job's named sites (or any, up to sites.count) for a federated arm; for a
// centralized arm the site it names (named) or else one site holding the
// pooled data.
func eligible(spec *job.Spec, names []string, caps map[string]*pb.Capabilities, centralized bool, named string) []string {
	if centralized && named != "" {
		if slices.Contains(names, named) {
			return []string{named}
		}
		return nil
	}
	var out []string
	want := make(map[string]bool, len(spec.Sites.Names))
	for _, n := range spec.Sites.Names {
		want[n] = true
	}
	for _, n := range names {
		pooled := slices.Contains(caps[n].GetTrainers(), pb.PooledDataTrainer)
		switch {
		case centralized && pooled:
			return []string{n}
		case centralized || pooled:
		case len(want) == 0 || want[n]:
			out = append(out, n)
		}
	}
	if len(out) > spec.Sites.Count {
		out = out[:spec.Sites.Count]
	}
	return out
}

// retryable reports whether a round failed for want of updates (sites
// that dropped out or missed the deadline), which deadline.retries covers.
func retryable(err error) bool {
	return errors.Is(err, round.ErrQuorumUnreachable) || errors.Is(err, round.ErrDeadlineExceeded)
}
