package mlflowclient

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The interfaces Client satisfies: the tracking package's, and the
// coordinator's Tracker (server/deps.go), copied here since importing
// server would be a cycle.
var (
	_ tracking.RunReader   = (*Client)(nil)
	_ tracking.InputLogger = (*Client)(nil)
	_ coordinatorTracker   = (*Client)(nil)
	_ batchLogger          = (*Client)(nil)
)

// batchLogger is server.BatchLogger, copied for the same reason.
type batchLogger interface {
	LogBatches(ctx context.Context, batches []tracking.RunBatch) error
}

type coordinatorTracker interface {
	EnsureExperiment(ctx context.Context, name string) (string, error)
	CreateRun(ctx context.Context, req tracking.CreateRun) (tracking.Run, error)
	UpdateRun(ctx context.Context, runID string, status tracking.RunStatus, end time.Time, name string) error
	LogBatch(ctx context.Context, runID string, metrics []tracking.Metric, params []tracking.Param, tags []tracking.Tag) error
	LogArtifact(ctx context.Context, runID, relPath string, r io.Reader) error
	tracking.RunReader
}

func noEnv(string) string { return "" }

// testConfig is a Config with fast retries and flushes.
func testConfig(t *testing.T, uri string) Config {
	return Config{
		URI: uri, SpoolDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})),
		BackoffFactor: time.Millisecond, BackoffJitter: 1, BackoffMax: 5 * time.Millisecond,
		FlushInterval: 5 * time.Millisecond, MaxFlushBackoff: 20 * time.Millisecond,
		FinalFlushTimeout: time.Second, RequestTimeout: 5 * time.Second, CreateTimeout: time.Second,
	}
}

func newTestClient(t *testing.T, cfg Config) *Client {
	t.Helper()
	c, err := newClient(cfg, noEnv)
	if err != nil {
		t.Fatalf("newClient: %v", err)
	}
	t.Cleanup(func() {
		c.Close()
		c.cfg.HTTPClient.CloseIdleConnections()
	})
	return c
}

func startFake(t *testing.T) (*fakeMLflow, *httptest.Server) {
	f := newFake(t)
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

// runInBackground starts c.Run; the returned function stops it and checks
// it returned nil.
func runInBackground(t *testing.T, c *Client) func() {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run = %v, want nil", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func flush(t *testing.T, c *Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush = %v, want nil", err)
	}
}

func metrics(key string, from, to int) []tracking.Metric {
	var ms []tracking.Metric
	for i := from; i <= to; i++ {
		ms = append(ms, tracking.Metric{Key: key, Value: float64(i) / 100, Timestamp: 1700000000000 + int64(i), Step: int64(i)})
	}
	return ms
}

func TestRunLayoutAndCompare(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	exp, err := c.EnsureExperiment(ctx, "fashion-mnist")
	if err != nil {
		t.Fatal(err)
	}
	job, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "job", Tags: map[string]string{tracking.TagJobID: "j1"}})
	if err != nil {
		t.Fatal(err)
	}
	if isPlaceholder(job.Info.RunID) || len(job.Info.RunID) != 32 {
		t.Fatalf("CreateRun with the server up: run ID %q, want the server's", job.Info.RunID)
	}
	if err := c.LogBatch(ctx, job.Info.RunID, nil, []tracking.Param{{Key: "rounds", Value: "3"}}, nil); err != nil {
		t.Fatal(err)
	}
	for i, arm := range []string{tracking.KindCentralized, "fedavg"} {
		kind := tracking.KindFederated
		if i == 0 {
			kind = tracking.KindCentralized
		}
		a, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: arm, ParentRunID: job.Info.RunID,
			StartTime: time.UnixMilli(1700000000000 + int64(i)), Tags: map[string]string{tracking.TagArm: arm, tracking.TagKind: kind}})
		if err != nil {
			t.Fatal(err)
		}
		for r := 1; r <= 3; r++ {
			ms := []tracking.Metric{
				{Key: tracking.MetricTestAccuracy, Value: 0.5 + 0.1*float64(r) + 0.01*float64(i), Timestamp: int64(r), Step: int64(r)},
				{Key: tracking.MetricRoundSeconds, Value: 2, Timestamp: int64(r), Step: int64(r)},
				{Key: tracking.MetricEnergyJoules, Value: 10, Timestamp: int64(r), Step: int64(r)},
			}
			if err := c.LogBatch(ctx, a.Info.RunID, ms, nil, []tracking.Tag{{Key: tracking.TagEnergyMethod, Value: "estimated"}}); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.UpdateRun(ctx, a.Info.RunID, tracking.StatusFinished, time.UnixMilli(1700000009000), ""); err != nil {
			t.Fatal(err)
		}
	}
	// No Run and no Flush: the reads flush first.
	cmpn, err := tracking.Compare(ctx, c, job.Info.RunID)
	if err != nil {
		t.Fatalf("Compare: %v", err)
	}
	var got []string
	for _, a := range cmpn.Arms {
		got = append(got, a.Name)
		if a.Rounds != 3 || a.WallSeconds != 6 || a.EnergyJoules != 30 || a.EnergyMethod != "estimated" {
			t.Errorf("arm %s = %+v, want 3 rounds, 6 s, 30 J, estimated", a.Name, a)
		}
	}
	if diff := cmp.Diff([]string{"centralized", "fedavg"}, got); diff != "" {
		t.Errorf("Compare arms (-want +got):\n%s", diff)
	}
	if got, want := cmpn.Arms[1].FinalAccuracy, 0.81; math.Abs(got-want) > 1e-9 {
		t.Errorf("fedavg final accuracy = %v, want %v", got, want)
	}
	run, err := c.GetRun(ctx, cmpn.Arms[0].RunID)
	if err != nil {
		t.Fatal(err)
	}
	if run.Info.Status != tracking.StatusFinished || !run.Info.EndTime.Equal(time.UnixMilli(1700000009000)) {
		t.Errorf("GetRun status, end = %s, %v; want FINISHED, 1700000009000", run.Info.Status, run.Info.EndTime)
	}
	if p, _ := run.Data.Tag(tracking.TagParentRunID); p != job.Info.RunID {
		t.Errorf("arm's %s = %q, want %q", tracking.TagParentRunID, p, job.Info.RunID)
	}
	jr, _ := c.GetRun(ctx, job.Info.RunID)
	if v, _ := jr.Data.Param("rounds"); v != "3" {
		t.Errorf("job param rounds = %q, want 3", v)
	}
	if n := f.countCalls("POST runs/search"); n < 1 {
		t.Errorf("ChildRuns made %d runs/search calls, want ≥ 1", n)
	}
}

func TestEnsureExperiment(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(f *fakeMLflow)
		wantID  string
		wantErr error
	}{
		{name: "new", wantID: "1"},
		{name: "existing", setup: func(f *fakeMLflow) {
			f.exps = append(f.exps, &fakeExp{id: "1", name: "e", stage: "active"})
		}, wantID: "1"},
		{name: "deleted", setup: func(f *fakeMLflow) {
			f.exps = append(f.exps, &fakeExp{id: "1", name: "e", stage: "deleted"})
		}, wantErr: tracking.ErrExperimentDeleted},
		{name: "created concurrently", setup: func(f *fakeMLflow) {
			first := true
			f.hook = func(w http.ResponseWriter, r *http.Request, endpoint string) bool {
				if endpoint != "experiments/get-by-name" || !first {
					return false
				}
				first = false
				// Another client creates it between our get and create.
				f.mu.Lock()
				f.exps = append(f.exps, &fakeExp{id: "7", name: "e", stage: "active"})
				f.mu.Unlock()
				writeJSON(w, 404, map[string]string{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"})
				return true
			}
		}, wantID: "7"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := startFake(t)
			if tt.setup != nil {
				tt.setup(f)
			}
			c := newTestClient(t, testConfig(t, srv.URL))
			id, err := c.EnsureExperiment(t.Context(), "e")
			if !errors.Is(err, tt.wantErr) || id != tt.wantID {
				t.Errorf("EnsureExperiment = %q, %v; want %q, %v", id, err, tt.wantID, tt.wantErr)
			}
		})
	}
}

func TestLogBatchSplitsWithinMLflowLimits(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	run, err := c.CreateRun(ctx, tracking.CreateRun{Name: "big"})
	if err != nil {
		t.Fatal(err)
	}
	ms := metrics("loss", 1, 2500)
	var ps []tracking.Param
	var ts []tracking.Tag
	for i := range 250 {
		ps = append(ps, tracking.Param{Key: "p" + itoa(i), Value: "v"})
	}
	for i := range 150 {
		ts = append(ts, tracking.Tag{Key: "t" + itoa(i), Value: "v"})
	}
	if err := c.LogBatch(ctx, run.Info.RunID, ms, ps, ts); err != nil {
		t.Fatal(err)
	}
	flush(t, c)
	if got, want := f.countCalls("POST runs/log-batch"), 3; got != want {
		t.Errorf("log-batch requests = %d, want %d", got, want)
	}
	if diff := cmp.Diff(ms, f.history(run.Info.RunID, "loss")); diff != "" {
		t.Errorf("points on the server (-want +got):\n%s", diff)
	}
	got, _ := c.GetRun(ctx, run.Info.RunID)
	if len(got.Data.Params) != 250 || len(got.Data.Tags) != 152 { // + mlflow.runName, cohort.create_key
		t.Errorf("run holds %d params, %d tags; want 250, 152", len(got.Data.Params), len(got.Data.Tags))
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

func TestNaNAndInfinity(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	run, err := c.CreateRun(ctx, tracking.CreateRun{})
	if err != nil {
		t.Fatal(err)
	}
	ms := []tracking.Metric{
		{Key: "m", Value: math.NaN(), Timestamp: 1, Step: 1},
		{Key: "m", Value: math.Inf(1), Timestamp: 2, Step: 2},
		{Key: "m", Value: math.Inf(-1), Timestamp: 3, Step: 3},
		{Key: "m", Value: 1.5, Timestamp: 4, Step: 4},
	}
	if err := c.LogBatch(ctx, run.Info.RunID, ms, nil, nil); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetMetricHistory(ctx, run.Info.RunID, "m")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ms, got, cmpopts.EquateNaNs()); diff != "" {
		t.Errorf("GetMetricHistory (-want +got):\n%s", diff)
	}
	f.mu.Lock()
	body := f.bodies["runs/log-batch"][0]
	f.mu.Unlock()
	for _, want := range []string{`"value":"NaN"`, `"value":"Infinity"`, `"value":"-Infinity"`, `"value":1.5`} {
		if !strings.Contains(body, want) {
			t.Errorf("log-batch body %s lacks %s", body, want)
		}
	}
}

func TestInvalidWritesFailAtTheCall(t *testing.T) {
	f, srv := startFake(t)
	f.exps = append(f.exps, &fakeExp{id: "1", name: "gone", stage: "deleted"})
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	run, err := c.CreateRun(ctx, tracking.CreateRun{})
	if err != nil {
		t.Fatal(err)
	}
	id := run.Info.RunID
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"long param", func() error {
			return c.LogBatch(ctx, id, nil, []tracking.Param{{Key: "p", Value: strings.Repeat("x", 6001)}}, nil)
		}, tracking.ErrInvalid},
		{"bad key", func() error { return c.LogBatch(ctx, id, []tracking.Metric{{Key: "a//b"}}, nil, nil) }, tracking.ErrInvalid},
		{"LogBatches, bad key in the second", func() error {
			return c.LogBatches(ctx, []tracking.RunBatch{{RunID: id, Tags: []tracking.Tag{{Key: "t", Value: "v"}}}, {RunID: id, Metrics: []tracking.Metric{{Key: "a//b"}}}})
		}, tracking.ErrInvalid},
		{"LogBatches, no run ID", func() error {
			return c.LogBatches(ctx, []tracking.RunBatch{{Tags: []tracking.Tag{{Key: "t", Value: "v"}}}})
		}, tracking.ErrInvalid},
		{"conflicting params", func() error {
			return c.LogBatch(ctx, id, nil, []tracking.Param{{Key: "p", Value: "1"}, {Key: "p", Value: "2"}}, nil)
		}, tracking.ErrParamConflict},
		{"long tag", func() error {
			return c.LogBatch(ctx, id, nil, nil, []tracking.Tag{{Key: "t", Value: strings.Repeat("x", 8001)}})
		}, tracking.ErrInvalid},
		{"bad status", func() error { return c.UpdateRun(ctx, id, "DONE", time.Time{}, "") }, tracking.ErrInvalid},
		{"artifact climbing out", func() error { return c.LogArtifact(ctx, id, "../x", strings.NewReader("")) }, tracking.ErrInvalid},
		{"long digest", func() error {
			return c.LogInputs(ctx, id, []tracking.DatasetInput{{Dataset: tracking.Dataset{Name: "d", Digest: strings.Repeat("a", 37), SourceType: "local", Source: "{}"}}})
		}, tracking.ErrInvalid},
		{"dataset without source", func() error {
			return c.LogInputs(ctx, id, []tracking.DatasetInput{{Dataset: tracking.Dataset{Name: "d", Digest: "x", SourceType: "local"}}})
		}, tracking.ErrInvalid},
		{"dataset without name", func() error {
			return c.LogInputs(ctx, id, []tracking.DatasetInput{{Dataset: tracking.Dataset{Digest: "x", SourceType: "local", Source: "{}"}}})
		}, tracking.ErrInvalid},
		{"long run name", func() error { return c.UpdateRun(ctx, id, "", time.Time{}, strings.Repeat("n", 8001)) }, tracking.ErrInvalid},
		{"name and tag disagree", func() error {
			_, err := c.CreateRun(ctx, tracking.CreateRun{Name: "a", Tags: map[string]string{tracking.TagRunName: "b"}})
			return err
		}, tracking.ErrInvalid},
		{"empty experiment name", func() error {
			_, err := c.EnsureExperiment(ctx, "")
			return err
		}, tracking.ErrInvalid},
		{"deleted experiment", func() error {
			_, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: "1"})
			return err
		}, tracking.ErrExperimentDeleted},
		{"unknown experiment", func() error {
			_, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: "99"})
			return err
		}, tracking.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Errorf("err = %v, want %v", err, tt.want)
			}
		})
	}
	if n := c.Stats().Pending; n != 0 {
		t.Errorf("Pending = %d after refused calls, want 0", n)
	}
}

func TestRefusedWriteIsReportedNotRetried(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	run, _ := c.CreateRun(ctx, tracking.CreateRun{})
	id := run.Info.RunID
	_ = c.LogBatch(ctx, id, metrics("a", 1, 1), []tracking.Param{{Key: "lr", Value: "0.1"}}, nil)
	_ = c.LogBatch(ctx, id, metrics("a", 2, 2), []tracking.Param{{Key: "lr", Value: "0.2"}}, nil) // the server refuses it
	_ = c.LogBatch(ctx, id, metrics("a", 3, 3), nil, nil)
	err := c.Flush(ctx)
	if !errors.Is(err, tracking.ErrInvalid) || !strings.Contains(err.Error(), "Changing param values is not allowed") {
		t.Fatalf("Flush = %v, want the server's INVALID_PARAMETER_VALUE", err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Errorf("second Flush = %v, want nil (reported once)", err)
	}
	if diff := cmp.Diff(append(metrics("a", 1, 1), metrics("a", 3, 3)...), f.history(id, "a")); diff != "" {
		t.Errorf("points (-want +got):\n%s", diff)
	}
	if s := c.Stats(); s.Refused != 1 || s.Pending != 0 {
		t.Errorf("Stats = %+v, want 1 refused, 0 pending", s)
	}
}

func TestCoalescesSpooledBatches(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	run, _ := c.CreateRun(ctx, tracking.CreateRun{})
	for i := 1; i <= 50; i++ {
		if err := c.LogBatch(ctx, run.Info.RunID, metrics("a", 2*i-1, 2*i), nil, []tracking.Tag{{Key: "round", Value: itoa(i)}}); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, c)
	// Tags with the same key are never merged into one request (last one
	// wins), so each batch is its own request here...
	if n := f.countCalls("POST runs/log-batch"); n != 50 {
		t.Errorf("log-batch requests = %d, want 50", n)
	}
	for i := 51; i <= 100; i++ {
		_ = c.LogBatch(ctx, run.Info.RunID, metrics("a", 2*i-1, 2*i), nil, nil)
	}
	flush(t, c)
	// ...while plain metric batches are.
	if n := f.countCalls("POST runs/log-batch"); n != 51 {
		t.Errorf("log-batch requests = %d, want 51", n)
	}
	if diff := cmp.Diff(metrics("a", 1, 200), f.history(run.Info.RunID, "a")); diff != "" {
		t.Errorf("points (-want +got):\n%s", diff)
	}
	got, _ := c.GetRun(ctx, run.Info.RunID)
	if v, _ := got.Data.Tag("round"); v != "50" {
		t.Errorf("tag round = %q, want 50", v)
	}
}

func TestLogInputs(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	run, _ := c.CreateRun(ctx, tracking.CreateRun{})
	in := []tracking.DatasetInput{{
		Tags:    []tracking.InputTag{{Key: tracking.TagDatasetContext, Value: "training"}},
		Dataset: tracking.Dataset{Name: "fmnist/train/site-1", Digest: "abc123", SourceType: "local", Source: `{"path":"/d"}`, Profile: `{"num_samples":10}`},
	}}
	if err := c.LogInputs(ctx, run.Info.RunID, in); err != nil {
		t.Fatal(err)
	}
	flush(t, c)
	f.mu.Lock()
	got := f.runs[run.Info.RunID].inputs
	f.mu.Unlock()
	want := []mlflowwire.DatasetInput{{Tags: []mlflowwire.KeyValue{{Key: tracking.TagDatasetContext, Value: "training"}},
		Dataset: mlflowwire.Dataset{Name: "fmnist/train/site-1", Digest: "abc123", SourceType: "local", Source: `{"path":"/d"}`, Profile: `{"num_samples":10}`}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("inputs on the server (-want +got):\n%s", diff)
	}
}

func TestArtifacts(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	run, _ := c.CreateRun(ctx, tracking.CreateRun{})
	if err := c.LogArtifact(ctx, run.Info.RunID, "energy/round 0001.json", strings.NewReader(`{"j":1}`)); err != nil {
		t.Fatal(err)
	}
	flush(t, c)
	f.mu.Lock()
	got := string(f.artifacts["0/"+run.Info.RunID+"/artifacts/energy/round 0001.json"])
	f.mu.Unlock()
	if got != `{"j":1}` {
		t.Errorf("artifact on the server = %q, want the JSON", got)
	}

	t.Run("server without artifact proxy", func(t *testing.T) {
		f.mu.Lock()
		f.serveArtifacts = false
		f.mu.Unlock()
		s3run, _ := c.CreateRun(ctx, tracking.CreateRun{})
		err := c.LogArtifact(ctx, s3run.Info.RunID, "plot.png", strings.NewReader("png"))
		if !errors.Is(err, ErrNoArtifactProxy) || !strings.Contains(err.Error(), "mlflow server --serve-artifacts") {
			t.Errorf("LogArtifact = %v, want ErrNoArtifactProxy naming --serve-artifacts", err)
		}
		// A run created while the proxy was on, the server restarted without it.
		if err := c.LogArtifact(ctx, run.Info.RunID, "plot.png", strings.NewReader("png")); err != nil {
			t.Fatal(err)
		}
		err = c.Flush(ctx)
		if !errors.Is(err, ErrNoArtifactProxy) {
			t.Errorf("Flush = %v, want ErrNoArtifactProxy", err)
		}
		if n := c.Stats().Pending; n != 0 {
			t.Errorf("Pending = %d, want 0: a server without the proxy is reported, not retried forever", n)
		}
	})
}

// TestLogBatchesLogsEveryRun logs to two runs in one LogBatches call: each
// run reads back its own metrics and tags once flushed.
func TestLogBatchesLogsEveryRun(t *testing.T) {
	_, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	var ids []string
	for range 2 {
		run, err := c.CreateRun(ctx, tracking.CreateRun{})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, run.Info.RunID)
	}
	err := c.LogBatches(ctx, []tracking.RunBatch{
		{RunID: ids[0], Metrics: metrics("acc", 1, 1), Tags: []tracking.Tag{{Key: "site", Value: "a"}}},
		{RunID: ids[1], Metrics: metrics("acc", 2, 2), Tags: []tracking.Tag{{Key: "site", Value: "b"}}},
	})
	if err != nil {
		t.Fatalf("LogBatches = %v", err)
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush = %v", err)
	}
	for i, want := range []struct {
		site string
		acc  float64
	}{{"a", 0.01}, {"b", 0.02}} {
		run, err := c.GetRun(ctx, ids[i])
		if err != nil {
			t.Fatal(err)
		}
		site, _ := run.Data.Tag("site")
		acc, _ := run.Data.Metric("acc")
		if site != want.site || acc.Value != want.acc {
			t.Errorf("run %d: site %q, acc %v; want %q, %v", i, site, acc.Value, want.site, want.acc)
		}
	}
}
