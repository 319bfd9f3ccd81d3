package federation

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/server/ha"
	"github.com/cohortfl/cohort/server/prepare"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

// haNode is one coordinator of an HA test: its Raft node and its gRPC
// server, stopped together as a crash would stop them.
type haNode struct {
	id   string
	node *ha.Node
	grpc string
	stop func()
}

// freeAddrs returns n loopback addresses with ports free now, for
// servers started later. They are drawn from 10000–19999, below Linux's
// ephemeral range (32768 on) where tests of other packages running in
// parallel get their ":0" ports, and below cmd/cohort's 20000–31999, so
// that none of them takes one in between.
func freeAddrs(t testing.TB, n int) []string {
	t.Helper()
	seen := map[string]bool{}
	var out []string
	for try := 0; len(out) < n; try++ {
		if try == 1000 {
			t.Fatal("no free ports in 10000–19999")
		}
		addr := fmt.Sprintf("127.0.0.1:%d", 10000+rand.IntN(10000))
		l, err := net.Listen("tcp", addr)
		if err != nil || seen[addr] {
			continue
		}
		l.Close()
		seen[addr] = true
		out = append(out, addr)
	}
	return out
}

// threePeers returns the peers of a three-node cluster on loopback, their
// gRPC addresses and a folder for their data dirs.
func threePeers(t testing.TB) ([]ha.Peer, []string, string) {
	addrs := freeAddrs(t, 6)
	var peers []ha.Peer
	var grpcAddrs []string
	for i := range 3 {
		peers = append(peers, ha.Peer{ID: fmt.Sprintf("coord-%d", i+1), RaftAddr: addrs[2*i], GRPCAddr: addrs[2*i+1]})
		grpcAddrs = append(grpcAddrs, addrs[2*i+1])
	}
	return peers, grpcAddrs, t.TempDir()
}

// startHANode opens the Raft node of peers[i] in dir and serves a
// coordinator on its gRPC address.
func startHANode(t testing.TB, peers []ha.Peer, i int, dir string, ds *Datasets, store *tracking.SQLiteStore, log *slog.Logger) *haNode {
	return startHANodeWith(t, ha.Config{
		HeartbeatTimeout: 150 * time.Millisecond, ElectionTimeout: 150 * time.Millisecond,
		LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
	}, peers, i, dir, ds, store, log)
}

// startHANodeWith is startHANode with cfg's timeouts (zero: raft's defaults).
func startHANodeWith(t testing.TB, cfg ha.Config, peers []ha.Peer, i int, dir string, ds *Datasets, store *tracking.SQLiteStore, log *slog.Logger) *haNode {
	t.Helper()
	p := peers[i]
	cfg.ID, cfg.Peers, cfg.DataDir = p.ID, peers, filepath.Join(dir, p.ID)
	node, err := ha.Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	coord, err := server.New(server.Config{Logger: log.With("node", p.ID), SiteWait: 30 * time.Second},
		server.Deps{Tracker: store, Replica: node,
			Models: &prepare.Models{Trainers: &train.Factory{}, Test: ds.Test, Shape: ds.Pooled.Shape, Classes: ds.Pooled.Classes}})
	if err != nil {
		t.Fatal(err)
	}
	lis := listenRetry(t, p.GRPCAddr)
	gs := grpc.NewServer()
	coord.Register(gs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	go func() { defer wg.Done(); _ = coord.Run(ctx) }()
	var once sync.Once
	n := &haNode{id: p.ID, node: node, grpc: p.GRPCAddr}
	n.stop = func() {
		once.Do(func() {
			gs.Stop() // connections drop at once, as in a crash
			cancel()
			wg.Wait()
			if err := node.Close(); err != nil {
				t.Error(err)
			}
		})
	}
	t.Cleanup(n.stop)
	return n
}

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

// leaderCall makes call on whichever of addrs leads (followers refuse).
func leaderCall[T any](ctx context.Context, t testing.TB, addrs []string, call func(context.Context, pb.JobsServiceClient) (T, error)) T {
	t.Helper()
	var last error
	for ctx.Err() == nil {
		for _, a := range addrs {
			cc, err := grpc.NewClient(a, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no coordinator of %v answered: %v", addrs, last)
	var zero T
	return zero
}

// waitRound waits until the job's arm has committed round r on node n.
func waitRound(t testing.TB, n *haNode, jobID string, r int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		if last, _, err := n.node.FSM().LastRound(jobID, "fedavg"); err == nil && last >= r {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("round %d of job %s not committed on %s within 60s", r, jobID, n.id)
}

// waitDone waits for the job to end and returns it.
func waitDone(ctx context.Context, t *testing.T, addrs []string, jobID string) *pb.Job {
	t.Helper()
	for {
		j := leaderCall(ctx, t, addrs, func(ctx context.Context, c pb.JobsServiceClient) (*pb.Job, error) {
			r, err := c.GetJob(ctx, &pb.GetJobRequest{JobId: jobID})
			return r.GetJob(), err
		})
		switch j.GetState() {
		case pb.JobState_JOB_STATE_SUCCEEDED, pb.JobState_JOB_STATE_FAILED, pb.JobState_JOB_STATE_CANCELLED:
			return j
		}
		if ctx.Err() != nil {
			t.Fatalf("job %s still %v", jobID, j.GetState())
		}
		time.Sleep(100 * time.Millisecond)
	}
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

// TestCoordinatorRestartResumesJob kills a one-voter coordinator mid-job
// and starts it again on the same data dir: the job resumes at the round
// after the last committed one, in the same tracking runs, and finishes
// with all its rounds.
func TestCoordinatorRestartResumesJob(t *testing.T) {
	src, ds, store, log := haSetup(t)
	addrs := freeAddrs(t, 2)
	peers := []ha.Peer{{ID: "solo", RaftAddr: addrs[0], GRPCAddr: addrs[1]}}
	dir := t.TempDir()
	a := startHANode(t, peers, 0, dir, ds, store, log)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agentsCtx, stopAgents := context.WithCancel(ctx)
	wait := startAgents(t, agentsCtx, []string{"site-1", "site-2"}, ds, addrs[1:], log, client.Config{BackoffInitial: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	defer func() { stopAgents(); wait() }()

	sub := leaderCall(ctx, t, addrs[1:], func(ctx context.Context, c pb.JobsServiceClient) (*pb.SubmitJobResponse, error) {
		return c.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: src})
	})
	id := sub.GetJob().GetJobId()
	waitRound(t, a, id, 3)
	a.stop()
	before, _, _ := a.node.FSM().LastRound(id, "fedavg")

	b := startHANode(t, peers, 0, dir, ds, store, log)
	got := waitDone(ctx, t, addrs[1:], id)
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

// clusterJob is a job running on a three-coordinator cluster with two
// sites that list all three.
type clusterJob struct {
	nodes     []*haNode
	peers     []ha.Peer
	dir       string
	grpcAddrs []string
	id        string
	ctx       context.Context
}

// startClusterJob starts three coordinators (node i logging into
// storeFor(i)) and two sites, submits src to the leader and returns once
// it is accepted. Everything stops when the test ends.
func startClusterJob(t *testing.T, src []byte, ds *Datasets, storeFor func(int) *tracking.SQLiteStore, log *slog.Logger) *clusterJob {
	t.Helper()
	peers, grpcAddrs, dir := threePeers(t)
	cj := &clusterJob{peers: peers, dir: dir, grpcAddrs: grpcAddrs}
	for i := range peers {
		cj.nodes = append(cj.nodes, startHANode(t, peers, i, dir, ds, storeFor(i), log))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	agentsCtx, stopAgents := context.WithCancel(ctx)
	wait := startAgents(t, agentsCtx, []string{"site-1", "site-2"}, ds, grpcAddrs, log, client.Config{BackoffInitial: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	t.Cleanup(func() { stopAgents(); wait(); cancel() })
	cj.ctx = ctx
	sub := leaderCall(ctx, t, grpcAddrs, func(ctx context.Context, c pb.JobsServiceClient) (*pb.SubmitJobResponse, error) {
		return c.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: src})
	})
	cj.id = sub.GetJob().GetJobId()
	return cj
}

// leader returns the node that leads now, failing the test if none does.
func (cj *clusterJob) leader(t *testing.T) *haNode {
	t.Helper()
	for _, n := range cj.nodes {
		if n.node.IsLeader() {
			return n
		}
	}
	t.Fatal("no coordinator leads")
	return nil
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
	ctx, id, nodes, peers, dir, grpcAddrs := cj.ctx, cj.id, cj.nodes, cj.peers, cj.dir, cj.grpcAddrs
	leader := cj.leader(t)
	// A follower refuses the Jobs API and site joins, naming the leader.
	for _, n := range nodes {
		if n == leader {
			continue
		}
		cc, err := grpc.NewClient(n.grpc, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = pb.NewJobsServiceClient(cc).ListJobs(ctx, &pb.ListJobsRequest{})
		_, jerr := pb.NewCoordinatorServiceClient(cc).Join(ctx, &pb.JoinRequest{SiteName: "x"})
		cc.Close()
		for _, e := range []error{err, jerr} {
			if hint := leaderHint(e); status.Code(e) != codes.Unavailable || hint != leader.grpc {
				t.Errorf("call on follower %s: %v (leader hint %q), want Unavailable naming %s", n.id, e, hint, leader.grpc)
			}
		}
	}
	waitRound(t, leader, id, 3)
	time.Sleep(80 * time.Millisecond) // into round 4, round 3 logged
	killed := time.Now()
	leader.stop()
	r0, _, _ := leader.node.FSM().LastRound(id, "fedavg")
	rest := cj.others(leader)
	// The next round commits on the new leader.
	waitRound(t, rest[0], id, r0+1)
	t.Logf("leader %s killed after round %d; round %d committed on the new leader %.2fs later", leader.id, r0, r0+1, time.Since(killed).Seconds())

	got := waitDone(ctx, t, grpcAddrs, id)
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after the failover: %v %s", got.GetState(), got.GetError())
	}
	for _, n := range rest {
		if last, _, _ := n.node.FSM().LastRound(id, "fedavg"); last != 8 {
			t.Errorf("%s: last committed round %d, want 8", n.id, last)
		}
	}
	checkTracking(t, store, got.GetTrackingRunId(), 8)
	// The killed node rejoins from its data dir and catches up.
	back := startHANode(t, peers, slices.Index(nodes, leader), dir, ds, store, log)
	waitRound(t, back, id, 8)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		j, err := back.node.FSM().Job(id)
		if err == nil && j.Status == ha.StatusSucceeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the rejoined %s holds the job as %v (%v), want succeeded", back.id, j.Status, err)
		}
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
	leader := cj.leader(t)
	waitRound(t, leader, cj.id, 2)
	leader.stop()
	got := waitDone(cj.ctx, t, cj.grpcAddrs, cj.id)
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
	leader := cj.leader(t)
	waitRound(t, leader, cj.id, 3)
	if err := leader.node.Handoff(); err != nil {
		t.Fatal(err)
	}
	handed := time.Now()
	r0, _, _ := leader.node.FSM().LastRound(cj.id, "fedavg")
	next := cj.others(leader)[0]
	waitRound(t, next, cj.id, r0+1)
	t.Logf("handed over after round %d; round %d committed %.2fs later", r0, r0+1, time.Since(handed).Seconds())
	leader.stop()
	got := waitDone(cj.ctx, t, cj.grpcAddrs, cj.id)
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after the handoff: %v %s", got.GetState(), got.GetError())
	}
	checkTracking(t, store, got.GetTrackingRunId(), 8)
}
