package server

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
)

// Replica is the replicated state of a coordinator that survives its own
// failure; server/ha's *ha.Node is one. Only the leader proposes; the
// coordinator leads while the replica does, and refuses sites and admins
// otherwise, naming the leader.
type Replica interface {
	ID() string
	// Leadership returns whether this node leads and a channel closed at
	// the next change.
	Leadership() (leader bool, changed <-chan struct{})
	Leader() (ha.Peer, bool)
	// Barrier returns once everything committed before this node led is
	// applied to its FSM.
	Barrier(ctx context.Context) error
	FSM() *ha.FSM
	Status() ha.NodeStatus
	SubmitJob(ctx context.Context, id string, spec []byte) error
	RegisterSite(ctx context.Context, name string, capabilities []byte) error
	SetJobStatus(ctx context.Context, id string, s ha.JobStatus, reason string) error
	SetRunIDs(ctx context.Context, id string, ids ha.RunIDs) error
	// PutModel replicates the model write writes (once, whole) and
	// returns its digest; see ha.Node.PutModel.
	PutModel(ctx context.Context, write func(io.Writer) error) (digest string, err error)
	CommitRound(ctx context.Context, jobID, arm string, round int, digest string, totals map[string]float64) error
}

// replicaTimeout bounds one proposal made outside a job's own context.
const replicaTimeout = 15 * time.Second

// runReplicated runs the job queue while this node leads its cluster:
// each time it becomes the leader it catches up with the log, rebuilds
// the jobs from the replicated state (resuming those that were running)
// and runs them; when it loses the lead it stops them — without ending
// them, for the next leader resumes them — and ends the sites' sessions so
// that they go to the new leader.
func (c *Coordinator) runReplicated(ctx context.Context) error {
	for ctx.Err() == nil {
		leader, changed := c.rep.Leadership()
		if !leader {
			select {
			case <-ctx.Done():
			case <-changed:
			}
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		stop := make(chan struct{})
		go func() {
			select {
			case <-changed:
				cancel()
			case <-stop:
			}
		}()
		err := c.lead(lctx)
		close(stop)
		cancel()
		c.stepDown()
		if err != nil && ctx.Err() == nil {
			c.log.Warn("leading_failed", "err", err)
			select { // do not spin on a replica that keeps failing
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}
	return nil
}

func (c *Coordinator) lead(ctx context.Context) error {
	if err := c.rep.Barrier(ctx); err != nil {
		return fmt.Errorf("catching up with the cluster's log: %w", err)
	}
	if !c.leading.Load() {
		// A coordinator that leads already (on its own in-memory node,
		// from New on) holds its jobs in memory: only a new leader
		// rebuilds them.
		c.restoreReplicated(ctx)
	}
	c.leading.Store(true)
	c.log.Info("leading", "node", c.rep.ID(), "jobs", len(c.rep.FSM().Jobs()))
	c.serveQueue(ctx)
	return nil
}

// stepped returns a channel closed when this coordinator next steps down.
func (c *Coordinator) stepped() <-chan struct{} {
	c.termMu.Lock()
	defer c.termMu.Unlock()
	return c.term
}

func (c *Coordinator) stepDown() {
	was := c.leading.Swap(false)
	c.termMu.Lock()
	close(c.term)
	c.term = make(chan struct{})
	c.termMu.Unlock()
	c.closeSessions()
	c.jobs.reset()
	if was {
		c.log.Info("stepped_down", "node", c.rep.ID())
	}
}

// Leading reports whether the coordinator serves sites and admins: its
// node leads and the jobs are restored.
func (c *Coordinator) Leading() bool { return c.leading.Load() }

// notLeader returns nil while this coordinator leads, else the
// Unavailable status that names the leader.
func (c *Coordinator) notLeader() error {
	if c.leading.Load() {
		return nil
	}
	return notLeaderStatus(c.rep.ID(), c.rep)
}

func notLeaderStatus(self string, rep interface{ Leader() (ha.Peer, bool) }) error {
	p, ok := rep.Leader()
	var msg string
	switch {
	case !ok || p.ID == "":
		msg = fmt.Sprintf("coordinator %s is not the leader of its cluster and no leader is elected yet; retry in a few seconds", self)
	case p.ID == self:
		msg = fmt.Sprintf("coordinator %s is becoming the leader; retry in a moment", self)
	default:
		msg = fmt.Sprintf("coordinator %s is not the leader of its cluster; the leader is %s at %s", self, p.ID, p.GRPCAddr)
	}
	st := status.New(codes.Unavailable, msg)
	info := &errdetails.ErrorInfo{Reason: pb.NotLeaderReason, Domain: pb.ErrorDomain, Metadata: map[string]string{}}
	if ok && p.ID != "" {
		info.Metadata[pb.LeaderIDKey] = p.ID
		info.Metadata[pb.LeaderAddressKey] = p.GRPCAddr
	}
	if d, err := st.WithDetails(info); err == nil {
		st = d
	}
	return st.Err()
}

// restoreReplicated rebuilds the job table from the replicated state:
// ended jobs as they ended, queued jobs queued, running jobs queued first
// to resume at the round after their last committed one.
func (c *Coordinator) restoreReplicated(ctx context.Context) {
	var running, queued []*jobRun
	for _, hj := range c.rep.FSM().Jobs() {
		spec, parseErr := job.Parse(hj.Spec)
		info := &pb.Job{JobId: hj.ID, State: pbState(hj.Status), Error: hj.Reason, CreatedUnixMs: hj.SubmittedAt / 1e6,
			TrackingRunId: hj.RunIDs.Job, ExperimentId: hj.RunIDs.Experiment}
		if parseErr == nil {
			info.Name = spec.Name
		}
		j := &jobRun{id: hj.ID, spec: spec, src: hj.Spec, info: info, changed: make(chan struct{}), runIDs: hj.RunIDs}
		j.persist = c.persistFunc(info.State)
		c.jobs.mu.Lock()
		_, known := c.jobs.jobs[j.id]
		if !known {
			c.jobs.jobs[j.id] = j
		}
		c.jobs.mu.Unlock()
		if known {
			// Submitted to this coordinator before it ran its queue (a
			// one-voter cluster leads from the start): already queued.
			continue
		}
		restoreProgress(info, spec, hj)
		j.events = history(hj, spec)
		switch {
		case hj.Status == ha.StatusQueued || hj.Status == ha.StatusRunning:
			if parseErr != nil {
				reason := fmt.Sprintf("the job file no longer parses on coordinator %s: %v", c.rep.ID(), parseErr)
				j.emit(&pb.JobEvent{Kind: "job_finished", Message: reason}, func(info *pb.Job) {
					info.State, info.Error = pb.JobState_JOB_STATE_FAILED, reason
				})
				continue
			}
			if hj.Status == ha.StatusRunning {
				j.resume = true
				running = append(running, j)
			} else {
				queued = append(queued, j)
			}
		}
	}
	for _, j := range append(running, queued...) {
		msg := "queued again by coordinator " + c.rep.ID()
		if j.resume {
			msg = "resumes on coordinator " + c.rep.ID()
		}
		select {
		case c.jobs.queued <- j:
			j.emit(&pb.JobEvent{Kind: "job_queued", Message: msg, Metrics: map[string]float64{MetricResumed: b2f(j.resume)}}, nil)
		default:
			c.log.Error("job_queue_full", "job", j.id)
		}
		c.log.Info("job_restored", "job", j.id, "resume", j.resume)
	}
}

// persistFunc returns what a job calls after a change of its status,
// outside its lock and one call at a time (jobRun.sync): it replicates
// changes of state.
func (c *Coordinator) persistFunc(initial pb.JobState) func(*pb.Job) {
	last := initial
	return func(info *pb.Job) {
		if info.GetState() == last {
			return
		}
		ctx, cancel := c.proposalContext()
		defer cancel()
		if err := c.rep.SetJobStatus(ctx, info.GetJobId(), haStatus(info.GetState()), info.GetError()); err != nil {
			c.log.Error("job_state_replication_failed", "job", info.GetJobId(), "state", stateWord(info.GetState()), "err", err)
			return
		}
		last = info.GetState()
	}
}

// interrupted reports whether a job stopped because this coordinator no
// longer leads (or is shutting down) rather than for its own reasons: the
// job is then left running in the replicated state, its tracking runs
// open, for the next leader to resume.
func (c *Coordinator) interrupted(ctx context.Context, j *jobRun, err error) bool {
	if errors.Is(err, ha.ErrNotLeader) || errors.Is(err, ha.ErrRoundConflict) {
		return true
	}
	j.mu.Lock()
	reason := j.reason
	j.mu.Unlock()
	return ctx.Err() != nil && reason == ""
}

// siteWrite is a site registry entry waiting to be written.
type siteWrite struct {
	caps []byte
	sum  [32]byte
}

// maxRegistryWriters bounds the site registry writes in flight; a Join
// over it is served and its registry entry skipped (best effort).
const maxRegistryWriters = 64

// registerSite records a joining site in the replicated site registry, so
// that every coordinator knows the sites and their capabilities and when
// they last joined. It never waits on raft: a writer per site proposes in
// the background, at most one at a time per site, the latest Join's
// capabilities winning over those not yet written. Best effort: a site is
// served whether or not its entry commits.
func (c *Coordinator) registerSite(name string, caps *pb.Capabilities) {
	b, err := proto.Marshal(caps)
	if err != nil {
		return
	}
	// A site that joins again unchanged (a reconnect, a flood of Joins)
	// writes no raft entry.
	sum := sha256.Sum256(append([]byte(name+"\x00"), b...))
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.regPending[name]; c.shut || c.registered[name] == sum || ok && p.sum == sum {
		return
	}
	if !c.regBusy[name] && len(c.regBusy) >= maxRegistryWriters {
		c.log.Debug("site_registry_skipped", "site", name, "writers", len(c.regBusy))
		return
	}
	c.regPending[name] = siteWrite{caps: b, sum: sum}
	if !c.regBusy[name] {
		c.regBusy[name] = true
		c.regWG.Add(1)
		go c.writeSite(name)
	}
}

// writeSite writes site name's pending registry entries until none is
// left.
func (c *Coordinator) writeSite(name string) {
	defer c.regWG.Done()
	for {
		c.mu.Lock()
		w, ok := c.regPending[name]
		delete(c.regPending, name)
		if !ok {
			delete(c.regBusy, name)
			close(c.regDone)
			c.regDone = make(chan struct{})
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		ctx, cancel := c.proposalContext()
		err := c.rep.RegisterSite(ctx, name, w.caps)
		cancel()
		if err != nil {
			c.log.Debug("site_registry_failed", "site", name, "err", err)
			continue
		}
		c.mu.Lock()
		if c.knownLocked(name) { // a site that left meanwhile keeps no entry
			c.registered[name] = w.sum
		}
		c.mu.Unlock()
	}
}

// knownLocked reports whether site name is connected or has joined and
// yet to open its session; c.mu is held.
func (c *Coordinator) knownLocked(name string) bool {
	if c.sites[name] != nil {
		return true
	}
	for _, pj := range c.pending {
		if pj.name == name {
			return true
		}
	}
	return false
}

// proposalContext bounds a proposal made outside a job's own context:
// replicaTimeout, and no longer than this coordinator leads or runs.
func (c *Coordinator) proposalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(context.Background(), replicaTimeout)
	term := c.stepped()
	go func() {
		select {
		case <-term:
		case <-c.quit:
		case <-ctx.Done():
		}
		cancel()
	}()
	return ctx, cancel
}

// saveRunIDs replicates tracking run ids so that the runs continue after
// a failover.
func (c *Coordinator) saveRunIDs(ctx context.Context, j *jobRun, ids ha.RunIDs) error {
	ids = c.resolveRunIDs(ctx, j, ids)
	if err := c.rep.SetRunIDs(ctx, j.id, ids); err != nil {
		return fmt.Errorf("replicating the tracking run ids: %w", err)
	}
	return nil
}

// idResolver is a tracker that hands out placeholder IDs while its server
// is away (the MLflow REST client) and resolves them once it is back.
type idResolver interface {
	ResolveID(ctx context.Context, id string) (string, error)
}

// resolveWait bounds how long saving a job's run IDs waits for a tracking
// server that is away.
const resolveWait = 10 * time.Second

// resolveRunIDs turns the placeholder IDs of a tracker whose server is away
// into the server's IDs before they are replicated: another coordinator
// resuming the job could not resolve them. An ID that cannot be resolved
// in resolveWait is left out (with a warning): a resumed job then starts
// that run afresh instead of failing on a placeholder.
func (c *Coordinator) resolveRunIDs(ctx context.Context, j *jobRun, ids ha.RunIDs) ha.RunIDs {
	r, ok := j.tracker.(idResolver)
	if !ok {
		return ids
	}
	rctx, cancel := context.WithTimeout(ctx, resolveWait)
	defer cancel()
	resolve := func(id string) string {
		if id == "" {
			return ""
		}
		real, err := r.ResolveID(rctx, id)
		if err != nil {
			c.log.Warn("run_id_unresolved", "job", j.id, "id", id, "err", err,
				"effect", "a coordinator that resumes this job starts this run afresh")
			return ""
		}
		return real
	}
	out := ha.RunIDs{Experiment: resolve(ids.Experiment), Job: resolve(ids.Job)}
	for arm, id := range ids.Arms {
		if real := resolve(id); real != "" {
			if out.Arms == nil {
				out.Arms = map[string]string{}
			}
			out.Arms[arm] = real
		}
	}
	for arm, sites := range ids.Sites {
		for site, id := range sites {
			if real := resolve(id); real != "" {
				if out.Sites == nil {
					out.Sites = map[string]map[string]string{}
				}
				if out.Sites[arm] == nil {
					out.Sites[arm] = map[string]string{}
				}
				out.Sites[arm][site] = real
			}
		}
	}
	return out
}

// jobStates pairs the replicated job statuses with the wire's.
var jobStates = map[ha.JobStatus]pb.JobState{
	ha.StatusQueued:    pb.JobState_JOB_STATE_QUEUED,
	ha.StatusRunning:   pb.JobState_JOB_STATE_RUNNING,
	ha.StatusSucceeded: pb.JobState_JOB_STATE_SUCCEEDED,
	ha.StatusFailed:    pb.JobState_JOB_STATE_FAILED,
	ha.StatusCancelled: pb.JobState_JOB_STATE_CANCELLED,
}

// pbState is s on the wire; UNSPECIFIED for a status this node does not know.
func pbState(s ha.JobStatus) pb.JobState { return jobStates[s] }

// haStatus is s in the replicated state; queued for UNSPECIFIED.
func haStatus(s pb.JobState) ha.JobStatus {
	for hs, ps := range jobStates {
		if ps == s {
			return hs
		}
	}
	return ha.StatusQueued
}

// ClusterStatus implements JobsService.ClusterStatus: this node's view of
// its cluster, answered by leaders and followers alike.
func (c *Coordinator) ClusterStatus(ctx context.Context, _ *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error) {
	if err := c.limitAdmin(ctx); err != nil {
		return nil, err
	}
	c.mu.Lock()
	sites := len(c.sites)
	c.mu.Unlock()
	resp := &pb.ClusterStatusResponse{SitesConnected: int32(sites)}
	c.jobs.mu.Lock()
	for _, j := range c.jobs.jobs {
		if j.snapshot().GetState() == pb.JobState_JOB_STATE_RUNNING {
			resp.JobsRunning++
		}
	}
	c.jobs.mu.Unlock()
	st := c.rep.Status()
	resp.NodeId, resp.State = st.ID, strings.ToLower(st.State)
	resp.Term, resp.LastIndex, resp.CommitIndex, resp.AppliedIndex, resp.LastSnapshotIndex = st.Term, st.LastIndex, st.CommitIndex, st.AppliedIndex, st.LastSnapshotIndex
	resp.LastContactMs = st.LastContact.Milliseconds()
	if st.Leader.ID != "" {
		resp.Leader = &pb.ClusterPeer{Id: st.Leader.ID, RaftAddress: st.Leader.RaftAddr, GrpcAddress: st.Leader.GRPCAddr}
	}
	for _, p := range st.Peers {
		resp.Peers = append(resp.Peers, &pb.ClusterPeer{Id: p.ID, RaftAddress: p.RaftAddr, GrpcAddress: p.GRPCAddr})
	}
	return resp, nil
}

func stateWord(s pb.JobState) string { return pb.StateWord(s) }
