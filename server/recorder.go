package server

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"maps"
	"math"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/plot"
)

// Defaults of the recorder's bounds (Config.RecordQueue, Config.RecordDrain).
const (
	// DefaultRecordQueue is how many round events may wait for the tracker.
	DefaultRecordQueue = 4096
	// DefaultRecordDrain is how long a job that ended waits for its
	// recorder to write what is queued, while it writes nothing.
	DefaultRecordDrain = 30 * time.Second
)

// maxRecordBytes bounds the memory of a job's waiting round events (as
// eventBytes estimates it), beside their number (recordQueue): a stalled
// tracker under a job of many sites holds no more than this.
const maxRecordBytes = 256 << 20

// maxDrains bounds a job's wait for its recorder at its end: while the
// recorder goes on writing, the wait goes on, up to this many
// Config.RecordDrain periods.
const maxDrains = 10

// Tags about the recording itself, on the job run.
const (
	// TagEventsDropped counts the round events the recorder dropped
	// because the tracker fell behind (its queue was full).
	TagEventsDropped = "cohort.tracking_events_dropped"
	// TagFailovers counts the failovers (and restarts) a run continued
	// through; [TagFailover] describes the last one.
	TagFailovers = "cohort.failovers"
)

// cancelWait bounds how long finish waits, once it cancelled the
// recorder, for the tracker's call in flight to return.
const cancelWait = 5 * time.Second

// maxLoggedFailures bounds the tracking failures a recorder logs one by
// one; past it they are only counted, and the count logged at the end.
const maxLoggedFailures = 10

// recorder subscribes to a job's [Event]s and writes them into the job's
// tracker: the runs (job, arms, sites), params, metrics, tags, artifacts,
// the comparison at the end and the model registry.
//
// Tracking never blocks a round, and a stalled tracker never holds one
// back. The recorder runs on its own goroutine, fed by a queue that
// publish appends to without waiting:
//   - events that create or end runs (JobStarted, ArmStarted, ArmResumed,
//     ArmFinished, JobFinished: a few per arm) are always queued;
//   - any other event finds at most Config.RecordQueue events waiting, or
//     two rounds' worth where that is more ([recordQueue]), and at most
//     maxRecordBytes of them, besides the batch being written; over that
//     it is dropped, counted,
//     a warning is logged at the first drop, and the count is logged and
//     tagged on the job run ([TagEventsDropped]) when the job ends;
//   - before each round, the arm waits while more than a round's events
//     are queued and the tracker keeps writing them (catchUp): a tracker
//     slower than the rounds holds the next round back instead of losing
//     events, one that writes nothing for Config.RecordDrain does not.
//
// When the job ends, the runner waits for the queue to drain, until a
// Config.RecordDrain passes in which the recorder handled no event and
// wrote no batch (or maxDrains of them in all); then the recorder's
// context is cancelled, what is still queued is dropped (and counted),
// and the tracker is closed once its last call returns.
type recorder struct {
	c       *Coordinator
	j       *jobRun
	tr      Tracker
	closeTr func()
	log     *slog.Logger
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	wake    chan struct{}

	mu        sync.Mutex
	queue     []Event
	droppable int // events of queue that may be dropped
	bytes     int // their estimated memory (eventBytes)
	max       int
	dropped   int
	closed    bool
	// progress counts the events the recorder has handled and the
	// batches it has written: finish and catchUp wait on while it grows.
	progress atomic.Int64
	// backlog counts the events queued and not yet handled (nor dropped),
	// those the recorder holds included.
	backlog atomic.Int64

	// Owned by the recorder's goroutine.
	expID, jobRunID string
	arms            map[string]*armRecord
	failures        int
	// pending are the batches logBatch deferred: a round's per-site
	// writes, flushed together (see flush); deferring is set while a
	// deferrable event is handled.
	pending   []tracking.RunBatch
	deferring bool
	// ahead are the events queued after the one being handled: siteRun
	// creates the runs of the sites they name with the one it needs.
	ahead []Event
	// tagged says the job run was tagged with the dropped events' count
	// ([TagEventsDropped]); finish reads it once the recorder is done.
	tagged bool
}

// maxPending bounds the batches the recorder defers before it flushes.
const maxPending = 4096

// armRecord is what the recorder knows of an arm.
type armRecord struct {
	name     string
	runID    string
	siteRuns map[string]string
	inputs   map[string]bool   // site and dataset digests logged as inputs
	digests  map[string]string // each site's dataset digest, for the registered model's lineage
	// The current attempt: its round and number, the sites it aggregated
	// (credited when the round closes, discarded when it fails), and the
	// status tags the round's earlier attempts set (updated when a later
	// attempt counts the site).
	round    int
	attempt  int
	accepted []string
	statused map[string]string
}

// newRecorder starts the recorder of job j writing into tr; closeTr (may
// be nil) is called once it has stopped using tr.
func (c *Coordinator) newRecorder(ctx context.Context, j *jobRun, tr Tracker, closeTr func()) *recorder {
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &recorder{
		c: c, j: j, tr: tr, closeTr: closeTr, log: c.log.With("job", j.id),
		ctx: rctx, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{}, 1),
		max: recordQueue(c.cfg.RecordQueue, j.spec), arms: make(map[string]*armRecord),
	}
	go r.run()
	return r
}

// recordQueue is the bound on a job's waiting round events: queue, or two
// rounds' events where that is more. A round publishes up to two events a
// site it selects (its screening, its update's fate) and three of its own;
// at 10,000 sites one round's burst is 20,000 events, which the default
// bound (4,096) would mostly drop while a healthy tracker is a few seconds
// behind. A job's arms run one after another (the runner's loop), and each
// round waits for the backlog to fall to one round's (catchUp): two rounds
// of one arm bound it whatever the number of arms.
func recordQueue(queue int, spec *job.Spec) int {
	return max(queue, 2*(2*spec.Sites.PerRound()+3))
}

// publish queues ev for the tracker; it never waits (see [recorder]).
func (r *recorder) publish(ev Event) {
	if r == nil {
		return
	}
	droppable, size := !control(ev), 0
	if droppable {
		size = eventBytes(ev) // a round's close maps every site: not under the lock
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		r.dropped++
		return
	}
	if droppable {
		if r.droppable >= r.max || r.bytes+size > maxRecordBytes {
			r.dropped++
			if r.dropped == 1 {
				r.log.Warn("tracking_events_dropped", "queue", r.max, "queued_bytes", r.bytes,
					"effect", "the tracker is behind: round events are dropped (counted, and tagged "+TagEventsDropped+" on the job run); rounds go on",
					"fix", "check the tracking server's health and latency")
			}
			return
		}
		r.droppable++
		r.bytes += size
	}
	r.queue = append(r.queue, ev)
	r.backlog.Add(1)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// finish closes the queue and waits for the recorder to write what it
// holds, as long as each drain period sees it handle an event or write a
// batch, up to maxDrains periods; past that it cancels the recorder's
// calls. It then tells the job's watchers what was not recorded.
func (r *recorder) finish(drain time.Duration) {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
	stopped := func() bool {
		select {
		case <-r.done:
			return true
		default:
			return false
		}
	}
	drained, waited := r.whileWriting(context.Background(), stopped, drain, maxDrains*drain)
	if !drained {
		r.log.Warn("tracking_drain_timeout", "waited", waited, "queued", r.backlog.Load(),
			"effect", "the job's end is not fully recorded; what is still queued is dropped")
		r.cancel()
		t := time.NewTimer(cancelWait)
		defer t.Stop()
		select {
		case <-r.done:
		case <-t.C: // the tracker ignores cancellation; it is closed when its call returns
		}
	}
	r.tellDropped(drained, waited)
}

// tellDropped tells the job's watchers (the tracking_incomplete event)
// how many events were not recorded: those past the queue while the job
// ran (also tagged on the job run, [TagEventsDropped]) and, when the drain
// timed out after waited, those still queued, the job's end among them.
func (r *recorder) tellDropped(drained bool, waited time.Duration) {
	n := r.droppedCount()
	var msg string
	switch {
	case !drained:
		msg = fmt.Sprintf("the tracker stopped writing before the job's end was recorded (waited %s): %d events were not recorded, among them the job's end, so its runs may still show RUNNING; check the tracking server's health and latency",
			waited.Round(time.Millisecond), n)
	case n > 0:
		where := ""
		if r.tagged { // the recorder is done: drained
			where = fmt.Sprintf(" (tag %s on the job run)", TagEventsDropped)
		}
		msg = fmt.Sprintf("the tracker fell behind and %d round events were not recorded%s; check the tracking server's health and latency",
			n, where)
	default:
		return
	}
	r.j.emit(&pb.JobEvent{Kind: "tracking_incomplete", Message: msg}, nil)
}

// catchUp waits, before a round starts, while more than below events
// wait for the tracker and it keeps writing them: a tracker that is
// slower than the rounds (10,000 sites a round, every one in seconds)
// then holds the next round back instead of losing its events past the
// queue. It returns once the backlog is at most below, when stall
// passes without the recorder handling an event or writing a batch (a
// stalled or dead tracker never holds rounds up: its events are dropped
// as before), or when ctx ends; it says how long it waited.
func (r *recorder) catchUp(ctx context.Context, below int64, stall time.Duration) time.Duration {
	if r == nil {
		return 0
	}
	_, waited := r.whileWriting(ctx, func() bool { return r.backlog.Load() <= below }, stall, 0)
	return waited
}

// whileWriting waits until ready holds, as long as the recorder handles
// an event or writes a batch within every stall period; it also returns
// when ctx ends, when the recorder stops, or after limit (0: no limit).
// It says whether ready held and how long it waited. It polls, so that
// any number of waiters see ready come (a job's arms run one after
// another today: one catchUp waits at a time, beside finish).
func (r *recorder) whileWriting(ctx context.Context, ready func() bool, stall, limit time.Duration) (bool, time.Duration) {
	if ready() {
		return true, 0
	}
	began := time.Now()
	poll := time.NewTicker(catchUpPoll)
	defer poll.Stop()
	last, moved := r.progress.Load(), began
	for {
		select {
		case <-ctx.Done():
			return ready(), time.Since(began)
		case <-r.done:
			return ready(), time.Since(began)
		case now := <-poll.C:
			if ready() {
				return true, now.Sub(began)
			}
			if n := r.progress.Load(); n != last {
				last, moved = n, now
			} else if now.Sub(moved) >= stall {
				return false, now.Sub(began) // stalled
			}
			if limit > 0 && now.Sub(began) >= limit {
				return false, now.Sub(began)
			}
		}
	}
}

// catchUpPoll is how often catchUp and finish look at the recorder.
const catchUpPoll = 20 * time.Millisecond

// roundBacklog is the backlog a round may start with: half the queue's
// bound, one round's events (recordQueue), so that the round's own fit
// beside it.
func (r *recorder) roundBacklog() int64 {
	if r == nil {
		return 0
	}
	return int64(r.max / 2)
}

// droppedCount is how many events were dropped so far.
func (r *recorder) droppedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.dropped
}

func (r *recorder) run() {
	defer close(r.done)
	defer r.cancel()
	defer func() {
		if r.closeTr != nil {
			r.closeTr()
		}
	}()
	defer func() {
		if n := r.droppedCount(); n > 0 {
			r.log.Warn("tracking_events_dropped_total", "dropped", n)
		}
		if r.failures > maxLoggedFailures {
			r.log.Warn("tracking_failures_total", "failures", r.failures)
		}
	}()
	for {
		r.mu.Lock()
		evs, closed := r.queue, r.closed
		r.queue, r.droppable, r.bytes = nil, 0, 0
		r.mu.Unlock()
		if len(evs) == 0 {
			if closed || r.ctx.Err() != nil {
				return
			}
			select {
			case <-r.wake:
			case <-r.ctx.Done():
			}
			continue
		}
		for i, ev := range evs {
			if r.ctx.Err() != nil {
				r.mu.Lock()
				r.dropped += len(evs) - i
				r.mu.Unlock()
				r.backlog.Add(-int64(len(evs) - i))
				break
			}
			r.ahead = evs[i+1:]
			r.handle(ev)
			r.backlog.Add(-1)
			r.progress.Add(1)
		}
		r.ahead = nil
		r.flush()
	}
}

// deferrable reports whether ev's writes may wait in r.pending: the
// round's metric, tag and input writes, which read nothing back. Any other event
// flushes what waits before it is handled, so reads and run ends see every
// write before them.
func deferrable(ev Event) bool {
	switch ev := ev.(type) {
	case RoundStarted, UpdateAccepted, UpdateScreened, UpdateRefused, RoundClosed, RoundFailed:
		return true
	case Evaluated:
		return !ev.Backfill
	}
	return false
}

// flush writes the deferred batches: in one call where the tracker is a
// [BatchLogger], else one LogBatch a run. When the one call fails (a run
// deleted under the recorder, say), each batch is tried on its own, so
// one bad run loses only its own writes.
func (r *recorder) flush() {
	batches := r.pending
	r.pending = r.pending[:0]
	if len(batches) == 0 {
		return
	}
	if bl, ok := r.tr.(BatchLogger); ok && len(batches) > 1 {
		if bl.LogBatches(r.ctx, batches) == nil {
			r.progress.Add(1)
			return
		}
		if r.ctx.Err() != nil {
			r.failed("tracking_log_failed", r.ctx.Err(), "batches", len(batches))
			return
		}
	}
	for _, b := range batches {
		if len(b.Metrics)+len(b.Params)+len(b.Tags) > 0 {
			r.failed("tracking_log_failed", r.tr.LogBatch(r.ctx, b.RunID, b.Metrics, b.Params, b.Tags), "run", b.RunID)
		}
		if il, ok := r.tr.(tracking.InputLogger); ok && len(b.Inputs) > 0 {
			r.failed("tracking_inputs_failed", il.LogInputs(r.ctx, b.RunID, b.Inputs), "run", b.RunID)
		}
		r.progress.Add(1)
	}
}

// failed logs a tracking failure (the first few; then they are counted).
func (r *recorder) failed(what string, err error, attrs ...any) {
	if err == nil {
		return
	}
	r.failures++
	if r.failures <= maxLoggedFailures {
		r.log.Warn(what, append(attrs, "err", err)...)
	}
}

func (r *recorder) handle(ev Event) {
	if r.tr == nil {
		return
	}
	if r.deferring = deferrable(ev); !r.deferring {
		r.flush()
	}
	switch ev := ev.(type) {
	case JobStarted:
		r.jobStarted(ev)
	case ArmStarted:
		r.armStarted(ev)
	case ArmResumed:
		if a := r.arms[ev.Arm]; a != nil {
			r.markFailover(ev.Coordinator, ev.Round, append([]string{a.runID}, slices.Collect(maps.Values(a.siteRuns))...)...)
		}
	case Evaluated:
		r.evaluated(ev)
	case RoundStarted:
		if a := r.arms[ev.Arm]; a != nil {
			if ev.Round != a.round {
				a.statused = make(map[string]string)
			}
			a.round, a.attempt, a.accepted = ev.Round, ev.Attempt, a.accepted[:0]
		}
	case UpdateAccepted:
		r.updateAccepted(ev)
	case UpdateScreened:
		// Recorded with the update's fate (UpdateAccepted, UpdateRefused).
	case UpdateRefused:
		r.updateRefused(ev)
	case RoundClosed:
		r.roundClosed(ev)
	case RoundFailed:
		r.roundFailed(ev)
	case ArmFinished:
		r.armFinished(ev)
	case JobFinished:
		r.jobFinished(ev)
	}
}

// logBatch logs into a run, when the run exists. Within a deferrable
// event it defers the write (to flush, after the events queued with this
// one), flushing when enough wait; else it writes at once.
func (r *recorder) logBatch(runID string, ms []tracking.Metric, ps []tracking.Param, tags []tracking.Tag) {
	if runID == "" || (len(ms) == 0 && len(ps) == 0 && len(tags) == 0) {
		return
	}
	if !r.deferring {
		r.failed("tracking_log_failed", r.tr.LogBatch(r.ctx, runID, ms, ps, tags), "run", runID)
		return
	}
	r.pending = append(r.pending, tracking.RunBatch{RunID: runID, Metrics: ms, Params: ps, Tags: tags})
	if len(r.pending) >= maxPending {
		r.flush()
	}
}

func (r *recorder) jobStarted(ev JobStarted) {
	ctx, j := r.ctx, r.j
	ids := ev.Resumed
	r.expID = ids.Experiment
	if r.expID == "" {
		id, err := r.tr.EnsureExperiment(ctx, ev.Experiment)
		if err != nil {
			r.failed("tracking_experiment_failed", err, "experiment", ev.Experiment)
			return
		}
		r.expID = id
	}
	r.jobRunID = ids.Job
	if r.jobRunID == "" {
		run, err := r.tr.CreateRun(ctx, tracking.CreateRun{
			ExperimentID: r.expID, Name: j.spec.Name, StartTime: time.Now(), UserID: j.user,
			Tags: r.c.sourceTags(j, map[string]string{
				tracking.TagJobID: j.id, tracking.TagKind: "job", tracking.TagCohortVersion: r.c.cfg.Version,
			}),
		})
		if err != nil {
			r.failed("tracking_create_failed", err, "run", "job")
			return
		}
		r.jobRunID = run.Info.RunID
		if err := r.c.saveRunIDs(ctx, j, ha.RunIDs{Experiment: r.expID, Job: r.jobRunID}); err != nil {
			r.log.Warn("run_ids_replication_failed", "err", err)
		}
		r.logParams(r.jobRunID, ev.Params)
	} else {
		// The runner checked that the run is in this store.
		r.markFailover(ev.Coordinator, 0, r.jobRunID)
	}
	if ev.IdleWatts > 0 {
		r.logBatch(r.jobRunID, []tracking.Metric{{Key: tracking.MetricIdlePowerWatts, Value: ev.IdleWatts, Timestamp: time.Now().UnixMilli()}}, nil, nil)
	}
	id, exp := r.jobRunID, r.expID
	j.emit(&pb.JobEvent{Kind: "tracking", Message: "job run " + id}, func(info *pb.Job) {
		info.TrackingRunId, info.ExperimentId = id, exp
	})
}

// logParams logs params in batches of 100 (MLflow's bound).
func (r *recorder) logParams(runID string, flat map[string]string) {
	keys := slices.Sorted(maps.Keys(flat))
	for len(keys) > 0 {
		n := min(100, len(keys))
		ps := make([]tracking.Param, 0, n)
		for _, k := range keys[:n] {
			ps = append(ps, tracking.Param{Key: k, Value: truncate(flat[k], 6000)})
		}
		r.logBatch(runID, nil, ps, nil)
		keys = keys[n:]
	}
}

// markFailover records on runs that they continue on coordinator coord
// (at round round, on arm and site runs): it counts the failovers
// ([TagFailovers]) and describes the last one ([TagFailover]).
func (r *recorder) markFailover(coord string, round int, runIDs ...string) {
	now := time.Now()
	msg := fmt.Sprintf("resumed on coordinator %s at %s", coord, now.UTC().Format(time.RFC3339))
	var ms []tracking.Metric
	if round > 0 {
		msg = fmt.Sprintf("resumed at round %d on coordinator %s at %s: the coordinator that led the job stopped; rounds after the last committed one ran again",
			round, coord, now.UTC().Format(time.RFC3339))
		ms = []tracking.Metric{{Key: MetricFailover, Value: 1, Timestamp: now.UnixMilli(), Step: int64(round)}}
	}
	for _, id := range runIDs {
		if id == "" {
			continue
		}
		n := 0
		if run, err := r.tr.GetRun(r.ctx, id); err == nil {
			if v, ok := run.Data.Tag(TagFailovers); ok {
				n, _ = strconv.Atoi(v)
			}
		}
		r.logBatch(id, ms, nil, []tracking.Tag{{Key: TagFailover, Value: msg}, {Key: TagFailovers, Value: strconv.Itoa(n + 1)}})
	}
}

func (r *recorder) armStarted(ev ArmStarted) {
	j := r.j
	a := &armRecord{
		name: ev.Arm, runID: ev.RunID, siteRuns: maps.Clone(ev.SiteRuns),
		inputs: make(map[string]bool), digests: make(map[string]string), statused: make(map[string]string),
	}
	if a.siteRuns == nil {
		a.siteRuns = make(map[string]string)
	}
	r.arms[ev.Arm] = a
	if a.runID != "" {
		r.adoptSiteRuns(a)
		return
	}
	if r.expID == "" {
		return
	}
	run, err := r.tr.CreateRun(r.ctx, tracking.CreateRun{
		ExperimentID: r.expID, Name: ev.Arm, StartTime: time.Now(), ParentRunID: r.jobRunID, UserID: j.user,
		Tags: r.c.sourceTags(j, map[string]string{tracking.TagJobID: j.id, tracking.TagArm: ev.Arm, tracking.TagKind: ev.Kind, TagEvalMethod: ev.EvalMethod}),
	})
	if err != nil {
		r.failed("tracking_create_failed", err, "arm", ev.Arm)
		return
	}
	a.runID = run.Info.RunID
	if err := r.c.saveRunIDs(r.ctx, j, ha.RunIDs{Arms: map[string]string{ev.Arm: a.runID}}); err != nil {
		r.log.Warn("run_ids_replication_failed", "arm", ev.Arm, "err", err)
	}
	r.logParams(a.runID, ev.Params)
}

// adoptSiteRuns completes a resumed arm's site runs with those the
// tracking store holds under its arm run but the replicated state lacks:
// a leader that created a site's run and lost the lead before the run's
// id committed left it there. Without this the next leader opened a
// second run for the site, and the first kept the rounds before the
// failover apart.
func (r *recorder) adoptSiteRuns(a *armRecord) {
	runs, err := r.tr.ChildRuns(r.ctx, a.runID)
	if err != nil {
		r.failed("tracking_read_failed", err, "arm", a.name)
		return
	}
	adopted := map[string]string{}
	for _, run := range runs {
		site, _ := run.Data.Tag(tracking.TagSite)
		jobID, _ := run.Data.Tag(tracking.TagJobID)
		arm, _ := run.Data.Tag(tracking.TagArm)
		if _, known := a.siteRuns[site]; site == "" || known || jobID != r.j.id || arm != a.name {
			continue
		}
		a.siteRuns[site], adopted[site] = run.Info.RunID, run.Info.RunID
	}
	if len(adopted) == 0 {
		return
	}
	r.log.Info("site_runs_adopted", "arm", a.name, "sites", len(adopted))
	if err := r.c.saveRunIDs(r.ctx, r.j, ha.RunIDs{Sites: map[string]map[string]string{a.name: adopted}}); err != nil {
		r.log.Warn("run_ids_replication_failed", "arm", a.name, "err", err)
	}
}

// siteRun returns the tracking run of a site under an arm, creating it the
// first time the site takes part; "" when it cannot be created. With a
// [RunsCreator] it creates, in the same call, the runs of the other sites
// the queued events (r.ahead) have take part in the arm.
func (r *recorder) siteRun(a *armRecord, site string) string {
	if id, ok := a.siteRuns[site]; ok {
		return id
	}
	if a.runID == "" {
		return ""
	}
	sites := []string{site}
	if _, ok := r.tr.(RunsCreator); ok {
		sites = r.sitesAhead(a, site)
	}
	created, err := r.createSiteRuns(a, sites)
	if err != nil && len(sites) > 1 {
		// One of the others may be the bad one: this site's run alone.
		created, err = r.createSiteRuns(a, []string{site})
	}
	if err != nil {
		r.failed("tracking_create_failed", err, "site", site)
		return ""
	}
	maps.Copy(a.siteRuns, created)
	if err := r.c.saveRunIDs(r.ctx, r.j, ha.RunIDs{Sites: map[string]map[string]string{a.name: created}}); err != nil {
		r.log.Warn("run_ids_replication_failed", "sites", len(created), "err", err)
	}
	return created[site]
}

// sitesAhead is site and the other sites without a run that the queued
// events have take part in arm a, each once.
func (r *recorder) sitesAhead(a *armRecord, site string) []string {
	sites := []string{site}
	seen := map[string]bool{site: true}
	for _, ev := range r.ahead {
		var arm, s string
		switch ev := ev.(type) {
		case UpdateAccepted:
			arm, s = ev.Arm, ev.Site
		case UpdateRefused:
			arm, s = ev.Arm, ev.Site
		default:
			continue
		}
		if _, ok := a.siteRuns[s]; arm != a.name || ok || seen[s] {
			continue
		}
		seen[s] = true
		sites = append(sites, s)
	}
	return sites
}

// createSiteRuns creates the runs of sites under arm a: in one call where
// the tracker is a [RunsCreator] and there are several.
func (r *recorder) createSiteRuns(a *armRecord, sites []string) (map[string]string, error) {
	j := r.j
	now := time.Now()
	reqs := make([]tracking.CreateRun, len(sites))
	for i, site := range sites {
		reqs[i] = tracking.CreateRun{
			ExperimentID: r.expID, Name: a.name + "/" + site, StartTime: now, ParentRunID: a.runID, UserID: j.user,
			Tags: r.c.sourceTags(j, map[string]string{tracking.TagJobID: j.id, tracking.TagArm: a.name, tracking.TagSite: site, tracking.TagKind: "site"}),
		}
	}
	ids := make(map[string]string, len(sites))
	if rc, ok := r.tr.(RunsCreator); ok && len(sites) > 1 {
		runs, err := rc.CreateRuns(r.ctx, reqs)
		if err != nil {
			return nil, err
		}
		for i, run := range runs {
			ids[sites[i]] = run.Info.RunID
		}
		return ids, nil
	}
	for i, req := range reqs {
		run, err := r.tr.CreateRun(r.ctx, req)
		if err != nil {
			return nil, err
		}
		ids[sites[i]] = run.Info.RunID
	}
	return ids, nil
}

func (r *recorder) evaluated(ev Evaluated) {
	a := r.arms[ev.Arm]
	if a == nil || a.runID == "" {
		return
	}
	now := time.Now().UnixMilli()
	var ms []tracking.Metric
	if ev.Evaluator {
		ms = []tracking.Metric{
			{Key: tracking.MetricTestAccuracy, Value: ev.Accuracy, Timestamp: now, Step: int64(ev.Step)},
			{Key: tracking.MetricTestLoss, Value: ev.Loss, Timestamp: now, Step: int64(ev.Step)},
		}
	}
	if !ev.Backfill {
		r.logBatch(a.runID, ms, nil, nil)
		return
	}
	// A backfill covers the one gap a failover can leave: a committed round
	// whose metrics the old leader did not log before it stopped.
	hist, err := r.tr.GetMetricHistory(r.ctx, a.runID, tracking.MetricRoundSeconds)
	if err != nil {
		return
	}
	for _, m := range hist {
		if m.Step == int64(ev.Step) {
			return
		}
	}
	tag := tracking.Tag{Key: tracking.RoundStatusTag(ev.Step),
		Value: "committed by the previous leader, which stopped before logging the round's metrics; test accuracy evaluated again by coordinator " + ev.Coordinator}
	r.logBatch(a.runID, ms, nil, []tracking.Tag{tag})
}

func (r *recorder) updateAccepted(ev UpdateAccepted) {
	a := r.arms[ev.Arm]
	if a == nil {
		return
	}
	a.accepted = append(a.accepted, ev.Site)
	ms, tags := r.siteMetrics(ev)
	runID := r.siteRun(a, ev.Site)
	if runID == "" {
		return
	}
	r.logBatch(runID, ms, nil, tags)
	r.logDataset(a, ev.Site, runID, ev.Dataset)
	// The full report (method, window and interval of every figure) is
	// kept as an artifact beside the metrics.
	if js := ev.Energy.GetJson(); len(js) > maxEnergyArtifact {
		r.log.Warn("energy_report_too_large", "site", ev.Site, "bytes", len(js), "max", maxEnergyArtifact)
	} else if len(js) > 0 {
		name := fmt.Sprintf("energy/round-%04d.json", ev.Round)
		r.failed("tracking_artifact_failed", r.tr.LogArtifact(r.ctx, runID, name, bytes.NewReader(js)), "site", ev.Site)
	}
}

func (r *recorder) updateRefused(ev UpdateRefused) {
	a := r.arms[ev.Arm]
	if a == nil {
		return
	}
	status := ev.Status + ": " + truncate(ev.Reason, 4000)
	a.statused[ev.Site] = status
	runID := r.siteRun(a, ev.Site)
	now := time.Now().UnixMilli()
	ms := []tracking.Metric{{Key: tracking.MetricAccepted, Value: 0, Timestamp: now, Step: int64(ev.Round)}}
	tags := []tracking.Tag{{Key: tracking.RoundStatusTag(ev.Round), Value: status}}
	if ev.Screened != "" {
		ms = append(ms, normMetric(ev.Norm, now, ev.Round)...)
		tags = append(tags, tracking.Tag{Key: TagScreened, Value: truncate(ev.Screened, 4000)})
	}
	r.logBatch(runID, ms, nil, tags)
}

func (r *recorder) roundClosed(ev RoundClosed) {
	a := r.arms[ev.Arm]
	if a == nil {
		return
	}
	now := time.Now().UnixMilli()
	step := int64(ev.Round)
	ms := make([]tracking.Metric, 0, len(ev.Metrics)+len(ev.Previous))
	for _, k := range slices.Sorted(maps.Keys(ev.Metrics)) {
		ms = append(ms, tracking.Metric{Key: k, Value: ev.Metrics[k], Timestamp: now, Step: step})
	}
	for _, k := range slices.Sorted(maps.Keys(ev.Previous)) {
		ms = append(ms, tracking.Metric{Key: k, Value: ev.Previous[k], Timestamp: now, Step: step - 1})
	}
	r.logBatch(a.runID, ms, nil, []tracking.Tag{{Key: tracking.TagEnergyMethod, Value: ev.EnergyMethod}})
	// The round counted its aggregated updates: each is credited now, and
	// a status an earlier attempt at the round set is brought up to date.
	for _, site := range a.accepted {
		runID := r.siteRun(a, site)
		sms := []tracking.Metric{{Key: tracking.MetricAccepted, Value: 1, Timestamp: now, Step: step}}
		if w, ok := ev.WeightFractions[site]; ok {
			sms = append(sms, tracking.Metric{Key: MetricWeightFraction, Value: w, Timestamp: now, Step: step})
		}
		var tags []tracking.Tag
		if earlier, ok := a.statused[site]; ok {
			tags = append(tags, tracking.Tag{Key: tracking.RoundStatusTag(ev.Round),
				Value: truncate(fmt.Sprintf("ok: accepted on attempt %d (earlier: %s)", a.attempt, earlier), 4000)})
		}
		r.logBatch(runID, sms, nil, tags)
	}
	a.accepted = a.accepted[:0]
	a.statused = make(map[string]string)
}

func (r *recorder) roundFailed(ev RoundFailed) {
	a := r.arms[ev.Arm]
	if a == nil {
		return
	}
	// The attempt's aggregated updates were not used: discarded, not
	// accepted.
	now := time.Now().UnixMilli()
	status := truncate(fmt.Sprintf("discarded: attempt %d at the round failed (%s); the update was not used", a.attempt, ev.Err), 4000)
	for _, site := range a.accepted {
		a.statused[site] = status
		r.logBatch(r.siteRun(a, site),
			[]tracking.Metric{{Key: tracking.MetricAccepted, Value: 0, Timestamp: now, Step: int64(ev.Round)}}, nil,
			[]tracking.Tag{{Key: tracking.RoundStatusTag(ev.Round), Value: status}})
	}
	a.accepted = a.accepted[:0]
}

func (r *recorder) armFinished(ev ArmFinished) {
	a := r.arms[ev.Arm]
	if a == nil {
		return
	}
	end := time.Now()
	r.endSiteRuns(a, ev.Status, end)
	if a.runID == "" {
		return
	}
	method := methodEstimated
	if ev.MeasuredAny {
		method = methodMeasured
	}
	r.logBatch(a.runID, nil, nil, []tracking.Tag{{Key: tracking.TagEnergyMethod, Value: method}})
	r.failed("tracking_update_failed", r.tr.UpdateRun(r.ctx, a.runID, ev.Status, end, ""), "arm", ev.Arm)
	if ev.Err == nil {
		r.registerArm(a, ev)
	}
}

// endSiteRuns ends the arm's site runs: in one call where the tracker is
// a [RunsEnder], else (or where that fails) one by one, so that a run
// that cannot be ended leaves the others ended.
func (r *recorder) endSiteRuns(a *armRecord, status tracking.RunStatus, end time.Time) {
	sites := slices.Sorted(maps.Keys(a.siteRuns))
	if re, ok := r.tr.(RunsEnder); ok && len(sites) > 1 {
		ids := make([]string, len(sites))
		for i, site := range sites {
			ids[i] = a.siteRuns[site]
		}
		err := re.EndRuns(r.ctx, ids, status, end)
		if err == nil {
			return
		}
		if r.ctx.Err() != nil { // as flush: one by one would fail as well
			r.failed("tracking_update_failed", r.ctx.Err(), "arm", a.name, "runs", len(ids))
			return
		}
		r.log.Warn("tracking_end_runs_failed", "arm", a.name, "runs", len(ids), "err", err, "effect", "the site runs are ended one by one")
	}
	for _, site := range sites {
		r.failed("tracking_update_failed", r.tr.UpdateRun(r.ctx, a.siteRuns[site], status, end, ""), "site", site)
	}
}

func (r *recorder) jobFinished(ev JobFinished) {
	if ev.Interrupted || r.jobRunID == "" {
		return // the next leader ends the job run
	}
	if ev.Err == nil && !ev.Cancelled {
		r.moveAliasBest()
	}
	r.finishJobRun(ev)
}

// finishJobRun ends the job run with the comparison of its arms: a table
// and a plot as artifacts, and each arm's final figures as metrics.
func (r *recorder) finishJobRun(ev JobFinished) {
	ctx, tr, runID := r.ctx, r.tr, r.jobRunID
	status := tracking.StatusFinished
	switch {
	case ev.Cancelled:
		status = tracking.StatusKilled
	case ev.Err != nil:
		status = tracking.StatusFailed
	}
	var tags []tracking.Tag
	if ev.Err != nil {
		tags = append(tags, tracking.Tag{Key: tracking.TagError, Value: truncate(ev.Err.Error(), 5000)})
	}
	if n := r.droppedCount(); n > 0 {
		// Told where the job is watched by finish (tellDropped).
		tags = append(tags, tracking.Tag{Key: TagEventsDropped, Value: strconv.Itoa(n)})
		r.tagged = true
	}
	var ms []tracking.Metric
	if cmp, err := tracking.Compare(ctx, tr, runID); err == nil {
		var buf bytes.Buffer
		if err := cmp.WriteTable(&buf); err == nil {
			r.failed("tracking_artifact_failed", tr.LogArtifact(ctx, runID, "comparison.txt", &buf))
		}
		var img bytes.Buffer
		if err := plot.Comparison(ctx, tr, runID, "png", &img); err == nil {
			r.failed("tracking_artifact_failed", tr.LogArtifact(ctx, runID, "comparison.png", &img))
		} else {
			r.log.Warn("comparison_plot_failed", "err", err)
		}
		ms = comparisonMetrics(cmp, time.Now().UnixMilli())
	}
	r.logBatch(runID, ms, nil, tags)
	r.failed("tracking_update_failed", tr.UpdateRun(ctx, runID, status, time.Now(), ""), "run", runID)
}

// comparisonMetrics are each arm's final figures, logged on the job run:
// ARM.final_test_accuracy (where the arm has one), ARM.wall_seconds and
// ARM.energy_joules.
func comparisonMetrics(cmp tracking.Comparison, now int64) []tracking.Metric {
	var ms []tracking.Metric
	for _, a := range cmp.Arms {
		if !math.IsNaN(a.FinalAccuracy) { // NaN: the arm has no test accuracy
			ms = append(ms, tracking.Metric{Key: a.Name + tracking.SuffixFinalTestAccuracy, Value: a.FinalAccuracy, Timestamp: now})
		}
		ms = append(ms,
			tracking.Metric{Key: a.Name + tracking.SuffixWallSeconds, Value: a.WallSeconds, Timestamp: now},
			tracking.Metric{Key: a.Name + tracking.SuffixEnergyJoules, Value: a.EnergyJoules, Timestamp: now},
		)
	}
	return ms
}
