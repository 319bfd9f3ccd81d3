package server

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
)

// jobRun is one submitted job: its spec, its live status and its event log.
type jobRun struct {
	id   string
	spec *job.Spec
	src  []byte // the job file as submitted
	// user submitted the job: the CN of the caller's certificate, or the
	// coordinator process's user without TLS; "" for a job resumed on
	// another coordinator (its runs were tagged when they were created).
	user string

	// tracker is where the job logs; set when it starts running.
	tracker Tracker
	// idleWatts is the devices' idle power, measured before the job ran;
	// 0 when unknown.
	idleWatts float64

	mu      sync.Mutex
	info    *pb.Job
	events  []*pb.JobEvent
	changed chan struct{} // closed and replaced on every new event or state
	cancel  context.CancelFunc
	reason  string // why it was cancelled

	// persist, if set, replicates the job's status; called by sync after
	// every change of state, outside mu (readers never wait on a
	// proposal), one call at a time under persistMu.
	persist   func(info *pb.Job)
	persistMu sync.Mutex

	// resume is set on a job that was running when the coordinator that
	// led it stopped: it continues at the round after the last committed
	// one, logging into runIDs.
	resume bool
	runIDs ha.RunIDs

	// initial is the job's initial global model (the model provider's, or
	// what an init task made), shared by the arms; nil once the last arm
	// has taken it.
	initMu  sync.Mutex
	initial *model.Weights
}

func (j *jobRun) snapshot() *pb.Job {
	j.mu.Lock()
	defer j.mu.Unlock()
	return proto.Clone(j.info).(*pb.Job)
}

func terminal(s pb.JobState) bool {
	return s == pb.JobState_JOB_STATE_SUCCEEDED || s == pb.JobState_JOB_STATE_FAILED || s == pb.JobState_JOB_STATE_CANCELLED
}

// emit appends an event and applies update to the job's status under
// lock, then replicates the status (sync) outside it.
func (j *jobRun) emit(ev *pb.JobEvent, update func(*pb.Job)) {
	j.mu.Lock()
	j.emitLocked(ev, update)
	j.mu.Unlock()
	if update != nil {
		j.sync()
	}
}

// sync replicates the job's current status. Calls are serialised and each
// reads the status when it runs, so that the last one replicates the
// latest status whatever order racing callers take.
func (j *jobRun) sync() {
	if j.persist == nil {
		return
	}
	j.persistMu.Lock()
	defer j.persistMu.Unlock()
	j.persist(j.snapshot())
}

// emitLocked is emit with j.mu held; the caller syncs after unlocking.
func (j *jobRun) emitLocked(ev *pb.JobEvent, update func(*pb.Job)) {
	if update != nil {
		update(j.info)
	}
	if ev != nil {
		ev.JobId = j.id
		if ev.UnixMs == 0 {
			ev.UnixMs = time.Now().UnixMilli()
		}
		ev.State = j.info.State
		j.events = append(j.events, ev)
	}
	close(j.changed)
	j.changed = make(chan struct{})
}

// eventsFrom returns the events from index i on, whether the job has ended,
// and a channel closed at the next change.
func (j *jobRun) eventsFrom(i int) ([]*pb.JobEvent, bool, <-chan struct{}) {
	j.mu.Lock()
	defer j.mu.Unlock()
	var evs []*pb.JobEvent
	if i < len(j.events) {
		evs = append(evs, j.events[i:]...)
	}
	return evs, terminal(j.info.State), j.changed
}

// jobQueue holds every job the coordinator knows and the queue of those
// waiting to run.
type jobQueue struct {
	mu     sync.Mutex
	jobs   map[string]*jobRun
	queued chan *jobRun
}

func newJobQueue() *jobQueue {
	return &jobQueue{jobs: make(map[string]*jobRun), queued: make(chan *jobRun, 1024)}
}

// reset forgets every job: a coordinator that steps down rebuilds them
// from the replicated state when it leads again.
func (q *jobQueue) reset() {
	q.mu.Lock()
	defer q.mu.Unlock()
	clear(q.jobs)
	for {
		select {
		case <-q.queued:
		default:
			return
		}
	}
}

func (q *jobQueue) get(id string) (*jobRun, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	j, ok := q.jobs[id]
	if !ok {
		return nil, fmt.Errorf("job %q: %w; `cohort jobs` lists the jobs", id, ErrUnknownJob)
	}
	return j, nil
}

// Submit parses, checks and queues the job file src and returns the job,
// as the SubmitJob RPC does without its checks of the caller.
func (c *Coordinator) Submit(ctx context.Context, src []byte) (*pb.Job, error) {
	spec, err := job.Parse(src)
	if err != nil {
		return nil, badInput("%v", err)
	}
	return c.submit(ctx, spec, src)
}

// submit checks and queues a job; src, the job file, is replicated with
// it so that the next leader can run it.
func (c *Coordinator) submit(ctx context.Context, spec *job.Spec, src []byte) (*pb.Job, error) {
	if ck, ok := c.deps.Models.(SpecChecker); ok {
		if err := ck.CheckSpec(ctx, spec); err != nil {
			if ctx.Err() != nil {
				return nil, fmt.Errorf("checking job %q: %w", spec.Name, ctx.Err())
			}
			c.log.Warn("job_refused", "name", spec.Name, "err", err)
			return nil, badInput("%v", err)
		}
	}
	if err := checkModelSize(spec, c.cfg.MaxModelBytes); err != nil {
		c.log.Warn("job_refused", "name", spec.Name, "err", err)
		return nil, err
	}
	j := &jobRun{
		id:      newID()[:12],
		spec:    spec,
		src:     src,
		user:    submitter(ctx),
		changed: make(chan struct{}),
		persist: c.persistFunc(pb.JobState_JOB_STATE_QUEUED),
	}
	if len(src) == 0 {
		return nil, badInput("submitting a job needs its job file: the replicated state keeps it for the next leader")
	}
	if len(c.jobs.queued) == cap(c.jobs.queued) {
		return nil, fmt.Errorf("submitting job: the queue is full (%d jobs); wait for some to finish", cap(c.jobs.queued))
	}
	if err := c.rep.SubmitJob(ctx, j.id, src); err != nil {
		if errors.Is(err, ha.ErrNotLeader) {
			return nil, notLeaderStatus(c.rep.ID(), c.rep)
		}
		return nil, fmt.Errorf("replicating job %s: %w", j.id, err)
	}
	j.info = &pb.Job{
		JobId:         j.id,
		Name:          spec.Name,
		State:         pb.JobState_JOB_STATE_QUEUED,
		CreatedUnixMs: time.Now().UnixMilli(),
	}
	c.jobs.mu.Lock()
	c.jobs.jobs[j.id] = j
	c.jobs.mu.Unlock()
	select {
	case c.jobs.queued <- j:
	default:
		return nil, fmt.Errorf("submitting job: the queue is full (%d jobs); wait for some to finish", cap(c.jobs.queued))
	}
	j.emit(&pb.JobEvent{Kind: "job_queued", Message: "queued"}, func(*pb.Job) {})
	c.log.Info("job_submitted", "job", j.id, "name", spec.Name)
	return j.snapshot(), nil
}

// Run runs queued jobs one after another until ctx is cancelled. It returns
// nil on a clean cancel, after ending every site's session (so that a
// graceful stop of the gRPC server does not wait on them, and the sites go
// on to the next coordinator they know).
//
// It runs jobs only while this node leads its cluster (a coordinator's own
// in-memory node always does); see runReplicated.
func (c *Coordinator) Run(ctx context.Context) error {
	defer c.closeSessions()
	return c.runReplicated(ctx)
}

func (c *Coordinator) serveQueue(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-c.jobs.queued:
			c.execute(ctx, j)
		}
	}
}

func (c *Coordinator) execute(ctx context.Context, j *jobRun) {
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j.mu.Lock()
	if terminal(j.info.State) || j.info.State != pb.JobState_JOB_STATE_QUEUED && !j.resume { // cancelled while queued
		j.mu.Unlock()
		return
	}
	j.cancel = cancel
	j.mu.Unlock()
	j.emit(&pb.JobEvent{Kind: "job_started", Message: "started"}, func(info *pb.Job) {
		info.State = pb.JobState_JOB_STATE_RUNNING
	})
	stuck, err := c.runBounded(ctx, jctx, j)
	if stuck {
		// The runner did not stop within CancelGrace of its cancel: the
		// job ends here regardless, and the runner is left to return.
		err = jctx.Err()
	}
	if c.interrupted(jctx, j, err) {
		msg := fmt.Sprintf("interrupted on coordinator %s (it no longer leads its cluster, or stops); the next leader resumes the job at the round after the last committed one", c.rep.ID())
		c.log.Warn("job_interrupted", "job", j.id, "err", err)
		j.emit(&pb.JobEvent{Kind: "job_interrupted", Message: msg}, nil)
		if ctx.Err() == nil {
			c.requeue(j)
		}
		return
	}
	state, msg := pb.JobState_JOB_STATE_SUCCEEDED, "finished"
	switch {
	case err != nil && jctx.Err() != nil:
		j.mu.Lock()
		reason := j.reason
		j.mu.Unlock()
		if reason == "" {
			reason = "coordinator shutting down"
		}
		state, msg = pb.JobState_JOB_STATE_CANCELLED, "cancelled: "+reason
	case err != nil:
		state, msg = pb.JobState_JOB_STATE_FAILED, err.Error()
	}
	c.log.Info("job_finished", "job", j.id, "state", state.String(), "message", msg)
	j.emit(&pb.JobEvent{Kind: "job_finished", Message: msg}, func(info *pb.Job) {
		info.State = state
		if state != pb.JobState_JOB_STATE_SUCCEEDED {
			info.Error = msg
		}
	})
}

// runBounded runs the job and returns its error once it returns, or —
// when jctx is cancelled (an admin's cancel, a shutdown) and the runner
// has not returned CancelGrace later — with stuck set. A panic in the
// runner fails the job rather than the coordinator.
func (c *Coordinator) runBounded(ctx, jctx context.Context, j *jobRun) (stuck bool, err error) {
	done := make(chan error, 1)
	c.runners.Add(1)
	go func() {
		defer c.runners.Done()
		defer func() {
			if r := recover(); r != nil {
				c.log.Error("job_runner_panicked", "job", j.id, "panic", r, "stack", string(debug.Stack()))
				done <- fmt.Errorf("internal error running the job (%v); the coordinator's log has the stack, please report it", r)
			}
		}()
		done <- c.runJob(jctx, j)
	}()
	select {
	case err := <-done:
		return false, err
	case <-jctx.Done():
	}
	grace := time.NewTimer(c.cfg.CancelGrace)
	defer grace.Stop()
	select {
	case err := <-done:
		return false, err
	case <-grace.C:
		c.log.Warn("job_runner_stuck", "job", j.id, "grace", c.cfg.CancelGrace, "shutting_down", ctx.Err() != nil,
			"detail", "the job is marked ended; its runner still waits on something that ignores cancellation (a model provider, a tracking store)")
		return true, nil
	}
}

// requeue queues again, to resume from the replicated state, a job that
// was interrupted while this coordinator still leads (a proposal lost
// with a leadership that came back at once).
func (c *Coordinator) requeue(j *jobRun) {
	hj, err := c.rep.FSM().Job(j.id)
	if err != nil || hj.Status != ha.StatusRunning {
		return
	}
	j.mu.Lock()
	j.resume, j.runIDs, j.cancel = true, hj.RunIDs, nil
	j.mu.Unlock()
	select {
	case c.jobs.queued <- j:
	default:
	}
}

// SubmitJob implements JobsService.SubmitJob.
func (c *Coordinator) SubmitJob(ctx context.Context, req *pb.SubmitJobRequest) (*pb.SubmitJobResponse, error) {
	if err := c.limitAdmin(ctx); err != nil {
		return nil, err
	}
	if err := c.notLeader(); err != nil {
		return nil, err
	}
	spec, err := job.Parse(req.GetJobYaml())
	if err != nil {
		return nil, toStatus(badInput("%v", err))
	}
	info, err := c.submit(ctx, spec, req.GetJobYaml())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.SubmitJobResponse{Job: info}, nil
}

// ListJobs implements JobsService.ListJobs.
func (c *Coordinator) ListJobs(ctx context.Context, req *pb.ListJobsRequest) (*pb.ListJobsResponse, error) {
	if err := c.limitAdmin(ctx); err != nil {
		return nil, err
	}
	if err := c.notLeader(); err != nil {
		return nil, err
	}
	c.jobs.mu.Lock()
	js := make([]*jobRun, 0, len(c.jobs.jobs))
	for _, j := range c.jobs.jobs {
		js = append(js, j)
	}
	c.jobs.mu.Unlock()
	resp := &pb.ListJobsResponse{}
	for _, j := range js {
		resp.Jobs = append(resp.Jobs, j.snapshot())
	}
	sort.Slice(resp.Jobs, func(a, b int) bool { return resp.Jobs[a].CreatedUnixMs < resp.Jobs[b].CreatedUnixMs })
	return resp, nil
}

// GetJob implements JobsService.GetJob.
func (c *Coordinator) GetJob(ctx context.Context, req *pb.GetJobRequest) (*pb.GetJobResponse, error) {
	if err := c.limitAdmin(ctx); err != nil {
		return nil, err
	}
	if err := c.notLeader(); err != nil {
		return nil, err
	}
	j, err := c.jobs.get(req.GetJobId())
	if err != nil {
		return nil, toStatus(err)
	}
	return &pb.GetJobResponse{Job: j.snapshot()}, nil
}

// CancelJob implements JobsService.CancelJob.
func (c *Coordinator) CancelJob(ctx context.Context, req *pb.CancelJobRequest) (*pb.CancelJobResponse, error) {
	if err := c.limitAdmin(ctx); err != nil {
		return nil, err
	}
	if err := c.notLeader(); err != nil {
		return nil, err
	}
	j, err := c.jobs.get(req.GetJobId())
	if err != nil {
		return nil, toStatus(err)
	}
	reason := req.GetReason()
	if reason == "" {
		reason = "cancelled by an admin"
	}
	if cancel := j.cancelQueued(reason); cancel != nil {
		cancel() // running: its runner ends it, within CancelGrace
	}
	c.log.Info("job_cancel_requested", "job", j.id, "reason", reason)
	return &pb.CancelJobResponse{Job: j.snapshot()}, nil
}

// cancelQueued marks a job that has not started CANCELLED, and returns
// nil; a running job's cancel function it returns, for the caller to
// call. One lock covers both, so that a job the queue takes at that
// moment is either cancelled before it starts or sees its cancel.
func (j *jobRun) cancelQueued(reason string) context.CancelFunc {
	j.mu.Lock()
	j.reason = reason
	switch {
	case terminal(j.info.State):
		j.mu.Unlock()
		return nil
	case j.cancel != nil:
		cancel := j.cancel
		j.mu.Unlock()
		return cancel
	}
	j.emitLocked(&pb.JobEvent{Kind: "job_finished", Message: "cancelled: " + reason}, func(info *pb.Job) {
		info.State = pb.JobState_JOB_STATE_CANCELLED
		info.Error = "cancelled: " + reason
	})
	j.mu.Unlock()
	j.sync()
	return nil
}

// WatchJob implements JobsService.WatchJob.
func (c *Coordinator) WatchJob(req *pb.WatchJobRequest, stream grpc.ServerStreamingServer[pb.JobEvent]) error {
	if err := c.limitAdmin(stream.Context()); err != nil {
		return err
	}
	lost := c.stepped()
	if err := c.notLeader(); err != nil {
		return err
	}
	j, err := c.jobs.get(req.GetJobId())
	if err != nil {
		return toStatus(err)
	}
	next := 0
	for {
		evs, done, changed := j.eventsFrom(next)
		for _, ev := range evs {
			if err := stream.Send(ev); err != nil {
				return toStatus(err)
			}
		}
		next += len(evs)
		if done {
			return nil
		}
		select {
		case <-changed:
		case <-lost: // the job goes on on the next leader: watch it there
			return notLeaderStatus(c.rep.ID(), c.rep)
		case <-stream.Context().Done():
			return toStatus(stream.Context().Err())
		}
	}
}
