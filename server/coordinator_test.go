package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeModels serves a two-tensor model and an evaluator that records the
// weights it saw: "accuracy" is the mean of all weights.
type fakeModels struct {
	mu   sync.Mutex
	seen []*model.Weights
}

func initialWeights() *model.Weights {
	return &model.Weights{Tensors: []model.Tensor{
		{Name: "fc.weight", Shape: []int{2, 3}, Data: make([]float32, 6)},
		{Name: "fc.bias", Shape: []int{2}, Data: make([]float32, 2)},
	}}
}

func (f *fakeModels) Prepare(ctx context.Context, spec *job.Spec) (*Prepared, error) {
	return &Prepared{Spec: &pb.ModelSpec{Kind: "logreg"}, Initial: initialWeights(), Evaluator: f}, nil
}

func (f *fakeModels) Evaluate(ctx context.Context, w *model.Weights) (Evaluation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seen = append(f.seen, w.Clone())
	var sum float64
	var n int
	for _, t := range w.Tensors {
		for _, v := range t.Data {
			sum += float64(v)
			n++
		}
	}
	return Evaluation{Accuracy: sum / float64(n), NumSamples: 1}, nil
}

func (f *fakeModels) last() *model.Weights {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.seen[len(f.seen)-1]
}

// fakeSite is a site speaking the wire protocol directly, so that tests can
// make it misbehave. update returns the weights to push for a task, or an
// error to report as a task failure.
type fakeSite struct {
	name string
	// handle, if set, answers the tasks it returns true for itself.
	handle  func(ctx context.Context, cli pb.CoordinatorServiceClient, send func(*pb.SiteMessage), t *pb.Task) bool
	caps    *pb.Capabilities
	update  func(t *pb.Task, global *model.Weights) (*model.Weights, int64, error)
	push    func(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, w *model.Weights, n int64) error
	results chan string // push outcomes: "accepted" or the reason/error
	// energy, if set, is the site's energy report of every task: sent with
	// its update (with evalEnergy as the update's eval_energy) or with its
	// failure.
	energy, evalEnergy *pb.EnergyReport
	// dataset, if set, is sent with every update, as a site's lineage.
	dataset *pb.DatasetInfo
}

func (s *fakeSite) run(ctx context.Context, t *testing.T, cc *grpc.ClientConn) {
	cli := pb.NewCoordinatorServiceClient(cc)
	jr, err := cli.Join(ctx, &pb.JoinRequest{SiteName: s.name, Capabilities: s.caps})
	if err != nil {
		if ctx.Err() == nil { // a test that ended before the site joined is no failure
			t.Errorf("%s: join: %v", s.name, err)
		}
		return
	}
	stream, err := cli.Session(ctx)
	if err != nil {
		if ctx.Err() == nil {
			t.Errorf("%s: session: %v", s.name, err)
		}
		return
	}
	var mu sync.Mutex
	send := func(m *pb.SiteMessage) {
		mu.Lock()
		defer mu.Unlock()
		_ = stream.Send(m)
	}
	send(&pb.SiteMessage{Msg: &pb.SiteMessage_Hello{Hello: &pb.SessionHello{SessionId: jr.GetSessionId()}}})
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		m, err := stream.Recv()
		if err != nil {
			return
		}
		task := m.GetTask()
		if task == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if s.handle != nil && s.handle(ctx, cli, send, task) {
				return
			}
			global, err := fetch(ctx, cli, task)
			if err != nil {
				send(&pb.SiteMessage{Msg: &pb.SiteMessage_Failed{Failed: &pb.TaskFailed{TaskId: task.GetTaskId(), Reason: err.Error()}}})
				return
			}
			w, n, err := s.update(task, global)
			if err != nil {
				send(&pb.SiteMessage{Msg: &pb.SiteMessage_Failed{Failed: &pb.TaskFailed{TaskId: task.GetTaskId(), Reason: err.Error(), Energy: s.energy}}})
				return
			}
			push := s.push
			if push == nil {
				push = pushWhole
			}
			if s.energy != nil || s.dataset != nil {
				push = func(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, w *model.Weights, n int64) error {
					b, err := model.MarshalSafetensors(w, nil)
					if err != nil {
						return err
					}
					return pushHeader(ctx, cli, &pb.UpdateHeader{TaskId: t.GetTaskId(), NumSamples: n, TotalSize: int64(len(b)),
						Sha256: sha256Of(b), Energy: s.energy, EvalEnergy: s.evalEnergy, Dataset: s.dataset}, b)
				}
			}
			err = push(ctx, cli, task, w, n)
			if s.results != nil {
				r := "accepted"
				if err != nil {
					r = err.Error()
				}
				select {
				case s.results <- r:
				default:
				}
			}
		}()
	}
}

func fetch(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task) (*model.Weights, error) {
	st, err := cli.FetchModel(ctx, &pb.FetchModelRequest{ModelId: t.GetModelId(), TaskId: t.GetTaskId()})
	if err != nil {
		return nil, err
	}
	var b []byte
	for {
		ch, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		b = append(b, ch.GetData()...)
	}
	// Every round of these tests checks that a model sent in its task is
	// the one FetchModel sends.
	if d := t.GetModelData(); len(d) > 0 && !bytes.Equal(d, b) {
		return nil, fmt.Errorf("the task's model_data (%d bytes) is not the model FetchModel sends (%d bytes)", len(d), len(b))
	}
	w, _, err := model.UnmarshalSafetensors(b)
	return w, err
}

// pushWhole uploads w correctly, in 7-byte chunks to exercise reassembly.
func pushWhole(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, w *model.Weights, n int64) error {
	b, err := model.MarshalSafetensors(w, nil)
	if err != nil {
		return err
	}
	return pushBytes(ctx, cli, t, b, int64(len(b)), sha256.Sum256(b), n)
}

func pushBytes(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, b []byte, size int64, sum [32]byte, n int64) error {
	return pushHeader(ctx, cli, &pb.UpdateHeader{
		TaskId: t.GetTaskId(), NumSamples: n, TotalSize: size, Sha256: sum[:],
		Metrics: map[string]float64{"train_loss": 0.5},
	}, b)
}

func sha256Of(b []byte) []byte {
	s := sha256.Sum256(b)
	return s[:]
}

// pushHeader uploads b after h, in 7-byte chunks.
func pushHeader(ctx context.Context, cli pb.CoordinatorServiceClient, h *pb.UpdateHeader, b []byte) error {
	st, err := cli.PushUpdate(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&pb.UpdateChunk{Msg: &pb.UpdateChunk_Header{Header: h}}); err != nil {
		return err
	}
	for off := 0; off < len(b); off += 7 {
		if err := st.Send(&pb.UpdateChunk{Msg: &pb.UpdateChunk_Data{Data: b[off:min(off+7, len(b))]}}); err != nil {
			break
		}
	}
	resp, err := st.CloseAndRecv()
	if err != nil {
		return err
	}
	if !resp.GetAccepted() {
		return errors.New(resp.GetReason())
	}
	return nil
}

// plusOne trains by adding 1 to every weight, with n samples.
func plusOne(n int64) func(*pb.Task, *model.Weights) (*model.Weights, int64, error) {
	return func(t *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		w := g.Clone()
		for i := range w.Tensors {
			for j := range w.Tensors[i].Data {
				w.Tensors[i].Data[j]++
			}
		}
		return w, n, nil
	}
}

type cluster struct {
	coord  *Coordinator
	spill  string // the coordinator's SpillDir
	store  *tracking.SQLiteStore
	models *fakeModels
	lis    *bufconn.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	return newClusterWith(t, 10*time.Second, nil)
}

// newClusterWith starts a coordinator waiting siteWait for sites, with
// models (nil: the cluster's fakeModels).
func newClusterWith(t *testing.T, siteWait time.Duration, models ModelProvider) *cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := tracking.OpenSQLite(ctx, filepath.Join(t.TempDir(), "cohort.db"))
	if err != nil {
		t.Fatal(err)
	}
	fm := &fakeModels{}
	if models == nil {
		models = fm
	}
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Every update is spilled, however small, so that these tests cover
	// the path a large model's updates take.
	spillDir := filepath.Join(t.TempDir(), "updates")
	// Global models go to a blob store too, and are read from their files
	// in place, however small: the path a large model takes.
	coord, err := New(Config{Version: "test", Logger: log, SiteWait: siteWait, SpillDir: spillDir, SpillAbove: -1, ModelDir: t.TempDir()}, Deps{Tracker: store, Models: models})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{coord: coord, spill: spillDir, store: store, models: fm, lis: bufconn.Listen(1 << 20), cancel: cancel}
	gs := grpc.NewServer()
	coord.Register(gs)
	c.wg.Add(2)
	go func() { defer c.wg.Done(); _ = gs.Serve(c.lis) }()
	go func() { defer c.wg.Done(); _ = coord.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		c.wg.Wait()
		if err := coord.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		store.Close()
		// Every received update's file is gone once folded, refused or
		// abandoned with its round.
		if left, err := os.ReadDir(spillDir); err != nil || len(left) > 0 {
			t.Errorf("spill dir after the coordinator closed: %d files left (%v), want none", len(left), err)
		}
	})
	return c
}

func (c *cluster) dial(t *testing.T) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return c.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func (c *cluster) startSite(t *testing.T, ctx context.Context, s *fakeSite) {
	cc := c.dial(t)
	c.wg.Add(1)
	go func() { defer c.wg.Done(); s.run(ctx, t, cc) }()
}

const testJob = `
name: test
seed: 1
data: {dataset: fashion-mnist, path: /nonexistent}
model: {kind: logreg}
sites: {count: 3, min_per_round: %d}
rounds: 3
deadline: {round: %s}
arms:
  - {name: fedavg, strategy: fedavg}
`

func submit(t *testing.T, c *cluster, yaml string) *pb.Job {
	t.Helper()
	j, err := c.coord.Submit(context.Background(), []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return j
}

func waitJob(t *testing.T, c *cluster, id string) *pb.Job {
	t.Helper()
	cli := pb.NewJobsServiceClient(c.dial(t))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := cli.WatchJob(ctx, &pb.WatchJobRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := st.Recv(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("watching: %v", err)
			}
			break
		}
	}
	got, err := cli.GetJob(ctx, &pb.GetJobRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	return got.GetJob()
}

func TestFedAvgRoundsOverTheWire(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Two honest sites with different sample counts: every round each adds
	// 1 to every weight, so the weighted average adds exactly 1.
	for _, s := range []*fakeSite{
		{name: "site-1", update: plusOne(100)},
		{name: "site-2", update: plusOne(300)},
		{name: "site-3", update: plusOne(50)},
	} {
		c.startSite(t, ctx, s)
	}
	j := submit(t, c, fmt.Sprintf(testJob, 3, "30s"))
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state = %v (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	w := c.models.last()
	for _, tn := range w.Tensors {
		for i, v := range tn.Data {
			if v != 3 {
				t.Fatalf("global %s[%d] after 3 rounds = %v, want 3", tn.Name, i, v)
			}
		}
	}
	// Tracking: job run → arm run → one site run per site, 3 rounds each.
	cmp, err := tracking.Compare(context.Background(), c.store, got.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	if len(cmp.Arms) != 1 || cmp.Arms[0].Name != "fedavg" || cmp.Arms[0].FinalAccuracy != 3 {
		t.Fatalf("comparison = %+v, want one fedavg arm with final accuracy 3", cmp.Arms)
	}
	// The model went out in every task, and these sites fetched it as
	// well, as a site from before model_data does: counted once.
	enc, err := model.MarshalSafetensors(initialWeights(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := cmp.Arms[0].BytesSent, float64(3*3*len(enc)); got != want {
		t.Errorf("bytes sent = %v, want %v (3 rounds × 3 sites × the %d-byte model)", got, want, len(enc))
	}
	sites, err := c.store.ChildRuns(context.Background(), cmp.Arms[0].RunID)
	if err != nil {
		t.Fatal(err)
	}
	if len(sites) != 3 {
		t.Fatalf("site runs = %d, want 3", len(sites))
	}
	for _, s := range sites {
		h, err := c.store.GetMetricHistory(context.Background(), s.Info.RunID, "train_loss")
		if err != nil {
			t.Fatal(err)
		}
		if len(h) != 3 {
			t.Errorf("site run %s: %d train_loss points, want 3", s.Info.RunName, len(h))
		}
		if s.Info.Status != tracking.StatusFinished {
			t.Errorf("site run %s status = %s, want FINISHED", s.Info.RunName, s.Info.Status)
		}
	}
}

func TestBadUpdatesAreRejectedAndRecorded(t *testing.T) {
	nan := func(t *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		w := g.Clone()
		w.Tensors[1].Data[0] = float32(math.NaN())
		return w, 10, nil
	}
	shape := func(t *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		return &model.Weights{Tensors: []model.Tensor{{Name: "fc.weight", Shape: []int{3, 2}, Data: make([]float32, 6)}, g.Tensors[1]}}, 10, nil
	}
	truncated := func(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, w *model.Weights, n int64) error {
		b, _ := model.MarshalSafetensors(w, nil)
		return pushBytes(ctx, cli, t, b[:len(b)/2], int64(len(b)), sha256.Sum256(b), n)
	}
	badSum := func(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, w *model.Weights, n int64) error {
		b, _ := model.MarshalSafetensors(w, nil)
		return pushBytes(ctx, cli, t, b, int64(len(b)), sha256.Sum256([]byte("other")), n)
	}
	trailing := func(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, w *model.Weights, n int64) error {
		b, _ := model.MarshalSafetensors(w, nil)
		b = append(b, make([]byte, 8)...)
		return pushBytes(ctx, cli, t, b, int64(len(b)), sha256.Sum256(b), n)
	}
	overflow := func(ctx context.Context, cli pb.CoordinatorServiceClient, t *pb.Task, w *model.Weights, n int64) error {
		b, _ := model.MarshalSafetensors(w, nil)
		return pushBytes(ctx, cli, t, append(b, make([]byte, 8)...), int64(len(b)), sha256.Sum256(b), n)
	}
	tests := []struct {
		name string
		site *fakeSite
		want string // substring of the push error
	}{
		{"bytes after the file", &fakeSite{update: plusOne(10), push: trailing}, "after the end of the file"},
		{"more than declared", &fakeSite{update: plusOne(10), push: overflow}, "more data than announced"},
		{"nan", &fakeSite{update: nan}, "non-finite"},
		{"shape", &fakeSite{update: shape}, "incompatible weights"},
		{"truncated", &fakeSite{update: plusOne(10), push: truncated}, "truncated"},
		{"checksum", &fakeSite{update: plusOne(10), push: badSum}, "checksum"},
		{"zero samples", &fakeSite{update: plusOne(0)}, "0 samples"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			bad := tt.site
			bad.name = "site-3"
			bad.results = make(chan string, 10)
			c.startSite(t, ctx, &fakeSite{name: "site-1", update: plusOne(100)})
			c.startSite(t, ctx, &fakeSite{name: "site-2", update: plusOne(100)})
			c.startSite(t, ctx, bad)
			j := submit(t, c, fmt.Sprintf(testJob, 2, "30s"))
			got := waitJob(t, c, j.GetJobId())
			if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("job state = %v (%s), want SUCCEEDED: the round goes on with the good sites", got.GetState(), got.GetError())
			}
			if v := c.models.last().Tensors[0].Data[0]; v != 3 {
				t.Errorf("global weight after 3 rounds = %v, want 3 (the bad update must not count)", v)
			}
			r := <-bad.results
			if !contains(r, tt.want) {
				t.Errorf("bad site's push result = %q, want it to mention %q", r, tt.want)
			}
			cmp, err := tracking.Compare(context.Background(), c.store, got.GetTrackingRunId())
			if err != nil {
				t.Fatal(err)
			}
			sites, _ := c.store.ChildRuns(context.Background(), cmp.Arms[0].RunID)
			var found bool
			for _, s := range sites {
				if v, ok := s.Data.Tag("cohort.round_1.status"); ok && s.Info.RunName == "fedavg/site-3" {
					found = contains(v, "rejected")
				}
			}
			if !found {
				t.Errorf("site-3's run has no cohort.round_1.status tag saying rejected")
			}
		})
	}
}

// TestArmEnergyCountsEvaluationAndWaste: every round of the arm counts the
// training of the updates it used, the sites' evaluation of the model they
// received, and the work of a site that failed: nothing spent is left out,
// and each part is logged apart.
func TestArmEnergyCountsEvaluationAndWaste(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gpu := func(j float64) *pb.EnergyReport {
		return &pb.EnergyReport{Method: "measured", Seconds: 1, Attribution: "exclusive",
			Gpus:      []*pb.GPUEnergy{{Uuid: "GPU-x", Joules: j, DeviceJoules: j, UtilizationAvgPercent: 50}},
			Estimated: &pb.EnergyEstimate{Joules: 0.5}}
	}
	failing := func(*pb.Task, *model.Weights) (*model.Weights, int64, error) {
		return nil, 0, errors.New("out of memory")
	}
	c.startSite(t, ctx, &fakeSite{name: "site-1", update: plusOne(100), energy: gpu(10), evalEnergy: gpu(1)})
	c.startSite(t, ctx, &fakeSite{name: "site-2", update: plusOne(100), energy: gpu(10), evalEnergy: gpu(1)})
	c.startSite(t, ctx, &fakeSite{name: "site-3", update: failing, energy: gpu(5)})
	j := submit(t, c, fmt.Sprintf(testJob, 2, "30s"))
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state = %v (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	cmp, err := tracking.Compare(context.Background(), c.store, got.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	a := cmp.Arms[0]
	// Per round: 2 × 10 J training, 2 × 1 J evaluation, 5 J wasted.
	for _, f := range []struct {
		name      string
		got, want float64
	}{
		{"energy_joules", a.EnergyJoules, 3 * 27},
		{"train_energy_joules", a.TrainEnergyJoules, 3 * 20},
		{"eval_energy_joules", a.EvalEnergyJoules, 3 * 2},
		{"wasted_energy_joules", a.WastedEnergyJoules, 3 * 5},
		{"gpu_utilization_percent", a.GPUUtilization, 50},
	} {
		if math.Abs(f.got-f.want) > 1e-9 {
			t.Errorf("arm %s = %v, want %v", f.name, f.got, f.want)
		}
	}
	if a.EnergyMethod != "measured" || a.Rounds != 3 {
		t.Errorf("arm energy method, rounds = %q, %d; want measured, 3", a.EnergyMethod, a.Rounds)
	}
}

func TestQuorumUnreachableFailsTheJob(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	fail := func(t *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		return nil, 0, errors.New("CUDA out of memory")
	}
	c.startSite(t, ctx, &fakeSite{name: "site-1", update: plusOne(100)})
	c.startSite(t, ctx, &fakeSite{name: "site-2", update: fail})
	c.startSite(t, ctx, &fakeSite{name: "site-3", update: fail})
	j := submit(t, c, fmt.Sprintf(testJob, 2, "30s"))
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_FAILED {
		t.Fatalf("job state = %v, want FAILED", got.GetState())
	}
	if !contains(got.GetError(), "quorum") {
		t.Errorf("job error = %q, want it to say the quorum was unreachable", got.GetError())
	}
	run, err := c.store.GetRun(context.Background(), got.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	if run.Info.Status != tracking.StatusFailed {
		t.Errorf("job run status = %s, want FAILED", run.Info.Status)
	}
}

// With deadline.retries, a round short of its quorum runs again: a site
// whose first try fails (a transient error) makes it on the second, and
// the job succeeds with every round committed once.
func TestQuorumShortRoundIsRetried(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	tries := map[int32]int{}
	flaky := func(t *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		mu.Lock()
		tries[t.GetRound()]++
		n := tries[t.GetRound()]
		mu.Unlock()
		if t.GetRound() == 2 && n == 1 {
			return nil, 0, errors.New("transient: disk busy")
		}
		return plusOne(100)(t, g)
	}
	fail := func(t *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		return nil, 0, errors.New("CUDA out of memory")
	}
	c.startSite(t, ctx, &fakeSite{name: "site-1", update: plusOne(100)})
	c.startSite(t, ctx, &fakeSite{name: "site-2", update: flaky})
	c.startSite(t, ctx, &fakeSite{name: "site-3", update: fail})
	src := strings.Replace(fmt.Sprintf(testJob, 2, "30s"), "deadline: {round: 30s}", "deadline: {round: 30s, retries: 1}", 1)
	j := submit(t, c, src)
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state = %v (%s), want SUCCEEDED after one retry", got.GetState(), got.GetError())
	}
	// Three committed rounds of two +1 updates each: 6, not 7 or 8 (no
	// round applied twice).
	if v := c.models.last().Tensors[0].Data[0]; v != 3 {
		t.Errorf("global weight = %v, want 3 (three rounds averaging +1 updates)", v)
	}
	mu.Lock()
	defer mu.Unlock()
	if tries[2] != 2 {
		t.Errorf("site-2 was asked %d times in round 2, want 2 (the first try and the retry)", tries[2])
	}
}

func TestStragglerDroppedAtDeadline(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	slow := func(t *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		select {
		case <-ctx.Done():
		case <-time.After(3 * time.Second):
		}
		return g, 1000, nil
	}
	c.startSite(t, ctx, &fakeSite{name: "site-1", update: plusOne(100)})
	c.startSite(t, ctx, &fakeSite{name: "site-2", update: plusOne(100)})
	c.startSite(t, ctx, &fakeSite{name: "site-3", update: slow})
	j := submit(t, c, fmt.Sprintf(testJob, 2, "300ms"))
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state = %v (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	if v := c.models.last().Tensors[0].Data[0]; v != 3 {
		t.Errorf("global weight = %v, want 3: the straggler's update must not count", v)
	}
}

func TestJobsAPIErrors(t *testing.T) {
	c := newCluster(t)
	cli := pb.NewJobsServiceClient(c.dial(t))
	ctx := context.Background()
	_, err := cli.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: []byte("name: x\nrounds: ten\n")})
	if got := statusCode(err); got != "InvalidArgument" {
		t.Errorf("SubmitJob(bad yaml) code = %s, want InvalidArgument (%v)", got, err)
	}
	_, err = cli.GetJob(ctx, &pb.GetJobRequest{JobId: "nope"})
	if got := statusCode(err); got != "NotFound" {
		t.Errorf("GetJob(unknown) code = %s, want NotFound", got)
	}
	co := pb.NewCoordinatorServiceClient(c.dial(t))
	_, err = co.Join(ctx, &pb.JoinRequest{})
	if got := statusCode(err); got != "InvalidArgument" {
		t.Errorf("Join(no name) code = %s, want InvalidArgument", got)
	}
	st, err := co.FetchModel(ctx, &pb.FetchModelRequest{ModelId: "missing"})
	if err == nil {
		_, err = st.Recv()
	}
	if got := statusCode(err); got != "NotFound" {
		t.Errorf("FetchModel(unknown) code = %s, want NotFound", got)
	}
	if diff := cmp.Diff("InvalidArgument", statusCode(toStatus(badInput("x")))); diff != "" {
		t.Error(diff)
	}
}
