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

// dyingTrainers builds trainers that train normally for the first after
// calls, then announce (closing dying) and hang until the worker is
// stopped: a worker that dies mid-round.
type dyingTrainers struct {
	inner client.TrainerFactory
	after int64
	calls atomic.Int64
	once  sync.Once
	dying chan struct{}
	// release ends the hang, at the test's end.
	release chan struct{}
}

func (f *dyingTrainers) Trainer(cfg train.Config) (train.Trainer, error) {
	tr, err := f.inner.Trainer(cfg)
	if err != nil {
		return nil, err
	}
	return dyingTrainer{Trainer: tr, f: f}, nil
}

type dyingTrainer struct {
	train.Trainer
	f *dyingTrainers
}

func (d dyingTrainer) Train(ctx context.Context, w *model.Weights, ds *data.Dataset, cfg train.TrainConfig) (*model.Weights, train.TrainResult, error) {
	if d.f.calls.Add(1) > d.f.after {
		d.f.once.Do(func() { close(d.f.dying) })
		select {
		case <-ctx.Done():
		case <-d.f.release:
		}
		return nil, train.TrainResult{}, errors.New("the worker died")
	}
	return d.Trainer.Train(ctx, w, ds, cfg)
}

// TestVirtualWorkerDies: a worker that dies in round 2 loses its clients'
// updates for that round; with sites.min_per_round 1 the round commits
// with the other worker's, and the next round gives every client to the
// worker left.
func TestVirtualWorkerDies(t *testing.T) {
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	src := []byte(fmt.Sprintf(`
name: virtual-dies
seed: 3
data: {dataset: fashion-mnist, path: %q}
model: {kind: logreg}
sites: {virtual: 1000000, per_round: 8, workers: 2, min_per_round: 1}
rounds: 3
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 1m}
`, subset))
	spec, err := job.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := Load(context.Background(), spec, "")
	if err != nil {
		t.Fatal(err)
	}
	store, err := tracking.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "c.db"))
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
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wait := startAgents(t, ctx, []string{"worker-1"}, ds, []string{addr}, dial, log, client.Config{})
	defer stopWithin(t, "stopping worker-1", func() { cancel(); wait() })

	// worker-2 trains its 4 clients of round 1, then hangs on round 2's
	// first while the test cuts its connection and refuses new ones: the
	// worker's machine is gone.
	dying := &dyingTrainers{inner: &train.Factory{}, after: 4, dying: make(chan struct{}), release: make(chan struct{})}
	var link struct {
		sync.Mutex
		dead  bool
		conns []net.Conn
	}
	dial2 := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			link.Lock()
			defer link.Unlock()
			if link.dead {
				return nil, errors.New("worker-2's machine is gone")
			}
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err == nil {
				link.conns = append(link.conns, c)
			}
			return c, err
		})}
	w2, err := client.New(client.Config{Name: "worker-2", Targets: []string{addr}, DialOptions: dial2, Logger: log},
		siteSource{train: ds.Sites["worker-2"].Train}, dying, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx2, stop2 := context.WithCancel(ctx)
	done2 := make(chan struct{})
	go func() { defer close(done2); _ = w2.Run(ctx2) }()
	go func() {
		select {
		case <-dying.dying:
			link.Lock()
			link.dead = true
			for _, c := range link.conns {
				_ = c.Close()
			}
			link.Unlock()
		case <-ctx.Done():
		}
	}()
	defer stopWithin(t, "stopping worker-2", func() { close(dying.release); stop2(); <-done2 })

	cc, err := grpc.NewClient(addr, dial...)
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
	var sites []float64
	for {
		ev, err := st.Recv()
		if err != nil {
			break
		}
		if ev.GetKind() == "round_committed" {
			sites = append(sites, ev.GetMetrics()[tracking.MetricSites])
		}
	}
	got, err := jobs.GetJob(ctx, &pb.GetJobRequest{JobId: resp.GetJob().GetJobId()})
	if err != nil {
		t.Fatal(err)
	}
	if s := got.GetJob().GetState(); s != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %v: %s; want it to succeed with the worker left", s, got.GetJob().GetError())
	}
	if diff := cmp.Diff([]float64{2, 1, 1}, sites); diff != "" {
		t.Errorf("workers aggregated by round (-want +got):\n%s", diff)
	}
}
