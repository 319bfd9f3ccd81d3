package mlflowserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/tracking"
)

type fixture struct {
	t     testing.TB
	store *tracking.SQLiteStore
	srv   *httptest.Server
	dir   string
}

func newFixture(t testing.TB, cfg Config) *fixture {
	t.Helper()
	dir := t.TempDir()
	store, err := tracking.OpenSQLite(context.Background(), filepath.Join(dir, "mlflow.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s, err := New(store, cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &fixture{t: t, store: store, srv: srv, dir: dir}
}

// call sends body (a string of JSON, or any value to marshal) and returns
// the status and the decoded JSON response.
func (f *fixture) call(method, path string, body any) (int, map[string]any) {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 && strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(raw, &out); err != nil {
			f.t.Fatalf("%s %s: response %q is not JSON: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, out
}

// must calls and fails the test unless the status is 200.
func (f *fixture) must(method, path string, body any) map[string]any {
	f.t.Helper()
	st, out := f.call(method, path, body)
	if st != http.StatusOK {
		f.t.Fatalf("%s %s = %d %v; want 200", method, path, st, out)
	}
	return out
}

const api = "/api/2.0/mlflow/"

func (f *fixture) createRun(exp string, extra map[string]any) string {
	f.t.Helper()
	body := map[string]any{"experiment_id": exp, "start_time": 1700000000000}
	for k, v := range extra {
		body[k] = v
	}
	out := f.must("POST", api+"runs/create", body)
	return out["run"].(map[string]any)["info"].(map[string]any)["run_id"].(string)
}

func get(m map[string]any, keys ...string) any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	return v
}

func TestExperiments(t *testing.T) {
	f := newFixture(t, Config{})
	// The Default experiment always exists.
	out := f.must("GET", api+"experiments/get?experiment_id=0", nil)
	if got := get(out, "experiment", "name"); got != "Default" {
		t.Errorf("experiment 0 name = %v, want Default", got)
	}
	out = f.must("POST", api+"experiments/create", `{"name": "fmnist", "tags": [{"key": "team", "value": "kit"}], "unknown_field": 1}`)
	id, _ := out["experiment_id"].(string)
	if id == "" {
		t.Fatalf("create experiment response %v has no experiment_id", out)
	}
	out = f.must("GET", api+"experiments/get-by-name?experiment_name=fmnist", nil)
	exp := out["experiment"].(map[string]any)
	if exp["experiment_id"] != id || exp["lifecycle_stage"] != "active" {
		t.Errorf("get-by-name = %v", exp)
	}
	if _, ok := exp["creation_time"].(float64); !ok {
		t.Errorf("creation_time = %#v, want a JSON number", exp["creation_time"])
	}
	if diff := cmp.Diff([]any{map[string]any{"key": "team", "value": "kit"}}, exp["tags"]); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}
	if st, e := f.call("POST", api+"experiments/create", `{"name": "fmnist"}`); st != 400 || e["error_code"] != "RESOURCE_ALREADY_EXISTS" {
		t.Errorf("duplicate create = %d %v; want 400 RESOURCE_ALREADY_EXISTS", st, e)
	}
	f.must("POST", api+"experiments/update", map[string]any{"experiment_id": id, "new_name": "fmnist2"})
	f.must("POST", api+"experiments/set-experiment-tag", map[string]any{"experiment_id": id, "key": "k", "value": "v"})
	out = f.must("GET", "/ajax-api/2.0/mlflow/experiments/get?experiment_id="+id, nil)
	if get(out, "experiment", "name") != "fmnist2" || len(get(out, "experiment", "tags").([]any)) != 2 {
		t.Errorf("after rename and tag: %v", out)
	}
	f.must("POST", api+"experiments/create", `{"name": "synthetic"}`)
	// search: filter by name and tags, order_by, paging
	out = f.must("POST", api+"experiments/search", map[string]any{"filter": "name LIKE 'fmn%' AND tags.team = 'kit'"})
	if n := len(out["experiments"].([]any)); n != 1 {
		t.Errorf("search by name and tag found %d, want 1: %v", n, out)
	}
	out = f.must("POST", api+"experiments/search", map[string]any{"order_by": []string{"name ASC"}, "max_results": 2})
	var names []string
	for _, e := range out["experiments"].([]any) {
		names = append(names, e.(map[string]any)["name"].(string))
	}
	if diff := cmp.Diff([]string{"Default", "fmnist2"}, names); diff != "" {
		t.Errorf("page 1 (-want +got):\n%s", diff)
	}
	tok, _ := out["next_page_token"].(string)
	if tok == "" {
		t.Fatalf("no next_page_token on a full page: %v", out)
	}
	out = f.must("GET", api+"experiments/search?order_by=name+ASC&max_results=2&page_token="+url.QueryEscape(tok), nil)
	if n := len(out["experiments"].([]any)); n != 1 || out["next_page_token"] != nil {
		t.Errorf("page 2 = %v; want one experiment, no token", out)
	}
	f.must("POST", api+"experiments/delete", map[string]any{"experiment_id": id})
	if out = f.must("GET", api+"experiments/search?view_type=DELETED_ONLY", nil); len(out["experiments"].([]any)) != 1 {
		t.Errorf("deleted-only search = %v", out)
	}
	if st, e := f.call("POST", api+"runs/create", map[string]any{"experiment_id": id}); st != 400 || e["error_code"] != "INVALID_PARAMETER_VALUE" {
		t.Errorf("run in deleted experiment = %d %v", st, e)
	}
	f.must("POST", api+"experiments/restore", map[string]any{"experiment_id": id})
	if st, e := f.call("GET", api+"experiments/get?experiment_id=999", nil); st != 404 || e["error_code"] != "RESOURCE_DOES_NOT_EXIST" {
		t.Errorf("get missing experiment = %d %v", st, e)
	}
}

func TestRunLifecycle(t *testing.T) {
	f := newFixture(t, Config{})
	out := f.must("POST", api+"runs/create", map[string]any{"experiment_id": "0", "start_time": "1700000000000", "user_id": "alice"})
	info := get(out, "run", "info").(map[string]any)
	id := info["run_id"].(string)
	if info["run_uuid"] != id || info["status"] != "RUNNING" || info["start_time"] != 1700000000000.0 || info["user_id"] != "alice" {
		t.Errorf("created run info = %v", info)
	}
	if name, _ := info["run_name"].(string); name == "" {
		t.Errorf("a run created without a name has none: %v", info)
	}
	if want := "mlflow-artifacts:/0/" + id + "/artifacts"; info["artifact_uri"] != want {
		t.Errorf("artifact_uri = %v, want %s", info["artifact_uri"], want)
	}
	if _, ok := info["end_time"]; ok {
		t.Errorf("a running run has end_time: %v", info)
	}
	tags := get(out, "run", "data", "tags").([]any)
	if !slices.ContainsFunc(tags, func(t any) bool { return t.(map[string]any)["key"] == "mlflow.runName" }) {
		t.Errorf("no mlflow.runName tag: %v", tags)
	}
	out = f.must("POST", api+"runs/update", map[string]any{"run_id": id, "status": "FINISHED", "end_time": 1700000001000, "run_name": "final"})
	if ri := out["run_info"].(map[string]any); ri["status"] != "FINISHED" || ri["end_time"] != 1700000001000.0 || ri["run_name"] != "final" {
		t.Errorf("updated run_info = %v", ri)
	}
	// Logging into a finished run works.
	f.must("POST", api+"runs/log-metric", map[string]any{"run_id": id, "key": "acc", "value": 0.5, "timestamp": 1})
	f.must("POST", api+"runs/delete", map[string]any{"run_id": id})
	if out = f.must("GET", api+"runs/get?run_id="+id, nil); get(out, "run", "info", "lifecycle_stage") != "deleted" {
		t.Errorf("deleted run = %v", out)
	}
	if st, e := f.call("POST", api+"runs/log-metric", map[string]any{"run_id": id, "key": "acc", "value": 0.5, "timestamp": 1}); st != 400 || e["error_code"] != "INVALID_PARAMETER_VALUE" {
		t.Errorf("log into deleted run = %d %v", st, e)
	}
	f.must("POST", api+"runs/restore", map[string]any{"run_uuid": id})
	f.must("POST", api+"runs/log-metric", map[string]any{"run_id": id, "key": "acc", "value": 0.5, "timestamp": 1})
	if st, e := f.call("GET", api+"runs/get?run_id=00000000000000000000000000000000", nil); st != 404 || e["error_code"] != "RESOURCE_DOES_NOT_EXIST" {
		t.Errorf("get missing run = %d %v", st, e)
	}
}

func TestLogging(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.createRun("0", nil)
	f.must("POST", api+"runs/log-metric", `{"run_id": "`+id+`", "key": "loss", "value": 1.5, "timestamp": 10}`)
	f.must("POST", api+"runs/log-parameter", map[string]any{"run_id": id, "key": "lr", "value": "0.05"})
	f.must("POST", api+"runs/log-parameter", map[string]any{"run_id": id, "key": "lr", "value": "0.05"}) // same value again is fine
	if st, e := f.call("POST", api+"runs/log-parameter", map[string]any{"run_id": id, "key": "lr", "value": "0.1"}); st != 400 || e["error_code"] != "INVALID_PARAMETER_VALUE" {
		t.Errorf("changing a param = %d %v; want 400 INVALID_PARAMETER_VALUE", st, e)
	}
	f.must("POST", api+"runs/set-tag", map[string]any{"run_id": id, "key": "note", "value": "x"})
	f.must("POST", api+"runs/delete-tag", map[string]any{"run_id": id, "key": "note"})
	if st, e := f.call("POST", api+"runs/delete-tag", map[string]any{"run_id": id, "key": "note"}); st != 404 || e["error_code"] != "RESOURCE_DOES_NOT_EXIST" {
		t.Errorf("deleting a missing tag = %d %v", st, e)
	}
	f.must("POST", api+"runs/log-batch", map[string]any{
		"run_id": id,
		"metrics": []any{
			map[string]any{"key": "acc", "value": 0.9, "timestamp": 20, "step": 2},
			map[string]any{"key": "acc", "value": 0.8, "timestamp": 10, "step": 1},
			map[string]any{"key": "nan", "value": "NaN", "timestamp": 1},
			map[string]any{"key": "inf", "value": "Infinity", "timestamp": 1},
			map[string]any{"key": "ninf", "value": "-Infinity", "timestamp": 1},
		},
		"params": []any{map[string]any{"key": "algo", "value": "fedavg"}},
		"tags":   []any{map[string]any{"key": "site", "value": "kit"}},
	})
	out := f.must("GET", api+"runs/get?run_id="+id, nil)
	metrics := map[string]any{}
	for _, m := range get(out, "run", "data", "metrics").([]any) {
		mm := m.(map[string]any)
		metrics[mm["key"].(string)] = mm["value"]
		if mm["key"] == "loss" && mm["step"] != 0.0 {
			t.Errorf("step default = %v, want 0", mm["step"])
		}
	}
	want := map[string]any{"loss": 1.5, "acc": 0.9, "nan": "NaN", "inf": "Infinity", "ninf": "-Infinity"}
	if diff := cmp.Diff(want, metrics); diff != "" {
		t.Errorf("latest metrics (-want +got):\n%s", diff)
	}
	run, err := f.store.GetRun(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if m, _ := run.Data.Metric("nan"); !math.IsNaN(m.Value) {
		t.Errorf("stored nan = %v", m.Value)
	}
	if m, _ := run.Data.Metric("ninf"); !math.IsInf(m.Value, -1) {
		t.Errorf("stored -inf = %v", m.Value)
	}
	// get-history, paginated
	for i := range 5 {
		f.must("POST", api+"runs/log-metric", map[string]any{"run_id": id, "key": "h", "value": i, "timestamp": i, "step": i})
	}
	var steps []float64
	tok := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("get-history does not stop paging")
		}
		out = f.must("GET", api+"metrics/get-history?run_id="+id+"&metric_key=h&max_results=2&page_token="+url.QueryEscape(tok), nil)
		for _, m := range out["metrics"].([]any) {
			steps = append(steps, m.(map[string]any)["step"].(float64))
		}
		tok, _ = out["next_page_token"].(string)
		if tok == "" {
			break
		}
	}
	if diff := cmp.Diff([]float64{0, 1, 2, 3, 4}, steps); diff != "" {
		t.Errorf("history steps (-want +got):\n%s", diff)
	}
	if out = f.must("GET", api+"metrics/get-history?run_id="+id+"&metric_key=h", nil); len(out["metrics"].([]any)) != 5 || out["next_page_token"] != nil {
		t.Errorf("unpaged history = %v", out)
	}
}

func TestErrors(t *testing.T) {
	f := newFixture(t, Config{MaxBodyBytes: 1 << 16})
	id := f.createRun("0", nil)
	big := `{"run_id": "` + id + `", "key": "k", "value": "` + strings.Repeat("x", 1<<17) + `"}`
	tooMany := map[string]any{"run_id": id, "metrics": slices.Repeat([]any{map[string]any{"key": "a", "value": 1, "timestamp": 1}}, 1001)}
	tooManyParams := map[string]any{"run_id": id, "params": slices.Repeat([]any{map[string]any{"key": "a", "value": "1"}}, 101)}
	for _, c := range []struct {
		name, method, path string
		body               any
		status             int
		code               string
		msgHas             string
	}{
		{"missing run_id", "POST", "runs/log-metric", `{"key": "a", "value": 1, "timestamp": 1}`, 400, "INVALID_PARAMETER_VALUE", "run_id"},
		{"missing timestamp", "POST", "runs/log-metric", `{"run_id": "` + id + `", "key": "a", "value": 1}`, 400, "INVALID_PARAMETER_VALUE", "timestamp"},
		{"missing value", "POST", "runs/log-metric", `{"run_id": "` + id + `", "key": "a", "timestamp": 1}`, 400, "INVALID_PARAMETER_VALUE", "value"},
		{"metric value wrong type", "POST", "runs/log-metric", `{"run_id": "` + id + `", "key": "a", "value": "abc", "timestamp": 1}`, 400, "INVALID_PARAMETER_VALUE", "value"},
		{"timestamp wrong type", "POST", "runs/log-metric", `{"run_id": "` + id + `", "key": "a", "value": 1, "timestamp": true}`, 400, "INVALID_PARAMETER_VALUE", "timestamp"},
		{"key wrong type", "POST", "runs/log-parameter", `{"run_id": "` + id + `", "key": 5, "value": "1"}`, 400, "INVALID_PARAMETER_VALUE", "key"},
		{"batch metric wrong type", "POST", "runs/log-batch", `{"run_id": "` + id + `", "metrics": [{"key": "a", "value": {}, "timestamp": 1}]}`, 400, "INVALID_PARAMETER_VALUE", "metrics[0].value"},
		{"batch missing timestamp", "POST", "runs/log-batch", `{"run_id": "` + id + `", "metrics": [{"key": "a", "value": 1}]}`, 400, "INVALID_PARAMETER_VALUE", "metrics[0].timestamp"},
		{"malformed JSON", "POST", "runs/log-metric", `{"run_id": `, 400, "INVALID_PARAMETER_VALUE", "JSON"},
		{"unknown run", "POST", "runs/log-metric", `{"run_id": "nope", "key": "a", "value": 1, "timestamp": 1}`, 404, "RESOURCE_DOES_NOT_EXIST", "nope"},
		{"bad key", "POST", "runs/set-tag", `{"run_id": "` + id + `", "key": "a*b", "value": "1"}`, 400, "INVALID_PARAMETER_VALUE", "a*b"},
		{"long key", "POST", "runs/set-tag", map[string]any{"run_id": id, "key": strings.Repeat("k", 251), "value": "1"}, 400, "INVALID_PARAMETER_VALUE", "250"},
		{"long param value", "POST", "runs/log-parameter", map[string]any{"run_id": id, "key": "p", "value": strings.Repeat("v", 6001)}, 400, "INVALID_PARAMETER_VALUE", "6000"},
		{"1001 metrics", "POST", "runs/log-batch", tooMany, 400, "INVALID_PARAMETER_VALUE", "1000"},
		{"101 params", "POST", "runs/log-batch", tooManyParams, 400, "INVALID_PARAMETER_VALUE", "100"},
		{"oversized body", "POST", "runs/set-tag", big, 413, "REQUEST_LIMIT_EXCEEDED", "limit"},
		{"bad filter", "POST", "runs/search", `{"experiment_ids": ["0"], "filter": "metrics.acc >"}`, 400, "INVALID_PARAMETER_VALUE", "filter"},
		{"OR filter", "POST", "runs/search", `{"experiment_ids": ["0"], "filter": "metrics.a > 1 or metrics.b > 1"}`, 400, "INVALID_PARAMETER_VALUE", "OR"},
		{"bad page token", "POST", "runs/search", `{"experiment_ids": ["0"], "page_token": "!!"}`, 400, "INVALID_PARAMETER_VALUE", "token"},
		{"bad max_results", "POST", "runs/search", `{"experiment_ids": ["0"], "max_results": 50001}`, 400, "INVALID_PARAMETER_VALUE", "max_results"},
		{"bad view type", "POST", "runs/search", `{"experiment_ids": ["0"], "run_view_type": "SOME"}`, 400, "INVALID_PARAMETER_VALUE", "run_view_type"},
		{"bad status", "POST", "runs/update", `{"run_id": "` + id + `", "status": "DONE"}`, 400, "INVALID_PARAMETER_VALUE", "DONE"},
		{"missing experiment name", "POST", "experiments/create", `{}`, 400, "INVALID_PARAMETER_VALUE", "name"},
		{"bad experiment id", "GET", "experiments/get?experiment_id=abc", nil, 400, "INVALID_PARAMETER_VALUE", "abc"},
		{"unknown endpoint", "GET", "runs/nothing", nil, 404, "ENDPOINT_NOT_FOUND", "runs/nothing"},
		{"missing metric_key", "GET", "metrics/get-history?run_id=" + id, nil, 400, "INVALID_PARAMETER_VALUE", "metric_key"},
		{"run name disagrees with tag", "POST", "runs/create", `{"run_name": "a", "tags": [{"key": "mlflow.runName", "value": "b"}]}`, 400, "INVALID_PARAMETER_VALUE", "disagree"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st, out := f.call(c.method, api+c.path, c.body)
			if st != c.status || out["error_code"] != c.code {
				t.Fatalf("%s %s = %d %v; want %d %s", c.method, c.path, st, out, c.status, c.code)
			}
			if msg, _ := out["message"].(string); !strings.Contains(msg, c.msgHas) {
				t.Errorf("message %q does not mention %q", msg, c.msgHas)
			}
		})
	}
	// An unknown API path outside mlflow's prefix is a JSON 404 too.
	if st, out := f.call("GET", "/api/2.1/other", nil); st != 404 || out["error_code"] != "ENDPOINT_NOT_FOUND" {
		t.Errorf("GET /api/2.1/other = %d %v", st, out)
	}
	// health and version
	resp, err := http.Get(f.srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "OK" {
		t.Errorf("/health = %d %q", resp.StatusCode, b)
	}
}

func TestLogInputs(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.createRun("0", nil)
	ds := map[string]any{
		"tags":    []any{map[string]any{"key": "mlflow.data.context", "value": "training"}},
		"dataset": map[string]any{"name": "fmnist/train/site-1", "digest": "abc123", "source_type": "local", "source": `{"path": "/data"}`, "profile": `{"num_samples": 10}`},
	}
	f.must("POST", api+"runs/log-inputs", map[string]any{"run_id": id, "datasets": []any{ds}})
	f.must("POST", api+"runs/log-inputs", map[string]any{"run_id": id, "datasets": []any{ds}}) // again: stored once
	out := f.must("GET", api+"runs/get?run_id="+id, nil)
	want := map[string]any{"dataset_inputs": []any{ds}}
	if diff := cmp.Diff(want, get(out, "run", "inputs")); diff != "" {
		t.Errorf("inputs (-want +got):\n%s", diff)
	}
	out = f.must("POST", api+"runs/search", map[string]any{"experiment_ids": []string{"0"}, "filter": "datasets.context = 'training'"})
	if n := len(out["runs"].([]any)); n != 1 {
		t.Errorf("search by dataset context found %d runs, want 1", n)
	}
	bad := map[string]any{"dataset": map[string]any{"name": "x", "digest": strings.Repeat("d", 37), "source_type": "local", "source": "{}"}}
	if st, e := f.call("POST", api+"runs/log-inputs", map[string]any{"run_id": id, "datasets": []any{bad}}); st != 400 || e["error_code"] != "INVALID_PARAMETER_VALUE" {
		t.Errorf("37-character digest = %d %v", st, e)
	}
	noSource := map[string]any{"dataset": map[string]any{"name": "x", "digest": "d", "source_type": "local"}}
	if st, e := f.call("POST", api+"runs/log-inputs", map[string]any{"run_id": id, "datasets": []any{noSource}}); st != 400 {
		t.Errorf("dataset without source = %d %v", st, e)
	}
}

func TestConcurrentWriters(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.createRun("0", nil)
	const writers, batches = 8, 10
	var wg sync.WaitGroup
	errs := make(chan error, writers*batches)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				var ms []any
				for i := range 50 {
					ms = append(ms, map[string]any{"key": fmt.Sprintf("w%d", w), "value": i, "timestamp": b*100 + i, "step": b*100 + i})
				}
				js, _ := json.Marshal(map[string]any{"run_id": id, "metrics": ms, "params": []any{map[string]any{"key": "shared", "value": "same"}}})
				resp, err := http.Post(f.srv.URL+api+"runs/log-batch", "application/json", bytes.NewReader(js))
				if err != nil {
					errs <- err
					continue
				}
				if resp.StatusCode != 200 {
					b, _ := io.ReadAll(resp.Body)
					errs <- fmt.Errorf("status %d: %s", resp.StatusCode, b)
				}
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for w := range writers {
		h, err := f.store.GetMetricHistory(context.Background(), id, fmt.Sprintf("w%d", w))
		if err != nil || len(h) != batches*50 {
			t.Errorf("history of w%d: %d points, %v; want %d", w, len(h), err, batches*50)
		}
	}
}

func TestArtifacts(t *testing.T) {
	f := newFixture(t, Config{})
	id := f.createRun("0", nil)
	base := "/api/2.0/mlflow-artifacts/artifacts/0/" + id + "/artifacts/"
	put := func(p, body string) (int, map[string]any) { return f.call("PUT", base+p, body) }
	if st, out := put("plots/acc.txt", "hello"); st != 200 {
		t.Fatalf("upload = %d %v", st, out)
	}
	resp, err := http.Get(f.srv.URL + base + "plots/acc.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "hello" {
		t.Errorf("download = %d %q", resp.StatusCode, b)
	}
	// The store sees the same file.
	rc, err := f.store.OpenArtifact(context.Background(), id, "plots/acc.txt")
	if err != nil {
		t.Fatalf("store does not see the uploaded file: %v", err)
	}
	sb, _ := io.ReadAll(rc)
	rc.Close()
	if string(sb) != "hello" {
		t.Errorf("store reads %q", sb)
	}
	// and files the store logs show in the proxy.
	if err := f.store.LogArtifact(context.Background(), id, "model.bin", strings.NewReader("12345")); err != nil {
		t.Fatal(err)
	}
	out := f.must("GET", "/api/2.0/mlflow-artifacts/artifacts?path="+url.QueryEscape("0/"+id+"/artifacts"), nil)
	want := []any{
		map[string]any{"path": "model.bin", "is_dir": false, "file_size": 5.0},
		map[string]any{"path": "plots", "is_dir": true},
	}
	if diff := cmp.Diff(want, out["files"]); diff != "" {
		t.Errorf("proxy listing (-want +got):\n%s", diff)
	}
	out = f.must("GET", api+"artifacts/list?run_id="+id+"&path=plots", nil)
	if diff := cmp.Diff([]any{map[string]any{"path": "plots/acc.txt", "is_dir": false, "file_size": 5.0}}, out["files"]); diff != "" {
		t.Errorf("artifacts/list (-want +got):\n%s", diff)
	}
	if out["root_uri"] != "mlflow-artifacts:/0/"+id+"/artifacts" {
		t.Errorf("root_uri = %v", out["root_uri"])
	}
	// Escapes.
	outside := filepath.Join(f.dir, "outside")
	if err := os.MkdirAll(outside, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(f.store.ProxyArtifactRoot(), "link")); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		method, path string
	}{
		{"GET", "/api/2.0/mlflow-artifacts/artifacts/link/secret"},
		{"PUT", "/api/2.0/mlflow-artifacts/artifacts/link/new"},
		{"GET", "/api/2.0/mlflow-artifacts/artifacts?path=link"},
		{"GET", "/api/2.0/mlflow-artifacts/artifacts/a/%2e%2e/%2e%2e/outside/secret"},
		{"PUT", "/api/2.0/mlflow-artifacts/artifacts/a/%2e%2e/x"},
		{"GET", "/api/2.0/mlflow-artifacts/artifacts?path=../outside"},
		{"GET", "/api/2.0/mlflow-artifacts/artifacts?path=/etc"},
		{"GET", "/api/2.0/mlflow-artifacts/artifacts/%2Fetc%2Fpasswd"},
		{"GET", api + "artifacts/list?run_id=" + id + "&path=../.."},
	} {
		if st, out := f.call(c.method, c.path, "x"); st != 400 || out["error_code"] != "INVALID_PARAMETER_VALUE" {
			t.Errorf("%s %s = %d %v; want 400 INVALID_PARAMETER_VALUE", c.method, c.path, st, out)
		}
	}
	if _, err := os.Stat(filepath.Join(outside, "new")); err == nil {
		t.Error("an upload escaped through a symbolic link")
	}
	if st, out := f.call("GET", base+"missing.txt", nil); st != 404 || out["error_code"] != "RESOURCE_DOES_NOT_EXIST" {
		t.Errorf("missing artifact = %d %v", st, out)
	}
	if st, _ := f.call("DELETE", base+"plots/acc.txt", nil); st != 200 {
		t.Errorf("delete = %d", st)
	}
	if _, err := f.store.OpenArtifact(context.Background(), id, "plots/acc.txt"); err == nil {
		t.Error("deleted artifact still opens")
	}
}

func TestAuth(t *testing.T) {
	dir := t.TempDir()
	basicFile := filepath.Join(dir, "users")
	if err := os.WriteFile(basicFile, []byte("# users\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := SetPassword(basicFile, "alice", "secret", MinPasswordCost); err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(dir, "tokens")
	if err := os.WriteFile(tokenFile, []byte("bob tok-123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	basic, err := LoadAuth("basic", basicFile)
	if err != nil {
		t.Fatal(err)
	}
	token, err := LoadAuth("token", tokenFile)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := LoadAuth("none", ""); a != nil || err != nil {
		t.Errorf("LoadAuth(none) = %v, %v; want nil, nil", a, err)
	}
	for _, bad := range []struct{ mode, content string }{
		{"basic", "alice:bcrypt:$2y$..."}, {"basic", "alice"}, {"token", "bob"}, {"basic", ""}, {"ldap", "x"},
	} {
		p := filepath.Join(dir, "bad")
		_ = os.WriteFile(p, []byte(bad.content), 0o600)
		if _, err := LoadAuth(bad.mode, p); err == nil {
			t.Errorf("LoadAuth(%s, %q) succeeded", bad.mode, bad.content)
		}
	}
	for _, c := range []struct {
		name   string
		auth   Authenticator
		set    func(*http.Request)
		status int
	}{
		{"basic ok", basic, func(r *http.Request) { r.SetBasicAuth("alice", "secret") }, 200},
		{"basic wrong password", basic, func(r *http.Request) { r.SetBasicAuth("alice", "nope") }, 401},
		{"basic unknown user", basic, func(r *http.Request) { r.SetBasicAuth("eve", "secret") }, 401},
		{"basic none", basic, func(*http.Request) {}, 401},
		{"token ok", token, func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok-123") }, 200},
		{"token wrong", token, func(r *http.Request) { r.Header.Set("Authorization", "Bearer tok-999") }, 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newFixture(t, Config{Auth: c.auth})
			req, _ := http.NewRequest("GET", f.srv.URL+api+"experiments/get?experiment_id=0", nil)
			c.set(req)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			var out map[string]any
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if resp.StatusCode != c.status {
				t.Fatalf("status = %d %v, want %d", resp.StatusCode, out, c.status)
			}
			if c.status == 401 && (resp.Header.Get("WWW-Authenticate") == "" || out["error_code"] != "UNAUTHENTICATED") {
				t.Errorf("401 without WWW-Authenticate or UNAUTHENTICATED: %v %v", resp.Header, out)
			}
			h, err := http.Get(f.srv.URL + "/health")
			if err != nil {
				t.Fatal(err)
			}
			h.Body.Close()
			if h.StatusCode != 200 {
				t.Errorf("/health with auth = %d, want 200", h.StatusCode)
			}
		})
	}
}
