package mlflowserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if searchDir != "" {
		_ = os.RemoveAll(searchDir)
	}
	os.Exit(code)
}

// BenchmarkLogBatchHTTP measures metric points per second through
// POST /api/2.0/mlflow/runs/log-batch over loopback HTTP into the SQLite
// store: batches of 1000 points (10 keys × 100 steps), as the MLflow
// python client sends them.
func BenchmarkLogBatchHTTP(b *testing.B) {
	f := newFixture(b, Config{})
	id := f.createRun("0", nil)
	client := f.srv.Client()
	step := 0
	points := 0
	var buf bytes.Buffer
	for b.Loop() {
		ms := make([]map[string]any, 0, 1000)
		for i := range 1000 {
			ms = append(ms, map[string]any{"key": fmt.Sprintf("site/metric_%d", i%10), "value": float64(step) * 0.001, "timestamp": 1700000000000 + step, "step": step})
			if (i+1)%10 == 0 {
				step++
			}
		}
		buf.Reset()
		if err := json.NewEncoder(&buf).Encode(map[string]any{"run_id": id, "metrics": ms}); err != nil {
			b.Fatal(err)
		}
		resp, err := client.Post(f.srv.URL+api+"runs/log-batch", "application/json", &buf)
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("status %d", resp.StatusCode)
		}
		points += 1000
	}
	b.ReportMetric(float64(points)/b.Elapsed().Seconds(), "points/s")
}

var (
	searchOnce  sync.Once
	searchDir   string
	searchStore *tracking.SQLiteStore
	searchExp   string
	searchErr   error
)

// searchRuns is the size of the search benchmark's fixture.
const searchRuns = 10_000

// buildSearchFixture logs 10,000 runs × 10 metrics (acc uniform in [0,1))
// and a param algo (fedavg for half) once per benchmark process.
func buildSearchFixture() {
	ctx := context.Background()
	searchDir, searchErr = os.MkdirTemp("", "mlflowserver-bench-")
	if searchErr != nil {
		return
	}
	searchStore, searchErr = tracking.OpenSQLite(ctx, filepath.Join(searchDir, "bench.db"))
	if searchErr != nil {
		return
	}
	if searchExp, searchErr = searchStore.CreateExperiment(ctx, "bench", nil); searchErr != nil {
		return
	}
	algos := []string{"fedavg", "fedprox", "fedavg", "centralized"}
	start := time.UnixMilli(1700000000000)
	for i := range searchRuns {
		run, err := searchStore.CreateRun(ctx, tracking.CreateRun{ExperimentID: searchExp, Name: fmt.Sprintf("run-%05d", i), StartTime: start.Add(time.Duration(i) * time.Second), ProxiedArtifacts: true})
		if err != nil {
			searchErr = err
			return
		}
		ms := make([]tracking.Metric, 10)
		ms[0] = tracking.Metric{Key: "acc", Value: float64((i*7919)%10000) / 10000, Timestamp: 1}
		for k := 1; k < 10; k++ {
			ms[k] = tracking.Metric{Key: fmt.Sprintf("m%d", k), Value: float64(i * k), Timestamp: 1}
		}
		if err := searchStore.LogBatch(ctx, run.Info.RunID, ms, []tracking.Param{{Key: "algo", Value: algos[i%4]}}, nil); err != nil {
			searchErr = err
			return
		}
	}
}

// BenchmarkSearchRunsHTTP measures POST runs/search with filter
// metrics.acc > 0.5 and params.algo = 'fedavg', order_by metrics.acc DESC,
// max_results 100, over 10,000 runs × 10 metrics, over loopback HTTP.
func BenchmarkSearchRunsHTTP(b *testing.B) {
	t0 := time.Now()
	searchOnce.Do(buildSearchFixture)
	if searchErr != nil {
		b.Fatal(searchErr)
	}
	b.Logf("fixture of %d runs ready in %v", searchRuns, time.Since(t0).Round(time.Millisecond))
	s, err := New(searchStore, Config{})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(s)
	defer srv.Close()
	body, _ := json.Marshal(map[string]any{
		"experiment_ids": []string{searchExp},
		"filter":         "metrics.acc > 0.5 and params.algo = 'fedavg'",
		"order_by":       []string{"metrics.acc DESC"},
		"max_results":    100,
	})
	for b.Loop() {
		resp, err := srv.Client().Post(srv.URL+api+"runs/search", "application/json", bytes.NewReader(body))
		if err != nil {
			b.Fatal(err)
		}
		var out struct {
			Runs []json.RawMessage `json:"runs"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || len(out.Runs) != 100 {
			b.Fatalf("search: status %d, %d runs, %v", resp.StatusCode, len(out.Runs), err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/search")
}

var _ http.Handler = (*Server)(nil)

// BenchmarkRequestDecodeLogBatch measures the request-decoding layer
// alone (parse, MLflow's schema checks, decode into the handler's struct)
// on a log-batch body of 1000 metrics, the largest MLflow allows.
func BenchmarkRequestDecodeLogBatch(b *testing.B) {
	ms := make([]map[string]any, 1000)
	for i := range ms {
		ms[i] = map[string]any{"key": fmt.Sprintf("site/metric_%d", i%10), "value": float64(i) * 0.001, "timestamp": 1700000000000 + i, "step": i / 10}
	}
	body, err := json.Marshal(map[string]any{"run_id": "0123456789abcdef0123456789abcdef", "metrics": ms})
	if err != nil {
		b.Fatal(err)
	}
	schema := []param{p("run_id", isString, isRequired), each("metrics", metricSchema...)}
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		var req mlflowwire.LogBatch
		o, raw, err := parseBody(body)
		if err == nil {
			err = validate(o, schema, "")
		}
		if err == nil {
			err = json.Unmarshal(raw, &req)
		}
		if err != nil || len(req.Metrics) != 1000 {
			b.Fatalf("%v, %d metrics", err, len(req.Metrics))
		}
	}
}

// BenchmarkGetHistoryBulkHTTP measures the UI's get-history-bulk at its
// limits: 100 runs × 250 points, the 25,000 points one request may return.
func BenchmarkGetHistoryBulkHTTP(b *testing.B) {
	f := newFixture(b, Config{})
	ctx := context.Background()
	q := "?metric_key=loss"
	for range 100 {
		id := f.createRun("0", nil)
		pts := make([]tracking.Metric, 250)
		for s := range pts {
			pts[s] = tracking.Metric{Key: "loss", Value: 1 / float64(s+1), Timestamp: int64(1000 + s), Step: int64(s)}
		}
		if err := f.store.LogBatch(ctx, id, pts, nil, nil); err != nil {
			b.Fatal(err)
		}
		q += "&run_id=" + id
	}
	client := f.srv.Client()
	for b.Loop() {
		resp, err := client.Get(f.srv.URL + "/ajax-api/2.0/mlflow/metrics/get-history-bulk" + q)
		if err != nil {
			b.Fatal(err)
		}
		var out struct {
			Metrics []json.RawMessage `json:"metrics"`
		}
		err = json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if err != nil || len(out.Metrics) != 25000 {
			b.Fatalf("%v, %d points", err, len(out.Metrics))
		}
	}
	b.ReportMetric(25000*float64(b.N)/b.Elapsed().Seconds(), "points/s")
}
