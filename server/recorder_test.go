package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
	"github.com/cohortfl/cohort/tracking"
)

// errTrackerDown is what failingTracker answers.
var errTrackerDown = errors.New("tracking server down")

// failingTracker fails every call.
type failingTracker struct{}

func (failingTracker) EnsureExperiment(context.Context, string) (string, error) {
	return "", errTrackerDown
}
func (failingTracker) CreateRun(context.Context, tracking.CreateRun) (tracking.Run, error) {
	return tracking.Run{}, errTrackerDown
}
func (failingTracker) UpdateRun(context.Context, string, tracking.RunStatus, time.Time, string) error {
	return errTrackerDown
}
func (failingTracker) LogBatch(context.Context, string, []tracking.Metric, []tracking.Param, []tracking.Tag) error {
	return errTrackerDown
}
func (failingTracker) LogArtifact(context.Context, string, string, io.Reader) error {
	return errTrackerDown
}
func (failingTracker) GetRun(context.Context, string) (tracking.Run, error) {
	return tracking.Run{}, errTrackerDown
}
func (failingTracker) ChildRuns(context.Context, string) ([]tracking.Run, error) {
	return nil, errTrackerDown
}
func (failingTracker) GetMetricHistory(context.Context, string, string) ([]tracking.Metric, error) {
	return nil, errTrackerDown
}

var _ Tracker = failingTracker{}

// blockingTracker blocks every call until its context ends, as a tracking
// server that accepts connections and never answers; entered is closed
// at the first call.
type blockingTracker struct {
	once    sync.Once
	entered chan struct{}
	mu      sync.Mutex
	calls   int
}

func newBlockingTracker() *blockingTracker { return &blockingTracker{entered: make(chan struct{})} }

func (b *blockingTracker) block(ctx context.Context) error {
	b.mu.Lock()
	b.calls++
	b.mu.Unlock()
	b.once.Do(func() { close(b.entered) })
	<-ctx.Done()
	return ctx.Err()
}

func (b *blockingTracker) EnsureExperiment(ctx context.Context, _ string) (string, error) {
	return "", b.block(ctx)
}
func (b *blockingTracker) CreateRun(ctx context.Context, _ tracking.CreateRun) (tracking.Run, error) {
	return tracking.Run{}, b.block(ctx)
}
func (b *blockingTracker) UpdateRun(ctx context.Context, _ string, _ tracking.RunStatus, _ time.Time, _ string) error {
	return b.block(ctx)
}
func (b *blockingTracker) LogBatch(ctx context.Context, _ string, _ []tracking.Metric, _ []tracking.Param, _ []tracking.Tag) error {
	return b.block(ctx)
}
func (b *blockingTracker) LogArtifact(ctx context.Context, _, _ string, _ io.Reader) error {
	return b.block(ctx)
}
func (b *blockingTracker) GetRun(ctx context.Context, _ string) (tracking.Run, error) {
	return tracking.Run{}, b.block(ctx)
}
func (b *blockingTracker) ChildRuns(ctx context.Context, _ string) ([]tracking.Run, error) {
	return nil, b.block(ctx)
}
func (b *blockingTracker) GetMetricHistory(ctx context.Context, _, _ string) ([]tracking.Metric, error) {
	return nil, b.block(ctx)
}

var _ Tracker = (*blockingTracker)(nil)

// syncBuffer is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// newTrackerCluster starts a coordinator that logs into tr, with cfg's
// recording bounds, its logs (WARN and up) in logs.
func newTrackerCluster(t *testing.T, tr Tracker, cfg Config, logs io.Writer) *cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fm := &fakeModels{}
	cfg.Version, cfg.SiteWait = "test", 10*time.Second
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, t.Output()), &slog.HandlerOptions{Level: slog.LevelWarn}))
	coord, err := New(cfg, Deps{Tracker: tr, Models: fm})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{coord: coord, models: fm, lis: bufconn.Listen(1 << 20), cancel: cancel}
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
	})
	return c
}

// TestTrackingNeverHoldsUpARound runs the same job into a working tracker,
// one that fails every call and one that never answers: the job succeeds
// in the same rounds with the same accuracy each time, and the blocked
// tracker's dropped events are counted and logged.
func TestTrackingNeverHoldsUpARound(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name     string
		tracker  func(t *testing.T) Tracker
		drain    time.Duration // 0: the default; only the blocking tracker is cut short
		wantLogs []string
	}{
		{name: "working", tracker: func(t *testing.T) Tracker {
			store, err := tracking.OpenSQLite(context.Background(), filepath.Join(dir, "cohort.db"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { store.Close() })
			return store
		}},
		{name: "failing", tracker: func(*testing.T) Tracker { return failingTracker{} },
			wantLogs: []string{"tracking_experiment_failed", errTrackerDown.Error()}},
		// The queue holds two rounds of the job's events (recordQueue):
		// what the blocked tracker never takes is dropped at the drain's end.
		{name: "blocking", tracker: func(*testing.T) Tracker { return newBlockingTracker() }, drain: 200 * time.Millisecond,
			wantLogs: []string{"tracking_drain_timeout", "tracking_events_dropped_total"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs syncBuffer
			tr := tc.tracker(t)
			c := newTrackerCluster(t, tr, Config{RecordDrain: tc.drain}, &logs)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
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
			if got.GetRound() != 3 || got.GetRounds() != 3 || got.GetAccuracy() != 3 {
				t.Errorf("job = round %d/%d, accuracy %v; want 3/3, accuracy 3", got.GetRound(), got.GetRounds(), got.GetAccuracy())
			}
			if b, ok := tr.(*blockingTracker); ok {
				b.mu.Lock()
				calls := b.calls
				b.mu.Unlock()
				if calls == 0 {
					t.Errorf("the blocking tracker was never called")
				}
			}
			for _, w := range tc.wantLogs {
				if !strings.Contains(logs.String(), w) {
					t.Errorf("logs lack %q", w)
				}
			}
			if store, ok := tr.(*tracking.SQLiteStore); ok {
				cmp, err := tracking.Compare(context.Background(), store, got.GetTrackingRunId())
				if err != nil {
					t.Fatal(err)
				}
				if len(cmp.Arms) != 1 || cmp.Arms[0].FinalAccuracy != 3 || cmp.Arms[0].Rounds != 3 {
					t.Errorf("comparison = %+v, want one arm, 3 rounds, final accuracy 3", cmp.Arms)
				}
			}
		})
	}
}

// newTestRecorder returns a recorder of a one-arm job writing into tr.
func newTestRecorder(t testing.TB, tr Tracker, cfg Config) (*recorder, *jobRun) {
	t.Helper()
	return newRecorderLogging(t, tr, cfg, slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn})))
}

// newRecorderLogging is newTestRecorder logging to log.
func newRecorderLogging(t testing.TB, tr Tracker, cfg Config, log *slog.Logger) (*recorder, *jobRun) {
	t.Helper()
	spec, err := job.Parse([]byte(fmt.Sprintf(testJob, 2, "30s")))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Logger = log
	coord, err := New(cfg, Deps{Tracker: tr, Models: &fakeModels{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { coord.Close() })
	j := &jobRun{id: "job-1", spec: spec, info: &pb.Job{JobId: "job-1"}, changed: make(chan struct{})}
	return coord.newRecorder(context.Background(), j, tr, nil), j
}

// TestRecorderDropsWhatDoesNotFit blocks the tracker on the job's first
// call and publishes more round events than the queue holds (two rounds
// of the job's: 18 for its 3 sites, above the configured 4):
// the excess is dropped and counted without publish waiting, run-shaping
// events are kept, and finish returns after its bound with what was left
// counted too.
func TestRecorderDropsWhatDoesNotFit(t *testing.T) {
	tr := newBlockingTracker()
	r, j := newTestRecorder(t, tr, Config{RecordQueue: 4})
	const queue = 18
	if r.max != queue {
		t.Fatalf("the queue holds %d events, want %d", r.max, queue)
	}
	r.publish(JobStarted{Experiment: "e"})
	<-tr.entered // the recorder is inside the tracker's first call
	for i := range queue + 6 {
		r.publish(UpdateAccepted{Arm: "fedavg", Round: 1, Site: fmt.Sprintf("site-%d", i)})
	}
	r.publish(ArmFinished{Arm: "fedavg", Status: tracking.StatusFinished})
	if got := r.droppedCount(); got != 6 {
		t.Errorf("dropped after %d events into a queue of %d = %d, want 6", queue+6, queue, got)
	}
	r.mu.Lock()
	queued := len(r.queue)
	r.mu.Unlock()
	if queued != queue+1 {
		t.Errorf("queued = %d, want %d (the round events and ArmFinished)", queued, queue+1)
	}
	r.finish(20 * time.Millisecond)
	select {
	case <-r.done:
	default:
		t.Fatal("the recorder still runs after finish, though its tracker honours cancellation")
	}
	if got := r.droppedCount(); got != queue+7 {
		t.Errorf("dropped after finish = %d, want %d (6, and the %d still queued)", got, queue+7, queue+1)
	}
	// The job's end was among them: the watchers are told so, with the
	// count (finishJobRun, which tags the job run, never ran).
	if msg := incomplete(j); !strings.Contains(msg, fmt.Sprintf("%d events were not recorded, among them the job's end", queue+7)) {
		t.Errorf("tracking_incomplete says %q, want the count, %d, and that the job's end was not recorded", msg, queue+7)
	}
	r.publish(UpdateAccepted{Arm: "fedavg", Round: 2, Site: "late"})
	if got := r.droppedCount(); got != queue+8 {
		t.Errorf("dropped after publishing to a finished recorder = %d, want %d", got, queue+8)
	}
}

// TestRecorderSaysWhatItDropped: a tracker that falls behind and catches
// up loses the events past the queue; the job run is tagged with their
// number and the job's watchers are told.
func TestRecorderSaysWhatItDropped(t *testing.T) {
	store := openStore(t)
	tr := &gatedTracker{SQLiteStore: store, gate: make(chan struct{}), entered: make(chan struct{})}
	r, j := newTestRecorder(t, tr, Config{})
	r.publish(JobStarted{Experiment: "e"})
	<-tr.entered // the recorder waits in the tracker's first call
	r.publish(ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 1})
	r.publish(RoundStarted{Arm: "fedavg", Round: 1, Rounds: 1, Attempt: 1})
	const over = 5
	for i := range r.max - 1 + over { // RoundStarted took a place
		r.publish(UpdateAccepted{Arm: "fedavg", Round: 1, Site: fmt.Sprintf("site-%d", i%3+1), NumSamples: 1})
	}
	close(tr.gate)
	r.publish(ArmFinished{Arm: "fedavg", Status: tracking.StatusFinished})
	r.publish(JobFinished{})
	r.finish(time.Minute)
	if n := r.droppedCount(); n != over {
		t.Fatalf("dropped %d events, want %d", n, over)
	}
	run, err := store.GetRun(context.Background(), r.jobRunID)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := run.Data.Tag(TagEventsDropped); v != strconv.Itoa(over) {
		t.Errorf("job run tag %s = %q, want %d", TagEventsDropped, v, over)
	}
	if msg := incomplete(j); !strings.Contains(msg, fmt.Sprintf("%d round events were not recorded (tag %s on the job run)", over, TagEventsDropped)) {
		t.Errorf("tracking_incomplete says %q, want the count, %d, and the tag", msg, over)
	}
}

// incomplete is the message of the job's tracking_incomplete event; ""
// where it has none.
func incomplete(j *jobRun) string {
	j.mu.Lock()
	defer j.mu.Unlock()
	for _, ev := range j.events {
		if ev.GetKind() == "tracking_incomplete" {
			return ev.GetMessage()
		}
	}
	return ""
}

// TestRecorderDropsPastItsBytes: events that fit the queue's count but
// not its memory bound are dropped and counted, without publish waiting.
func TestRecorderDropsPastItsBytes(t *testing.T) {
	tr := newBlockingTracker()
	r, _ := newTestRecorder(t, tr, Config{RecordQueue: 1 << 20})
	r.publish(JobStarted{Experiment: "e"})
	<-tr.entered // the recorder is inside the tracker's first call
	// One string of 1 MiB, held once, counted for each event.
	reason := strings.Repeat("x", 1<<20)
	const events = 300
	ev := UpdateRefused{Arm: "fedavg", Round: 1, Site: "site-1", Status: "rejected", Reason: reason}
	fit := maxRecordBytes / eventBytes(ev)
	for range events {
		r.publish(ev)
	}
	if fit >= events {
		t.Fatalf("%d events of %d bytes fit %d bytes: the test needs more", events, eventBytes(ev), maxRecordBytes)
	}
	if got, want := r.droppedCount(), events-fit; got != want {
		t.Errorf("dropped %d events of %d bytes, want %d (%d fit %d bytes)", got, eventBytes(ev), want, fit, maxRecordBytes)
	}
	r.finish(20 * time.Millisecond)
}

// TestEventBytes: an event's estimate counts what it carries: the site's
// reports, its metrics, a round's weight for each site.
func TestEventBytes(t *testing.T) {
	small := UpdateAccepted{Site: "site-1"}
	big := UpdateAccepted{Site: "site-1", Metrics: map[string]float64{"train_loss": 1},
		Energy: &pb.EnergyReport{Json: bytes.Repeat([]byte("x"), 10_000)}, Dataset: &pb.DatasetInfo{Sha256: strings.Repeat("0", 64)}}
	if d := eventBytes(big) - eventBytes(small); d < 10_000+64+len("train_loss") {
		t.Errorf("an update with 10,000 bytes of energy report, a digest and a metric is %d bytes above one without", d)
	}
	fractions := make(map[string]float64, 1000)
	for i := range 1000 {
		fractions[fmt.Sprintf("site-%d", i)] = 0.001
	}
	if n := eventBytes(RoundClosed{WeightFractions: fractions}); n < 1000*(len("site-0")+48) {
		t.Errorf("a round closed over 1,000 sites is %d bytes", n)
	}
}

// tickedTracker is a SQLite store without LogBatches whose LogBatch calls
// each wait for a tick: a slow tracker that keeps writing.
type tickedTracker struct {
	plainTracker
	tick <-chan time.Time
}

func (g tickedTracker) LogBatch(ctx context.Context, runID string, ms []tracking.Metric, ps []tracking.Param, tags []tracking.Tag) error {
	select {
	case <-g.tick:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.plainTracker.LogBatch(ctx, runID, ms, ps, tags)
}

// TestRecorderDrainsWhileItWrites: a job's end waits past RecordDrain for
// a tracker that is slow but writing, and nothing is dropped.
func TestRecorderDrainsWhileItWrites(t *testing.T) {
	const sites, drain = 30, 200 * time.Millisecond
	tick := time.NewTicker(10 * time.Millisecond) // 60 site batches: 600 ms
	defer tick.Stop()
	store := openStore(t)
	r, _ := newTestRecorder(t, tickedTracker{plainTracker{store}, tick.C}, Config{})
	r.publish(JobStarted{Experiment: "e"})
	r.publish(ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 1})
	r.publish(RoundStarted{Arm: "fedavg", Round: 1, Rounds: 1, Attempt: 1})
	for i := range sites {
		r.publish(UpdateAccepted{Arm: "fedavg", Round: 1, Site: fmt.Sprintf("site-%d", i), NumSamples: 1})
	}
	r.publish(RoundClosed{Arm: "fedavg", Round: 1, Rounds: 1})
	r.publish(ArmFinished{Arm: "fedavg", Status: tracking.StatusFinished})
	r.publish(JobFinished{})
	start := time.Now()
	r.finish(drain)
	if took := time.Since(start); took < drain {
		t.Fatalf("finish took %v, less than one drain (%v): the tracker was not slow enough for this test", took, drain)
	}
	if n := r.droppedCount(); n != 0 {
		t.Errorf("dropped %d events, want none: the tracker was writing", n)
	}
	runs, _, err := store.SearchRuns(context.Background(), tracking.RunQuery{Filter: "metrics.accepted = 1"})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != sites {
		t.Errorf("%d site runs hold accepted = 1, want %d", len(runs), sites)
	}
}

// TestRecordQueue: a job's queue holds two rounds of its arms' events
// where the configured bound holds fewer.
func TestRecordQueue(t *testing.T) {
	for _, tc := range []struct {
		name  string
		sites string
		arms  int
		queue int
		want  int
	}{
		{"small job: the configured bound", "{count: 3}", 1, DefaultRecordQueue, DefaultRecordQueue},
		{"10,000 sites", "{count: 10000}", 1, DefaultRecordQueue, 2 * (2*10000 + 3)},
		// The arms run one after another: two rounds of one bound the queue.
		{"a fifth of 10,000 sites a round, two arms", "{count: 10000, fraction: 0.2}", 2, DefaultRecordQueue, 2 * (2*2000 + 3)},
		{"a configured bound above the job's", "{count: 10000}", 1, 1 << 20, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			arms := "arms:\n"
			for i := range tc.arms {
				arms += fmt.Sprintf("  - {name: a%d, strategy: fedavg}\n", i)
			}
			spec, err := job.Parse([]byte("name: q\ndata: {dataset: synthetic}\nmodel: {kind: logreg}\nsites: " + tc.sites + "\nrounds: 2\n" + arms))
			if err != nil {
				t.Fatal(err)
			}
			if got := recordQueue(tc.queue, spec); got != tc.want {
				t.Errorf("recordQueue(%d) = %d, want %d", tc.queue, got, tc.want)
			}
		})
	}
}

// openStore opens a fresh SQLite tracking store.
func openStore(t testing.TB) *tracking.SQLiteStore {
	t.Helper()
	store, err := tracking.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "cohort.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// runEvents feeds evs to a new recorder and waits until they are written.
func runEvents(t *testing.T, store *tracking.SQLiteStore, evs ...Event) *recorder {
	t.Helper()
	r, _ := newTestRecorder(t, store, Config{})
	for _, ev := range evs {
		r.publish(ev)
	}
	r.finish(10 * time.Second)
	if n := r.droppedCount(); n != 0 {
		t.Fatalf("dropped %d events", n)
	}
	return r
}

// history is the values of a run's metric at step, in logging order.
func metricValues(t *testing.T, store *tracking.SQLiteStore, runID, key string, step int64) []float64 {
	t.Helper()
	h, err := store.GetMetricHistory(context.Background(), runID, key)
	if err != nil {
		t.Fatal(err)
	}
	var out []float64
	for _, m := range h {
		if m.Step == step {
			out = append(out, m.Value)
		}
	}
	return out
}

func tag(t *testing.T, store *tracking.SQLiteStore, runID, key string) string {
	t.Helper()
	run, err := store.GetRun(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := run.Data.Tag(key)
	return v
}

// TestRecorderRoundOutcomes scripts rounds and checks what each site run
// says about them: an update aggregated by an attempt that then failed is
// discarded (accepted 0), not credited; a site a failed attempt marked is
// marked ok once a retry counts it.
func TestRecorderRoundOutcomes(t *testing.T) {
	store := openStore(t)
	up := func(r int, site string) UpdateAccepted {
		return UpdateAccepted{Arm: "fedavg", Round: r, Site: site, NumSamples: 10, Metrics: map[string]float64{"train_loss": 0.5}}
	}
	r := runEvents(t, store,
		JobStarted{Experiment: "e", Params: map[string]string{"rounds": "2"}},
		ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 2},
		// Round 1, attempt 1: site-1 aggregated, site-2 failed, the round fails.
		RoundStarted{Arm: "fedavg", Round: 1, Rounds: 2, Attempt: 1},
		up(1, "site-1"),
		UpdateRefused{Arm: "fedavg", Round: 1, Site: "site-2", Status: "failed", Reason: "out of memory"},
		RoundFailed{Arm: "fedavg", Round: 1, Err: "quorum unreachable", Retry: true},
		// Attempt 2: both count.
		RoundStarted{Arm: "fedavg", Round: 1, Rounds: 2, Attempt: 2},
		up(1, "site-1"), up(1, "site-2"),
		RoundClosed{Arm: "fedavg", Round: 1, Rounds: 2, Metrics: map[string]float64{tracking.MetricRoundSeconds: 1}, EnergyMethod: "estimated",
			WeightFractions: map[string]float64{"site-1": 0.5, "site-2": 0.5}},
		// Round 2: site-1 aggregated, then the job stops before the round
		// commits (this coordinator lost the lead).
		RoundStarted{Arm: "fedavg", Round: 2, Rounds: 2, Attempt: 1},
		up(2, "site-1"),
		JobFinished{Interrupted: true},
	)
	arm := r.arms["fedavg"]
	s1, s2 := arm.siteRuns["site-1"], arm.siteRuns["site-2"]
	if s1 == "" || s2 == "" {
		t.Fatalf("site runs = %v, want site-1 and site-2", arm.siteRuns)
	}
	for _, tc := range []struct {
		run, site string
		step      int64
		want      []float64
	}{
		{s1, "site-1", 1, []float64{0, 1}}, // discarded by attempt 1, credited by attempt 2
		{s2, "site-2", 1, []float64{0, 1}}, // failed in attempt 1, credited by attempt 2
		{s1, "site-1", 2, nil},             // the round never committed
	} {
		if got := metricValues(t, store, tc.run, tracking.MetricAccepted, tc.step); fmt.Sprint(got) != fmt.Sprint(tc.want) {
			t.Errorf("%s accepted at round %d = %v, want %v", tc.site, tc.step, got, tc.want)
		}
	}
	for _, tc := range []struct {
		run, site, want string
	}{
		{s1, "site-1", "ok: accepted on attempt 2 (earlier: discarded: attempt 1 at the round failed (quorum unreachable); the update was not used)"},
		{s2, "site-2", "ok: accepted on attempt 2 (earlier: failed: out of memory)"},
	} {
		if got := tag(t, store, tc.run, tracking.RoundStatusTag(1)); got != tc.want {
			t.Errorf("%s %s = %q, want %q", tc.site, tracking.RoundStatusTag(1), got, tc.want)
		}
	}
	if got := metricValues(t, store, s1, MetricWeightFraction, 1); fmt.Sprint(got) != "[0.5]" {
		t.Errorf("site-1 weight_fraction at round 1 = %v, want [0.5]", got)
	}
	// The interrupted job's runs stay open for the next leader.
	run, err := store.GetRun(context.Background(), r.jobRunID)
	if err != nil {
		t.Fatal(err)
	}
	if run.Info.Status != tracking.StatusRunning {
		t.Errorf("interrupted job run status = %s, want RUNNING", run.Info.Status)
	}
}

// TestRecorderCountsFailovers resumes a job twice: every run counts both
// failovers and describes the last; a resumed round's discarded attempt is
// never credited.
func TestRecorderCountsFailovers(t *testing.T) {
	store := openStore(t)
	first := runEvents(t, store,
		JobStarted{Experiment: "e"},
		ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 2},
		RoundStarted{Arm: "fedavg", Round: 1, Rounds: 2, Attempt: 1},
		UpdateAccepted{Arm: "fedavg", Round: 1, Site: "site-1", NumSamples: 1},
		JobFinished{Interrupted: true},
	)
	arm := first.arms["fedavg"]
	ids := ha.RunIDs{Experiment: first.expID, Job: first.jobRunID, Arms: map[string]string{"fedavg": arm.runID}}
	resume := func(coord string) {
		runEvents(t, store,
			JobStarted{Experiment: "e", Resumed: ids, Coordinator: coord},
			ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 2, RunID: arm.runID, SiteRuns: arm.siteRuns},
			ArmResumed{Arm: "fedavg", Round: 1, Coordinator: coord},
			JobFinished{Interrupted: true},
		)
	}
	resume("coord-b")
	resume("coord-c")
	for _, id := range []string{first.jobRunID, arm.runID, arm.siteRuns["site-1"]} {
		if got := tag(t, store, id, TagFailovers); got != "2" {
			t.Errorf("run %s: %s = %q, want 2", id, TagFailovers, got)
		}
		if got := tag(t, store, id, TagFailover); !strings.Contains(got, "coord-c") {
			t.Errorf("run %s: %s = %q, want the last failover (coord-c)", id, TagFailover, got)
		}
	}
	if got := metricValues(t, store, arm.siteRuns["site-1"], tracking.MetricAccepted, 1); len(got) != 0 {
		t.Errorf("site-1 accepted at round 1 = %v, want none: the attempt never committed", got)
	}
	if got := metricValues(t, store, arm.runID, MetricFailover, 1); fmt.Sprint(got) != "[1 1]" {
		t.Errorf("arm run failover at round 1 = %v, want [1 1]", got)
	}
}

// TestRecorderAdoptsUnreplicatedSiteRuns: a leader that created a site's
// run lost the lead before the run's id was replicated; the next leader
// resumes the arm with the ids it has, finds the site run under the arm
// run and logs into it, not into a second one, and marks the failover
// on it.
func TestRecorderAdoptsUnreplicatedSiteRuns(t *testing.T) {
	store := openStore(t)
	first := runEvents(t, store,
		JobStarted{Experiment: "e"},
		ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 2},
		RoundStarted{Arm: "fedavg", Round: 1, Rounds: 2, Attempt: 1},
		UpdateAccepted{Arm: "fedavg", Round: 1, Site: "site-1", NumSamples: 1},
		UpdateAccepted{Arm: "fedavg", Round: 1, Site: "site-2", NumSamples: 1},
		JobFinished{Interrupted: true},
	)
	arm := first.arms["fedavg"]
	ids := ha.RunIDs{Experiment: first.expID, Job: first.jobRunID, Arms: map[string]string{"fedavg": arm.runID}}
	// Only site-2's id made it into the replicated state.
	known := map[string]string{"site-2": arm.siteRuns["site-2"]}
	second := runEvents(t, store,
		JobStarted{Experiment: "e", Resumed: ids, Coordinator: "coord-b"},
		ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 2, RunID: arm.runID, SiteRuns: known},
		ArmResumed{Arm: "fedavg", Round: 1, Coordinator: "coord-b"},
		RoundStarted{Arm: "fedavg", Round: 1, Rounds: 2, Attempt: 1},
		UpdateAccepted{Arm: "fedavg", Round: 1, Site: "site-1", NumSamples: 1},
		JobFinished{Interrupted: true},
	)
	if got, want := second.arms["fedavg"].siteRuns, arm.siteRuns; !maps.Equal(got, want) {
		t.Errorf("resumed arm's site runs = %v, want the first leader's %v", got, want)
	}
	children, err := store.ChildRuns(context.Background(), arm.runID)
	if err != nil {
		t.Fatal(err)
	}
	if len(children) != 2 {
		var names []string
		for _, c := range children {
			names = append(names, c.Info.RunName)
		}
		t.Errorf("arm run has %d site runs %v, want 2: a failover must not open new ones", len(children), names)
	}
	if got := tag(t, store, arm.siteRuns["site-1"], TagFailovers); got != "1" {
		t.Errorf("adopted site-1 run: %s = %q, want 1", TagFailovers, got)
	}
}
