package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

var (
	_ BatchLogger = (*tracking.SQLiteStore)(nil)
	_ RunsCreator = (*tracking.SQLiteStore)(nil)
)

// gatedTracker is a SQLite store whose EnsureExperiment waits for gate
// (entered is closed once it does), so that a test queues a job's events
// while the recorder is held on its first call.
type gatedTracker struct {
	*tracking.SQLiteStore
	gate, entered chan struct{}
	once          sync.Once
}

func (g *gatedTracker) EnsureExperiment(ctx context.Context, name string) (string, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.gate
	return g.SQLiteStore.EnsureExperiment(ctx, name)
}

// plainTracker hides the store's LogBatches and CreateRuns: a tracker
// without them.
type plainTracker struct{ Tracker }

func (p plainTracker) LogInputs(ctx context.Context, runID string, inputs []tracking.DatasetInput) error {
	return p.Tracker.(tracking.InputLogger).LogInputs(ctx, runID, inputs)
}

// batchCounter counts the store's LogBatches calls (the batches of each)
// and CreateRuns calls (the runs of each); with fail set, each LogBatches
// call fails instead.
type batchCounter struct {
	Tracker
	store   *tracking.SQLiteStore
	fail    bool
	mu      sync.Mutex
	calls   []int
	creates []int
}

func (b *batchCounter) LogInputs(ctx context.Context, runID string, inputs []tracking.DatasetInput) error {
	return b.store.LogInputs(ctx, runID, inputs)
}

func (b *batchCounter) CreateRuns(ctx context.Context, reqs []tracking.CreateRun) ([]tracking.Run, error) {
	b.mu.Lock()
	b.creates = append(b.creates, len(reqs))
	b.mu.Unlock()
	return b.store.CreateRuns(ctx, reqs)
}

func (b *batchCounter) LogBatches(ctx context.Context, batches []tracking.RunBatch) error {
	b.mu.Lock()
	b.calls = append(b.calls, len(batches))
	b.mu.Unlock()
	if b.fail {
		return errors.New("logging batches: the tracking server refused one")
	}
	return b.store.LogBatches(ctx, batches)
}

// TestRecorderFlushesARoundAtOnce queues a round of sites while the
// recorder is held, then lets it go: the site runs are created in one
// CreateRuns call, the round's site writes reach a BatchLogger in one
// LogBatches call, and every tracker (one without
// LogBatches, one whose LogBatches fails) ends up with the same records.
func TestRecorderFlushesARoundAtOnce(t *testing.T) {
	const sites = 5
	for _, tc := range []struct {
		name      string
		wrap      func(*gatedTracker) (Tracker, *batchCounter)
		wantCalls []int
	}{
		{"batching", func(g *gatedTracker) (Tracker, *batchCounter) {
			b := &batchCounter{Tracker: g, store: g.SQLiteStore}
			return b, b
		}, []int{4*sites + 1}}, // each site's update, credit and input (on its run and the arm's), and the arm's round
		{"without LogBatches", func(g *gatedTracker) (Tracker, *batchCounter) { return plainTracker{g}, nil }, nil},
		{"LogBatches failing", func(g *gatedTracker) (Tracker, *batchCounter) {
			b := &batchCounter{Tracker: g, store: g.SQLiteStore, fail: true}
			return b, b
		}, []int{4*sites + 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := openStore(t)
			g := &gatedTracker{SQLiteStore: store, gate: make(chan struct{}), entered: make(chan struct{})}
			tr, counter := tc.wrap(g)
			r, _ := newTestRecorder(t, tr, Config{})
			r.publish(JobStarted{Experiment: "e"})
			<-g.entered
			r.publish(ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 1})
			r.publish(RoundStarted{Arm: "fedavg", Round: 1, Rounds: 1, Attempt: 1})
			fractions := make(map[string]float64)
			for i := range sites {
				site := fmt.Sprintf("site-%d", i)
				fractions[site] = 1.0 / sites
				r.publish(UpdateAccepted{Arm: "fedavg", Round: 1, Site: site, NumSamples: 10, Metrics: map[string]float64{"train_loss": float64(i)},
					Dataset: &pb.DatasetInfo{Name: "synthetic", Sha256: fmt.Sprintf("%064d", i), NumSamples: 10}})
			}
			r.publish(RoundClosed{Arm: "fedavg", Round: 1, Rounds: 1, Metrics: map[string]float64{tracking.MetricRoundSeconds: 1},
				EnergyMethod: "estimated", WeightFractions: fractions})
			r.publish(JobFinished{Interrupted: true})
			close(g.gate)
			r.finish(10 * time.Second)
			if n := r.droppedCount(); n != 0 {
				t.Fatalf("dropped %d events", n)
			}
			if r.failures != 0 {
				t.Errorf("recorder failures = %d, want 0", r.failures)
			}
			if counter != nil {
				if diff := cmp.Diff(tc.wantCalls, counter.calls); diff != "" {
					t.Errorf("LogBatches calls, by batches (-want +got):\n%s", diff)
				}
				if diff := cmp.Diff([]int{sites}, counter.creates); diff != "" {
					t.Errorf("CreateRuns calls, by runs (-want +got):\n%s", diff)
				}
			}
			arm := r.arms["fedavg"]
			if len(arm.siteRuns) != sites {
				t.Fatalf("site runs = %v, want %d", arm.siteRuns, sites)
			}
			for i := range sites {
				site := fmt.Sprintf("site-%d", i)
				run := arm.siteRuns[site]
				for _, m := range []struct {
					key  string
					want string
				}{
					{tracking.MetricAccepted, "[1]"},
					{MetricWeightFraction, "[0.2]"},
					{"train_loss", fmt.Sprintf("[%d]", i)},
				} {
					if got := fmt.Sprint(metricValues(t, store, run, m.key, 1)); got != m.want {
						t.Errorf("%s %s at round 1 = %s, want %s", site, m.key, got, m.want)
					}
				}
			}
			for _, run := range arm.siteRuns {
				if got, err := store.GetRun(context.Background(), run); err != nil || len(got.Inputs) != 1 {
					t.Errorf("site run %s: %d inputs, %v; want 1", run, len(got.Inputs), err)
				}
			}
			if got, err := store.GetRun(context.Background(), arm.runID); err != nil || len(got.Inputs) != sites {
				t.Errorf("arm run: %d inputs, %v; want %d", len(got.Inputs), err, sites)
			}
			if got := fmt.Sprint(metricValues(t, store, arm.runID, tracking.MetricRoundSeconds, 1)); got != "[1]" {
				t.Errorf("arm %s at round 1 = %s, want [1]", tracking.MetricRoundSeconds, got)
			}
		})
	}
}

// BenchmarkRecorderRounds records a job of 1,000 sites and three rounds,
// queued at once, into SQLite: through LogBatches and CreateRuns
// (batched), and through the per-run calls of a tracker without them
// (per-run, what the recorder did before it batched). It reports the
// recorder's time per round; a round's first recording creates the sites'
// runs and logs their inputs.
//
//	go test -run '^$' -bench RecorderRounds -benchtime 3x ./server
func BenchmarkRecorderRounds(b *testing.B) {
	const sites, rounds = 1000, 3
	for _, bc := range []struct {
		name string
		wrap func(*tracking.SQLiteStore) Tracker
	}{
		{"batched", func(s *tracking.SQLiteStore) Tracker { return s }},
		{"per-run", func(s *tracking.SQLiteStore) Tracker { return plainTracker{s} }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			store := openStore(b)
			for b.Loop() {
				// Discarded logs: the job is not in the replica, so each
				// replication of run ids fails (at once) and warns.
				r, _ := newRecorderLogging(b, bc.wrap(store), Config{RecordQueue: 1 << 20}, slog.New(slog.DiscardHandler))
				r.publish(JobStarted{Experiment: "e"})
				r.publish(ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: rounds})
				for round := 1; round <= rounds; round++ {
					r.publish(RoundStarted{Arm: "fedavg", Round: round, Rounds: rounds, Attempt: 1})
					fractions := make(map[string]float64, sites)
					for i := range sites {
						site := fmt.Sprintf("site-%d", i)
						fractions[site] = 1.0 / sites
						r.publish(UpdateAccepted{Arm: "fedavg", Round: round, Site: site, NumSamples: 20, Bytes: 4000, DeltaNorm: 0.5,
							Metrics: map[string]float64{"train_loss": 0.5, "train_accuracy": 0.8, "train_seconds": 0.01},
							Dataset: &pb.DatasetInfo{Name: "synthetic", Sha256: fmt.Sprintf("%064d", i), NumSamples: 20}})
					}
					r.publish(RoundClosed{Arm: "fedavg", Round: round, Rounds: rounds, Metrics: map[string]float64{tracking.MetricRoundSeconds: 1},
						EnergyMethod: "estimated", WeightFractions: fractions})
				}
				r.publish(JobFinished{Interrupted: true})
				r.finish(time.Minute)
				if n := r.droppedCount(); n != 0 || r.failures != 0 {
					b.Fatalf("dropped %d events, %d tracking failures", n, r.failures)
				}
			}
			b.ReportMetric(b.Elapsed().Seconds()/float64(b.N*rounds), "s/round")
		})
	}
}

// endCounter records the EndRuns calls (the runs of each) it passes on
// to the store; with fail set, each fails instead.
type endCounter struct {
	*tracking.SQLiteStore
	fail  bool
	mu    sync.Mutex
	calls []int
}

func (e *endCounter) EndRuns(ctx context.Context, ids []string, status tracking.RunStatus, end time.Time) error {
	e.mu.Lock()
	e.calls = append(e.calls, len(ids))
	e.mu.Unlock()
	if e.fail {
		return errors.New("ending runs: the tracking server refused one")
	}
	return e.SQLiteStore.EndRuns(ctx, ids, status, end)
}

// TestRecorderEndsSiteRuns: an arm's site runs end with the arm, in one
// EndRuns call where the tracker has it, one by one where it has not or
// that call fails.
func TestRecorderEndsSiteRuns(t *testing.T) {
	const sites = 3
	for _, tc := range []struct {
		name      string
		wrap      func(*tracking.SQLiteStore) (Tracker, *endCounter)
		wantCalls []int
	}{
		{"EndRuns", func(s *tracking.SQLiteStore) (Tracker, *endCounter) {
			e := &endCounter{SQLiteStore: s}
			return e, e
		}, []int{sites}},
		{"without EndRuns", func(s *tracking.SQLiteStore) (Tracker, *endCounter) { return plainTracker{s}, nil }, nil},
		{"EndRuns failing", func(s *tracking.SQLiteStore) (Tracker, *endCounter) {
			e := &endCounter{SQLiteStore: s, fail: true}
			return e, e
		}, []int{sites}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			store := openStore(t)
			tr, counter := tc.wrap(store)
			r, _ := newTestRecorder(t, tr, Config{})
			r.publish(JobStarted{Experiment: "e"})
			r.publish(ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 1})
			r.publish(RoundStarted{Arm: "fedavg", Round: 1, Rounds: 1, Attempt: 1})
			for i := range sites {
				r.publish(UpdateAccepted{Arm: "fedavg", Round: 1, Site: fmt.Sprintf("site-%d", i), NumSamples: 10})
			}
			r.publish(RoundClosed{Arm: "fedavg", Round: 1, Rounds: 1, EnergyMethod: "estimated"})
			r.publish(ArmFinished{Arm: "fedavg", Status: tracking.StatusFailed})
			r.publish(JobFinished{Interrupted: true})
			r.finish(10 * time.Second)
			if r.failures != 0 {
				t.Errorf("recorder failures = %d, want 0", r.failures)
			}
			if counter != nil {
				if diff := cmp.Diff(tc.wantCalls, counter.calls); diff != "" {
					t.Errorf("EndRuns calls, by runs (-want +got):\n%s", diff)
				}
			}
			arm := r.arms["fedavg"]
			if len(arm.siteRuns) != sites {
				t.Fatalf("site runs = %v, want %d", arm.siteRuns, sites)
			}
			for site, id := range arm.siteRuns {
				run, err := store.GetRun(context.Background(), id)
				if err != nil || run.Info.Status != tracking.StatusFailed || run.Info.EndTime.IsZero() {
					t.Errorf("%s's run: %s ending %v (%v); want FAILED with an end", site, run.Info.Status, run.Info.EndTime, err)
				}
			}
		})
	}
}
