package federation

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/server/blobs"
	"github.com/cohortfl/cohort/server/ha"
	"github.com/cohortfl/cohort/tracking"
)

const haJob = `
name: ha
data: {dataset: fashion-mnist, path: %q}
model: {kind: logreg}
sites: {count: 2}
rounds: %d
train: {epochs: 2, batch_size: 16}
arms: [{name: fedavg, strategy: fedavg}]
`

func haSetup(t testing.TB) (src []byte, ds *Datasets, store *tracking.SQLiteStore, log *slog.Logger) {
	t.Helper()
	log = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	src = []byte(fmt.Sprintf(haJob, subset, 8))
	spec, err := job.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	ds, err = Load(context.Background(), spec, "")
	if err != nil {
		t.Fatal(err)
	}
	store, err = tracking.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "cohort.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return src, ds, store, log
}

// haAgents is the site agents' config in the HA tests: quick reconnects,
// and no drain when the test ends.
var haAgents = client.Config{BackoffInitial: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond, DrainTimeout: -1}

// leaderCall makes call on whichever of targets leads (followers refuse),
// retrying every 50 ms until ctx ends.
func leaderCall[T any](ctx context.Context, t testing.TB, sb *switchboard, targets []string, call func(context.Context, pb.JobsServiceClient) (T, error)) T {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var last error
	for {
		for _, a := range targets {
			cc, err := grpc.NewClient(a, sb.dialOptions()...)
			if err != nil {
				t.Fatal(err)
			}
			cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			v, err := call(cctx, pb.NewJobsServiceClient(cc))
			cancel()
			cc.Close()
			if err == nil {
				return v
			}
			last = err
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no coordinator of %v answered before %v: %v", targets, ctx.Err(), last)
		case <-tick.C:
		}
	}
}

// waitTimeout bounds each wait of the HA tests for a round, a leader or
// the end of a job.
const waitTimeout = 60 * time.Second

// waitRound waits until the job's arm has committed round r on node n.
func waitRound(t testing.TB, n *haNode, jobID string, r int) {
	t.Helper()
	fsm := n.node.FSM()
	last := func() int {
		l, _, _ := fsm.LastRound(jobID, "fedavg")
		return l
	}
	if !waitFor(waitTimeout, func() []<-chan struct{} { return []<-chan struct{}{fsm.Changed()} }, func() bool { return last() >= r }) {
		t.Fatalf("round %d of job %s not committed on %s within %v: its last committed round is %d", r, jobID, n.id, waitTimeout, last())
	}
}

// waitLeader waits until one of nodes leads and returns it.
func waitLeader(t testing.TB, nodes []*haNode) *haNode {
	t.Helper()
	var found *haNode
	changes := func() []<-chan struct{} {
		var out []<-chan struct{}
		found = nil
		for _, n := range nodes {
			leader, changed := n.node.Leadership()
			if leader {
				found = n
			}
			out = append(out, changed)
		}
		return out
	}
	if !waitFor(waitTimeout, changes, func() bool { return found != nil }) {
		var states []string
		for _, n := range nodes {
			states = append(states, n.id+": "+n.node.Status().State)
		}
		t.Fatalf("no coordinator of %d leads within %v: %s", len(nodes), waitTimeout, strings.Join(states, ", "))
	}
	return found
}

// waitStarted waits until the job's fedavg arm has started round r on
// node n, watching its events.
func waitStarted(ctx context.Context, t testing.TB, sb *switchboard, n *haNode, jobID string, r int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, waitTimeout)
	defer cancel()
	cc, err := grpc.NewClient(n.grpc, sb.dialOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	st, err := pb.NewJobsServiceClient(cc).WatchJob(ctx, &pb.WatchJobRequest{JobId: jobID})
	if err != nil {
		t.Fatalf("watching job %s on %s: %v", jobID, n.id, err)
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			t.Fatalf("round %d of job %s not started on %s: %v", r, jobID, n.id, err)
		}
		if ev.GetKind() == "round_started" && ev.GetArm() == "fedavg" && int(ev.GetRound()) == r {
			return
		}
	}
}

// waitDone waits until one of nodes holds the job as ended, then returns
// it as the leader reports it.
func waitDone(ctx context.Context, t *testing.T, sb *switchboard, nodes []*haNode, targets []string, jobID string) *pb.Job {
	t.Helper()
	var states []string
	changes := func() []<-chan struct{} {
		var out []<-chan struct{}
		for _, n := range nodes {
			out = append(out, n.node.FSM().Changed())
		}
		return out
	}
	ended := func() bool {
		states = states[:0]
		for _, n := range nodes {
			j, err := n.node.FSM().Job(jobID)
			if err == nil && (j.Status == ha.StatusSucceeded || j.Status == ha.StatusFailed || j.Status == ha.StatusCancelled) {
				return true
			}
			states = append(states, fmt.Sprintf("%s: %s %v", n.id, j.Status, err))
		}
		return false
	}
	if !waitFor(waitTimeout, changes, ended) {
		t.Fatalf("job %s not ended within %v: %s", jobID, waitTimeout, strings.Join(states, ", "))
	}
	// The leader sets a job's state before replicating it: once a node
	// holds it as ended, so does the leader (or, after a failover, the
	// new leader restores it so).
	return leaderCall(ctx, t, sb, targets, func(ctx context.Context, c pb.JobsServiceClient) (*pb.Job, error) {
		r, err := c.GetJob(ctx, &pb.GetJobRequest{JobId: jobID})
		if err != nil {
			return nil, err
		}
		switch j := r.GetJob(); j.GetState() {
		case pb.JobState_JOB_STATE_SUCCEEDED, pb.JobState_JOB_STATE_FAILED, pb.JobState_JOB_STATE_CANCELLED:
			return j, nil
		default:
			return nil, fmt.Errorf("the leader holds job %s as %v", jobID, j.GetState())
		}
	})
}

// checkTracking asserts the job's tracking after a failover: one arm run
// whose rounds 1..rounds are each logged once (or, for a round committed
// just before the crash, marked as such), a failover metric at the round
// the job resumed at on the arm run and every site run, and the arm run
// finished.
func checkTracking(t *testing.T, store *tracking.SQLiteStore, jobRunID string, rounds int) {
	t.Helper()
	ctx := context.Background()
	arms, err := store.ChildRuns(ctx, jobRunID)
	if err != nil {
		t.Fatal(err)
	}
	if len(arms) != 1 {
		t.Fatalf("job run has %d arm runs, want 1 (runs continue, not restart, after a failover)", len(arms))
	}
	arm := arms[0]
	if arm.Info.Status != tracking.StatusFinished {
		t.Errorf("arm run status %s, want FINISHED", arm.Info.Status)
	}
	hist, err := store.GetMetricHistory(ctx, arm.Info.RunID, tracking.MetricRoundSeconds)
	if err != nil {
		t.Fatal(err)
	}
	perStep := map[int64]int{}
	for _, m := range hist {
		perStep[m.Step]++
	}
	for r := 1; r <= rounds; r++ {
		switch n := perStep[int64(r)]; {
		case n == 1:
		case n == 0 && tagOf(arm, fmt.Sprintf("cohort.round_%d.status", r)) != "":
			t.Logf("round %d committed before the crash, its metrics marked: %s", r, tagOf(arm, fmt.Sprintf("cohort.round_%d.status", r)))
		default:
			t.Errorf("round %d logged %d times on the arm run, want once", r, n)
		}
	}
	if len(perStep) > rounds {
		t.Errorf("arm run has round_seconds at steps %v, want 1..%d", perStep, rounds)
	}
	fo, err := store.GetMetricHistory(ctx, arm.Info.RunID, server.MetricFailover)
	if err != nil || len(fo) == 0 {
		t.Fatalf("arm run has no %s metric (%v): the gap is not shown", server.MetricFailover, err)
	}
	if !strings.Contains(tagOf(arm, server.TagFailover), "resumed at round") {
		t.Errorf("arm run tag %s = %q", server.TagFailover, tagOf(arm, server.TagFailover))
	}
	sites, err := store.ChildRuns(ctx, arm.Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range sites {
		names = append(names, tagOf(s, tracking.TagSite))
		sfo, _ := store.GetMetricHistory(ctx, s.Info.RunID, server.MetricFailover)
		if len(sfo) == 0 {
			t.Errorf("site run %s has no failover metric", s.Info.RunName)
		}
		acc, _ := store.GetMetricHistory(ctx, s.Info.RunID, "accepted")
		steps := map[int64]bool{}
		for _, m := range acc {
			steps[m.Step] = true
		}
		if len(steps) < rounds-1 {
			t.Errorf("site run %s reported %d rounds, want about %d", s.Info.RunName, len(steps), rounds)
		}
	}
	sort.Strings(names)
	if len(sites) != 2 {
		t.Errorf("arm run has site runs %v, want one per site (2): a failover must not open new ones", names)
	}
	acc, _ := store.GetMetricHistory(ctx, arm.Info.RunID, tracking.MetricTestAccuracy)
	if len(acc) == 0 || acc[len(acc)-1].Value < 0.5 {
		t.Errorf("final test accuracy %v, want above 0.5", acc)
	}
}

// startDiskNode opens the one-voter node "solo" on disk in dir — the
// production path, ha.Open with raft-boltdb and file snapshots (a single
// voter needs no raft network) — and serves its coordinator over loopback
// TCP on the switchboard.
func startDiskNode(t *testing.T, sb *switchboard, dir string, d coordDeps) *haNode {
	t.Helper()
	const id = "solo"
	node, err := ha.Open(ha.Config{ID: id, Peers: []ha.Peer{{ID: id, GRPCAddr: target(id)}}, DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	lis, tgt := sb.listenTCP(t, id)
	n := &haNode{id: id, node: node, grpc: tgt}
	n.stop = serveCoordinator(t, id, lis, node, d, true, func() { sb.down(id, lis) })
	return n
}

// startSites runs the two sites of haJob against targets until the test
// ends.
func startSites(t *testing.T, ctx context.Context, sb *switchboard, targets []string, d coordDeps) {
	t.Helper()
	ctx, stop := context.WithCancel(ctx)
	wait := startAgents(t, ctx, []string{"site-1", "site-2"}, d.ds, targets, sb.dialOptions(), d.log, haAgents)
	t.Cleanup(func() { stopWithin(t, "stopping the site agents", func() { stop(); wait() }) })
}

// TestCoordinatorRestartResumesJob kills a one-voter coordinator mid-job
// and starts it again on the same data dir: the job resumes at the round
// after the last committed one, in the same tracking runs, and finishes
// with all its rounds.
func TestCoordinatorRestartResumesJob(t *testing.T) {
	src, ds, store, log := haSetup(t)
	d := coordDeps{ds: ds, store: store, log: log}
	sb := newSwitchboard()
	dir := t.TempDir()
	a := startDiskNode(t, sb, dir, d)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	startSites(t, ctx, sb, []string{a.grpc}, d)

	sub := leaderCall(ctx, t, sb, []string{a.grpc}, func(ctx context.Context, c pb.JobsServiceClient) (*pb.SubmitJobResponse, error) {
		return c.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: src})
	})
	id := sub.GetJob().GetJobId()
	waitRound(t, a, id, 3)
	a.stop()
	before, _, _ := a.node.FSM().LastRound(id, "fedavg")

	b := startDiskNode(t, sb, dir, d)
	got := waitDone(ctx, t, sb, []*haNode{b}, []string{b.grpc}, id)
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after the restart: %v %s", got.GetState(), got.GetError())
	}
	last, _, _ := b.node.FSM().LastRound(id, "fedavg")
	if last != 8 {
		t.Errorf("last committed round %d, want 8", last)
	}
	t.Logf("killed after round %d committed; resumed and finished 8 rounds", before)
	checkTracking(t, store, got.GetTrackingRunId(), 8)
}

// clusterJob is a job running on a three-coordinator cluster in memory
// with two sites that list all three.
type clusterJob struct {
	*haCluster
	nodes []*haNode
	id    string
	ctx   context.Context
}

// startClusterJob starts three coordinators (node i logging into
// storeFor(i)) and two sites, submits src to the leader and returns once
// it is accepted. Everything stops when the test ends.
func startClusterJob(t *testing.T, src []byte, ds *Datasets, storeFor func(int) *tracking.SQLiteStore, log *slog.Logger) *clusterJob {
	t.Helper()
	cj := &clusterJob{haCluster: newHACluster(t, 3, testRaft)}
	for i := range cj.peers {
		cj.nodes = append(cj.nodes, cj.start(i, coordDeps{ds: ds, store: storeFor(i), log: log}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	cj.ctx = ctx
	startSites(t, ctx, cj.sb, cj.targets(), coordDeps{ds: ds, log: log})
	sub := leaderCall(ctx, t, cj.sb, cj.targets(), func(ctx context.Context, c pb.JobsServiceClient) (*pb.SubmitJobResponse, error) {
		return c.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: src})
	})
	cj.id = sub.GetJob().GetJobId()
	return cj
}

// others returns the nodes but n.
func (cj *clusterJob) others(n *haNode) []*haNode {
	var out []*haNode
	for _, m := range cj.nodes {
		if m != n {
			out = append(out, m)
		}
	}
	return out
}

// TestClusterLeaderKilledMidRound runs a job on a three-coordinator
// cluster, kills the leader in the middle of a round, and checks that the
// job finishes on the new leader with every round committed once, the
// sites having found the new leader by themselves.
func TestClusterLeaderKilledMidRound(t *testing.T) {
	src, ds, store, log := haSetup(t)
	cj := startClusterJob(t, src, ds, func(int) *tracking.SQLiteStore { return store }, log)
	ctx, id, nodes := cj.ctx, cj.id, cj.nodes
	leader := waitLeader(t, nodes)
	// A follower refuses the Jobs API and site joins, naming the leader.
	for _, n := range cj.others(leader) {
		cc, err := grpc.NewClient(n.grpc, cj.sb.dialOptions()...)
		if err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err = pb.NewJobsServiceClient(cc).ListJobs(cctx, &pb.ListJobsRequest{})
		_, jerr := pb.NewCoordinatorServiceClient(cc).Join(cctx, &pb.JoinRequest{SiteName: "x"})
		cancel()
		cc.Close()
		for _, e := range []error{err, jerr} {
			if hint := leaderHint(e); status.Code(e) != codes.Unavailable || hint != leader.grpc {
				t.Errorf("call on follower %s: %v (leader hint %q), want Unavailable naming %s", n.id, e, hint, leader.grpc)
			}
		}
	}
	waitRound(t, leader, id, 3)
	r0, _, _ := leader.node.FSM().LastRound(id, "fedavg")
	waitStarted(ctx, t, cj.sb, leader, id, r0+1) // kill it mid-round
	killed := time.Now()
	leader.stop()
	r0, _, _ = leader.node.FSM().LastRound(id, "fedavg")
	rest := cj.others(leader)
	// The next round commits on the new leader.
	waitRound(t, rest[0], id, r0+1)
	t.Logf("leader %s killed after round %d; round %d committed on the new leader %.2fs later", leader.id, r0, r0+1, time.Since(killed).Seconds())

	got := waitDone(ctx, t, cj.sb, rest, cj.targets(), id)
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after the failover: %v %s", got.GetState(), got.GetError())
	}
	for _, n := range rest {
		if last, _, _ := n.node.FSM().LastRound(id, "fedavg"); last != 8 {
			t.Errorf("%s: last committed round %d, want 8", n.id, last)
		}
	}
	checkTracking(t, store, got.GetTrackingRunId(), 8)
	// The killed node rejoins on its stores and catches up.
	back := cj.start(slices.Index(nodes, leader), coordDeps{ds: ds, store: store, log: log})
	waitRound(t, back, id, 8)
	// The models live in the nodes' blob stores, out of the log: every
	// node, the rejoined one included, holds the last one in its own.
	for _, n := range append(slices.Clone(rest), back) {
		_, d, _ := n.node.FSM().LastRound(id, "fedavg")
		rc, err := n.node.FSM().OpenModel(d)
		if err != nil {
			t.Errorf("%s: OpenModel(round 8's model) = %v", n.id, err)
			continue
		}
		rc.Close()
		if !n.node.Blobs().Has(blobs.Digest(d)) {
			t.Errorf("%s: round 8's model %.12s is not in its blob store", n.id, d)
		}
	}
	jobStatus := func() ha.JobStatus {
		j, _ := back.node.FSM().Job(id)
		return j.Status
	}
	if !waitFor(waitTimeout, func() []<-chan struct{} { return []<-chan struct{}{back.node.FSM().Changed()} },
		func() bool { return jobStatus() == ha.StatusSucceeded }) {
		t.Fatalf("the rejoined %s holds the job as %q, want succeeded", back.id, jobStatus())
	}
	var names []string
	for _, s := range rest[0].node.FSM().Sites() {
		names = append(names, s.Name)
	}
	if strings.Join(names, ",") != "site-1,site-2" {
		t.Errorf("site registry on the new leader: %v, want site-1 and site-2", names)
	}
}

func leaderHint(err error) string {
	addr, _ := pb.NotLeader(err)
	return addr
}

func tagOf(r tracking.Run, key string) string {
	v, _ := r.Data.Tag(key)
	return v
}

// TestClusterNeedsOneTrackingStore: coordinators that each log into their
// own tracking store cannot continue each other's runs; the new leader
// says so instead of logging into runs it does not have.
func TestClusterNeedsOneTrackingStore(t *testing.T) {
	src, ds, _, log := haSetup(t)
	cj := startClusterJob(t, src, ds, func(int) *tracking.SQLiteStore {
		own, err := tracking.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "own.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { own.Close() })
		return own
	}, log)
	leader := waitLeader(t, cj.nodes)
	waitRound(t, leader, cj.id, 2)
	leader.stop()
	got := waitDone(cj.ctx, t, cj.sb, cj.others(leader), cj.targets(), cj.id)
	if got.GetState() != pb.JobState_JOB_STATE_FAILED || !strings.Contains(got.GetError(), "must share one tracking store") {
		t.Errorf("job resumed without its tracking runs: %v %q, want failed saying the coordinators must share one tracking store", got.GetState(), got.GetError())
	}
}

// TestClusterHandoff: a leader that hands over (a planned stop) has the
// next leader take the job over and its sites sent there, and the job
// finishes with its rounds once each.
func TestClusterHandoff(t *testing.T) {
	src, ds, store, log := haSetup(t)
	cj := startClusterJob(t, src, ds, func(int) *tracking.SQLiteStore { return store }, log)
	leader := waitLeader(t, cj.nodes)
	waitRound(t, leader, cj.id, 3)
	stopWithin(t, "handing the lead over", func() {
		if err := leader.node.Handoff(); err != nil {
			t.Errorf("Handoff: %v", err)
		}
	})
	handed := time.Now()
	r0, _, _ := leader.node.FSM().LastRound(cj.id, "fedavg")
	next := cj.others(leader)[0]
	waitRound(t, next, cj.id, r0+1)
	t.Logf("handed over after round %d; round %d committed %.2fs later", r0, r0+1, time.Since(handed).Seconds())
	leader.stop()
	got := waitDone(cj.ctx, t, cj.sb, cj.others(leader), cj.targets(), cj.id)
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after the handoff: %v %s", got.GetState(), got.GetError())
	}
	checkTracking(t, store, got.GetTrackingRunId(), 8)
}
