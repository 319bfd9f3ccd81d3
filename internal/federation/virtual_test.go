package federation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

// virtualJob is a simulation of 20M virtual clients, perRound a round,
// trained by workers workers, on the Fashion-MNIST subset.
func virtualJob(workers, perRound, rounds int) string {
	return fmt.Sprintf(`
name: virtual-tiny
seed: 5
data: {dataset: fashion-mnist, path: %q, partition: {kind: dirichlet, alpha: 0.5}}
model: {kind: logreg}
sites: {virtual: 20000000, per_round: %d, workers: %d}
rounds: %d
train: {epochs: 1, batch_size: 8, lr: 0.05}
arms:
  - {name: fedavg, strategy: fedavg}
deadline: {round: 1m}
`, subset, perRound, workers, rounds)
}

// runVirtual runs a virtual-client job and returns its comparison.
func runVirtual(t *testing.T, src string) (*Result, string) {
	t.Helper()
	var progress bytes.Buffer
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, []byte(src), Options{DBPath: filepath.Join(t.TempDir(), "c.db"), Progress: &progress, Logger: log, Version: "test"})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	if res.Job.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state %v: %s", res.Job.GetState(), res.Job.GetError())
	}
	return res, progress.String()
}

// TestVirtualWorkersSameAccuracy is issue 17's acceptance check: the same
// seed gives the same accuracy every round whether one, two or three
// workers train the round's virtual clients.
func TestVirtualWorkersSameAccuracy(t *testing.T) {
	const rounds = 3
	var want, wantLoss []tracking.Metric
	for _, workers := range []int{1, 2, 3} {
		res, out := runVirtual(t, virtualJob(workers, 60, rounds))
		if len(res.Comparison.Arms) != 1 {
			t.Fatalf("%d workers: comparison has %d arms, want 1", workers, len(res.Comparison.Arms))
		}
		if line := fmt.Sprintf("fedavg   %d/%d  sites %d ", rounds, rounds, workers); !strings.Contains(out, line) {
			t.Errorf("%d workers: progress lacks %q:\n%s", workers, line, out)
		}
		got := res.Comparison.Arms[0].AccuracyHistory
		loss := testLoss(t, res)
		t.Logf("%d workers: accuracy by round %v, loss %v", workers, got, loss)
		if len(got) != rounds+1 { // the initial model, then each round
			t.Fatalf("%d workers: %d accuracy points, want %d", workers, len(got), rounds+1)
		}
		if want == nil {
			want, wantLoss = got, loss
			if got[rounds].Value < 0.3 {
				t.Errorf("accuracy after %d rounds = %.4f, want ≥ 0.3 (the clients learn)", rounds, got[rounds].Value)
			}
			continue
		}
		for i := range got {
			if math.Abs(got[i].Value-want[i].Value) > 1e-6 {
				t.Errorf("%d workers: round %d accuracy = %.6f, want %.6f (1 worker)", workers, got[i].Step, got[i].Value, want[i].Value)
			}
		}
		// The loss tells weights apart that the accuracy over 1,000 test
		// samples does not.
		for i := range min(len(loss), len(wantLoss)) {
			if math.Abs(loss[i].Value-wantLoss[i].Value) > 1e-7*wantLoss[i].Value {
				t.Errorf("%d workers: round %d test loss = %.9f, want %.9f (1 worker) within 1e-7 relative", workers, loss[i].Step, loss[i].Value, wantLoss[i].Value)
			}
		}
		if len(loss) != len(wantLoss) {
			t.Errorf("%d workers: %d test-loss points, want %d", workers, len(loss), len(wantLoss))
		}
	}
}

// testLoss reads the arm's test loss by round from the job's tracking
// store.
func testLoss(t *testing.T, res *Result) []tracking.Metric {
	t.Helper()
	ctx := context.Background()
	store, err := tracking.OpenSQLite(ctx, res.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h, err := store.GetMetricHistory(ctx, res.Comparison.Arms[0].RunID, tracking.MetricTestLoss)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// virtualWorker is a worker agent whose machine a test can take away:
// after its first after training calls, its next one either fails (fail)
// or cuts the worker's connections, refuses new ones and hangs until the
// task is cancelled: a worker that dies mid-round, after it received its
// task and before it answers.
type virtualWorker struct {
	name  string
	after int64 // training calls that succeed; negative: all of them
	fail  bool

	calls atomic.Int64
	mu    sync.Mutex
	dead  bool
	conns []net.Conn
}

func (w *virtualWorker) dial(ctx context.Context, addr string) (net.Conn, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dead {
		return nil, fmt.Errorf("%s's machine is gone", w.name)
	}
	c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err == nil {
		w.conns = append(w.conns, c)
	}
	return c, err
}

// cut takes the worker's machine away: its connections close and new
// ones are refused.
func (w *virtualWorker) cut() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.dead = true
	for _, c := range w.conns {
		_ = c.Close()
	}
}

// Trainer implements client.TrainerFactory.
func (w *virtualWorker) Trainer(cfg train.Config) (train.Trainer, error) {
	tr, err := (&train.Factory{}).Trainer(cfg)
	if err != nil {
		return nil, err
	}
	return dyingTrainer{Trainer: tr, w: w}, nil
}

type dyingTrainer struct {
	train.Trainer
	w *virtualWorker
}

func (d dyingTrainer) Train(ctx context.Context, m *model.Weights, ds *data.Dataset, cfg train.TrainConfig) (*model.Weights, train.TrainResult, error) {
	if d.w.after < 0 || d.w.calls.Add(1) <= d.w.after {
		return d.Trainer.Train(ctx, m, ds, cfg)
	}
	if !d.w.fail {
		d.w.cut()
		<-ctx.Done() // the session ended: the agent cancels its tasks
	}
	return nil, train.TrainResult{}, errors.New("the worker died")
}

// runWorkers runs the job src on a coordinator over loopback TCP with
// workers, and returns the job's events and its final state.
func runWorkers(t *testing.T, src []byte, workers []*virtualWorker) (evs []*pb.JobEvent, j *pb.Job, dbPath string) {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	spec, err := job.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := Load(context.Background(), spec, "")
	if err != nil {
		t.Fatal(err)
	}
	dbPath = filepath.Join(t.TempDir(), "c.db")
	store, err := tracking.OpenSQLite(context.Background(), dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	stop := startCoordinator(t, "coord", lis, coordDeps{ds: ds, store: store, log: log})
	defer stop()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	defer stopWithin(t, "stopping the workers", func() { cancel(); wg.Wait() })
	for _, w := range workers {
		dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(w.dial)}
		a, err := client.New(client.Config{Name: w.name, Targets: []string{addr}, DialOptions: dial, Logger: log},
			siteSource{train: ds.Sites[w.name].Train}, w, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Run(ctx) }()
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	jobs := pb.NewJobsServiceClient(cc)
	resp, err := jobs.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: src})
	if err != nil {
		t.Fatal(err)
	}
	st, err := jobs.WatchJob(ctx, &pb.WatchJobRequest{JobId: resp.GetJob().GetJobId()})
	if err != nil {
		t.Fatal(err)
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			break
		}
		evs = append(evs, ev)
	}
	got, err := jobs.GetJob(ctx, &pb.GetJobRequest{JobId: resp.GetJob().GetJobId()})
	if err != nil {
		t.Fatal(err)
	}
	return evs, got.GetJob(), dbPath
}

// siteMetric returns the history of key on site's run in the first arm
// of the job whose tracking run is jobRunID, in the store at dbPath.
func siteMetric(t *testing.T, dbPath, jobRunID, site, key string) []tracking.Metric {
	t.Helper()
	ctx := context.Background()
	store, err := tracking.OpenSQLite(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	arms, err := store.ChildRuns(ctx, jobRunID)
	if err != nil || len(arms) == 0 {
		t.Fatalf("job run %s: %d arm runs (%v), want 1", jobRunID, len(arms), err)
	}
	sites, err := store.ChildRuns(ctx, arms[0].Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sites {
		if tagOf(s, tracking.TagSite) == site {
			h, err := store.GetMetricHistory(ctx, s.Info.RunID, key)
			if err != nil {
				t.Fatal(err)
			}
			return h
		}
	}
	t.Fatalf("arm run has no site run for %s", site)
	return nil
}

// workers returns n workers, worker-1 … worker-n, that never die.
func workers(n int) []*virtualWorker {
	ws := make([]*virtualWorker, n)
	for i := range ws {
		ws[i] = &virtualWorker{name: fmt.Sprintf("worker-%d", i+1), after: -1}
	}
	return ws
}

// roundFacts are what a job's events say of each round.
type roundFacts struct {
	sites, samples, accuracy, loss float64
}

// facts reads, from a job's events, each committed round's workers,
// samples (summed over the updates aggregated), test accuracy and loss.
func facts(evs []*pb.JobEvent) []roundFacts {
	samples := map[int32]float64{}
	var out []roundFacts
	for _, ev := range evs {
		m := ev.GetMetrics()
		switch ev.GetKind() {
		case "site_reported":
			samples[ev.GetRound()] += m[tracking.MetricNumSamples]
		case "round_committed":
			out = append(out, roundFacts{sites: m[tracking.MetricSites], samples: samples[ev.GetRound()],
				accuracy: m[tracking.MetricTestAccuracy], loss: m[tracking.MetricTestLoss]})
		}
	}
	return out
}

// reassigned returns a job's virtual_reassigned events.
func reassigned(evs []*pb.JobEvent) []*pb.JobEvent {
	var out []*pb.JobEvent
	for _, ev := range evs {
		if ev.GetKind() == "virtual_reassigned" {
			out = append(out, ev)
		}
	}
	return out
}

// virtualDiesJob is a job of 3 virtual clients a worker a round on 3
// workers, with the default quorum (every worker).
func virtualDiesJob(rounds int, extra string) []byte {
	return []byte(fmt.Sprintf(`
name: virtual-dies
seed: 3
data: {dataset: fashion-mnist, path: %q}
model: {kind: logreg}
sites: {virtual: 1000000, per_round: 9, workers: 3%s}
rounds: %d
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 1m, retries: 0}
`, subset, extra, rounds))
}

// TestVirtualWorkerDiesClientsReassigned is issue 17's failure check: a
// worker that dies in round 2, after it received its task and before it
// answers, hands its 3 clients to worker-1, and the round commits with
// every sampled client: the same samples, accuracy and loss as the run
// where no worker died.
func TestVirtualWorkerDiesClientsReassigned(t *testing.T) {
	src := virtualDiesJob(2, "")
	evs, j, _ := runWorkers(t, src, workers(3))
	if j.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("no worker dies: job %v: %s", j.GetState(), j.GetError())
	}
	want := facts(evs)

	ws := workers(3)
	ws[1].after = 3 // worker-2 trains its 3 clients of round 1, then dies
	evs, j, db := runWorkers(t, src, ws)
	if j.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("worker-2 dies: job %v: %s; want it to succeed, worker-2's clients trained by another worker", j.GetState(), j.GetError())
	}
	got := facts(evs)
	t.Logf("by round, no worker dies: %+v; worker-2 dies: %+v", want, got)
	if len(got) != 2 || len(want) != 2 {
		t.Fatalf("committed rounds = %d with worker-2 dying, %d without; want 2", len(got), len(want))
	}
	for i := range got {
		g, w := got[i], want[i]
		if g.sites != 3 || g.samples != w.samples || g.samples < 9 {
			t.Errorf("round %d: %v updates of %v samples, want 3 of %v (the run where no worker died)", i+1, g.sites, g.samples, w.samples)
		}
		// The slice's update is the one worker-2 would have sent; only
		// the order the coordinator folds the updates in (their arrival,
		// in float32) can differ, as between any two runs.
		if math.Abs(g.accuracy-w.accuracy) > 1e-6 || math.Abs(g.loss-w.loss) > 1e-7*w.loss {
			t.Errorf("round %d: accuracy %.6f, loss %.9f; want %.6f, %.9f (no worker died) within 1e-7 relative", i+1, g.accuracy, g.loss, w.accuracy, w.loss)
		}
	}
	rs := reassigned(evs)
	if len(rs) != 1 {
		t.Fatalf("%d virtual_reassigned events, want 1: %v", len(rs), rs)
	}
	r := rs[0]
	if r.GetRound() != 2 || r.GetSite() != "worker-2" || r.GetMetrics()[tracking.MetricVirtualReassigned] != 3 || !strings.Contains(r.GetMessage(), "went to worker-1") {
		t.Errorf("reassignment: round %d, site %q, %v clients, %q; want round 2, worker-2's 3 clients to worker-1",
			r.GetRound(), r.GetSite(), r.GetMetrics()[tracking.MetricVirtualReassigned], r.GetMessage())
	}
	// worker-2's run logs the round's update for its clients, marked as
	// trained by another worker; worker-1's, its own only.
	for _, c := range []struct {
		site string
		want []float64
	}{{"worker-2", []float64{3}}, {"worker-1", nil}} {
		var got []float64
		for _, m := range siteMetric(t, db, j.GetTrackingRunId(), c.site, tracking.MetricVirtualReassigned) {
			if m.Step != 2 {
				t.Errorf("%s: %s at round %d, want round 2 only", c.site, tracking.MetricVirtualReassigned, m.Step)
			}
			got = append(got, m.Value)
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("%s's %s (-want +got):\n%s", c.site, tracking.MetricVirtualReassigned, diff)
		}
		if n := siteMetric(t, db, j.GetTrackingRunId(), c.site, tracking.MetricNumSamples); len(n) != 2 {
			t.Errorf("%s's run logs samples for %d rounds, want 2", c.site, len(n))
		}
	}

	// worker-2 dies on its first client, and worker-1, which takes its
	// clients, fails on its fourth (its own or worker-2's): what worker-1
	// has not answered for moves on to worker-3, and round 1 still counts
	// every client.
	ws = workers(3)
	ws[1].after = 0
	ws[0].after, ws[0].fail = 3, true
	evs, j, _ = runWorkers(t, virtualDiesJob(1, ""), ws)
	if j.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("worker-2, then worker-1 die: job %v: %s; want it to succeed, their clients trained by worker-3", j.GetState(), j.GetError())
	}
	if got := facts(evs); len(got) != 1 || got[0].samples != want[0].samples || got[0].sites != 3 ||
		math.Abs(got[0].loss-want[0].loss) > 1e-7*want[0].loss {
		t.Errorf("worker-2, then worker-1 die: round 1 = %+v, want 3 updates, %v samples, loss %.9f (no worker died)", got, want[0].samples, want[0].loss)
	}
	var moves []string
	for _, r := range reassigned(evs) {
		if r.GetSite() == "worker-2" {
			moves = append(moves, r.GetMessage()[strings.LastIndex(r.GetMessage(), " went to ")+len(" went to "):])
		}
	}
	if diff := cmp.Diff([]string{"worker-1", "worker-3"}, moves); diff != "" {
		t.Errorf("worker-2's clients went to (-want +got):\n%s", diff)
	}
	if n := len(reassigned(evs)); n != 2 && n != 3 {
		t.Errorf("%d reassignments, want 2 (worker-2's twice) or 3 (and worker-1's own, if its own task failed)", n)
	}
}

// TestVirtualWorkerDiesLater: a worker that dies in round 2 of 3, with
// sites.min_per_round 1: round 2 commits with its clients trained by the
// worker left, and round 3 gives that worker every client.
func TestVirtualWorkerDiesLater(t *testing.T) {
	ws := workers(2)
	ws[1].after = 4 // worker-2 trains its 4 clients of round 1, then dies
	src := []byte(strings.Replace(string(virtualDiesJob(3, ", min_per_round: 1")), "per_round: 9, workers: 3", "per_round: 8, workers: 2", 1))
	evs, j, _ := runWorkers(t, src, ws)
	if j.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v: %s; want it to succeed with the worker left", j.GetState(), j.GetError())
	}
	var sites []float64
	for _, f := range facts(evs) {
		sites = append(sites, f.sites)
	}
	if diff := cmp.Diff([]float64{2, 2, 1}, sites); diff != "" {
		t.Errorf("updates aggregated by round (-want +got):\n%s", diff)
	}
}

// TestVirtualAllWorkersDie: when every worker fails, each slice moves at
// most once per other worker and the round fails naming the workers and
// what to do.
func TestVirtualAllWorkersDie(t *testing.T) {
	ws := workers(3)
	for _, w := range ws {
		w.after, w.fail = 0, true
	}
	evs, j, _ := runWorkers(t, virtualDiesJob(1, ""), ws)
	if j.GetState() != pb.JobState_JOB_STATE_FAILED {
		t.Fatalf("job %v, want FAILED", j.GetState())
	}
	msg := j.GetError()
	for _, want := range []string{"no worker is left to train", "worker-1: ", "worker-2: ", "worker-3: ", "the worker died", "sites.workers"} {
		if !strings.Contains(msg, want) {
			t.Errorf("job error lacks %q: %s", want, msg)
		}
	}
	// 3 slices, each moved at most to the 2 other workers.
	if n := len(reassigned(evs)); n < 2 || n > 6 {
		t.Errorf("%d reassignments, want 2 to 6 (each of 3 slices at most twice)", n)
	}
}
