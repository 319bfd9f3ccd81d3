package mlflowserver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// badRequest is one case of testdata/bad_requests.json: a request MLflow
// refuses, and the status, error_code and message (exact, or a stable
// part) it answers with. $NAMES in body, path and message are filled in.
type badRequest struct {
	Name        string          `json:"name"`
	Method      string          `json:"method"`
	Path        string          `json:"path"`
	Body        json.RawMessage `json:"body"`
	Raw         *string         `json:"raw"`
	ContentType string          `json:"content_type"`
	Status      int             `json:"status"`
	Code        string          `json:"code"`
	Message     string          `json:"message"`
	MessageHas  string          `json:"message_has"`
}

// rawCall sends body as is and returns the status, headers and body.
func (f *fixture) rawCall(method, path, contentType string, body []byte) (int, http.Header, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// fill replaces placeholder strings in a decoded JSON body.
func fill(v any, vars map[string]any) any {
	switch x := v.(type) {
	case string:
		if r, ok := vars[x]; ok {
			return r
		}
	case []any:
		for i := range x {
			x[i] = fill(x[i], vars)
		}
	case map[string]any:
		for k := range x {
			x[k] = fill(x[k], vars)
		}
	}
	return v
}

func TestBadRequests(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	run := f.createRun("0", nil)
	deletedRun := f.createRun("0", nil)
	f.must("POST", api+"runs/delete", map[string]any{"run_id": deletedRun})
	f.must("POST", api+"experiments/create", map[string]any{"name": "taken"})
	deletedExp, err := f.store.CreateExperiment(ctx, "gone", nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.store.DeleteExperiment(ctx, deletedExp); err != nil {
		t.Fatal(err)
	}
	metrics := make([]any, 1001)
	for i := range metrics {
		metrics[i] = map[string]any{"key": "m", "value": i, "timestamp": 1, "step": i}
	}
	params := make([]any, 101)
	for i := range params {
		params[i] = map[string]any{"key": fmt.Sprintf("p%d", i), "value": "v"}
	}
	vars := map[string]any{
		"$RUN": run, "$DELETED_RUN": deletedRun, "$DELETED_EXP": deletedExp,
		"$LONG251": strings.Repeat("k", 251), "$LONG501": strings.Repeat("n", 501), "$LONG6001": strings.Repeat("v", 6001),
		"$METRICS1001": metrics, "$PARAMS101": params,
	}
	expand := func(s string) string {
		for _, k := range []string{"$DELETED_RUN", "$DELETED_EXP", "$RUN"} {
			s = strings.ReplaceAll(s, k, vars[k].(string))
		}
		return s
	}
	raw, err := os.ReadFile("testdata/bad_requests.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []badRequest
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 50 {
		t.Fatalf("only %d cases read from testdata/bad_requests.json", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			var body []byte
			switch {
			case c.Raw != nil:
				body = []byte(*c.Raw)
			case c.Body != nil:
				var v any
				if err := json.Unmarshal(c.Body, &v); err != nil {
					t.Fatal(err)
				}
				if body, err = json.Marshal(fill(v, vars)); err != nil {
					t.Fatal(err)
				}
			}
			ct := c.ContentType
			if ct == "" && c.Method == "POST" {
				ct = "application/json"
			}
			st, hdr, out := f.rawCall(c.Method, api+expand(c.Path), ct, body)
			var e struct {
				Code    string `json:"error_code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(out, &e); err != nil || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("answer %q (%s) is not MLflow's JSON error: %v", out, hdr.Get("Content-Type"), err)
			}
			if st != c.Status || e.Code != c.Code {
				t.Errorf("= %d %s; want %d %s (message %q)", st, e.Code, c.Status, c.Code, e.Message)
			}
			if c.Message != "" && e.Message != expand(c.Message) {
				t.Errorf("message\n got %q\nwant %q", e.Message, expand(c.Message))
			}
			if c.MessageHas != "" && !strings.Contains(e.Message, expand(c.MessageHas)) {
				t.Errorf("message %q does not hold %q", e.Message, expand(c.MessageHas))
			}
			if strings.Contains(e.Message, "mlflowserver.") || strings.Contains(e.Message, "Go value") || strings.Contains(e.Message, "int64") {
				t.Errorf("message %q names a Go type", e.Message)
			}
		})
	}
	// No refused request wrote anything.
	got, err := f.store.GetRun(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Data.Metrics)+len(got.Data.Params)+len(got.Inputs) != 0 || len(got.Data.Tags) != 1 || got.Info.Status != tracking.StatusRunning {
		t.Errorf("after refused requests the run holds %+v; want only its name tag", got)
	}
}

// TestMLflowLeniency covers requests MLflow accepts that a stricter server
// might refuse.
func TestMLflowLeniency(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	run := f.createRun("0", nil)

	// A body that is a JSON string holding the JSON (older clients).
	inner, _ := json.Marshal(map[string]any{"run_id": run, "key": "old", "value": "client"})
	outer, _ := json.Marshal(string(inner))
	if st, _, b := f.rawCall("POST", api+"runs/set-tag", "application/json", outer); st != 200 {
		t.Errorf("double-encoded body = %d %s", st, b)
	}
	// log-parameter without a value logs "" (MLflow's value is optional).
	f.must("POST", api+"runs/log-parameter", map[string]any{"run_id": run, "key": "empty"})
	// Numbers as strings, as protobuf's JSON mapping allows; null is absent.
	f.must("POST", api+"runs/log-metric", map[string]any{"run_id": run, "key": "s", "value": "0.5", "timestamp": "7", "step": nil})
	// No Content-Type at all is read as JSON.
	if st, _, b := f.rawCall("POST", api+"runs/set-tag", "", inner); st != 200 {
		t.Errorf("no Content-Type = %d %s", st, b)
	}
	got, err := f.store.GetRun(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got.Data.Params, tracking.Param{Key: "empty", Value: ""}) {
		t.Errorf("params = %v; want empty=\"\"", got.Data.Params)
	}
	if !slices.Contains(got.Data.Tags, tracking.Tag{Key: "old", Value: "client"}) {
		t.Errorf("tags = %v; want old=client", got.Data.Tags)
	}
	hist, err := f.store.GetMetricHistory(ctx, run, "s")
	if err != nil || len(hist) != 1 || hist[0].Value != 0.5 || hist[0].Timestamp != 7 || hist[0].Step != 0 {
		t.Errorf("metric s = %v, %v; want one point 0.5 at timestamp 7, step 0", hist, err)
	}
	// log-inputs with an empty list is a no-op, as in MLflow.
	f.must("POST", api+"runs/log-inputs", map[string]any{"run_id": run, "datasets": []any{}})

	// A parent run that does not exist: MLflow's stores do not look it up.
	out := f.must("POST", api+"runs/create", map[string]any{"experiment_id": "0", "tags": []any{map[string]any{"key": "mlflow.parentRunId", "value": "0123456789abcdef0123456789abcdef"}}})
	child := get(out, "run", "info", "run_id").(string)
	got, err = f.store.GetRun(ctx, child)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(got.Data.Tags, tracking.Tag{Key: tracking.TagParentRunID, Value: "0123456789abcdef0123456789abcdef"}) {
		t.Errorf("child tags = %v; want the parent tag kept", got.Data.Tags)
	}
}

func TestLogModel(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	run := f.createRun("0", nil)
	model := func(path string) string {
		return fmt.Sprintf(`{"artifact_path": %q, "flavors": {"python_function": {"loader_module": "cohort"}}, "run_id": %q, "utc_time_created": "2026-12-05 07:00:00.000000"}`, path, run)
	}
	f.must("POST", api+"runs/log-model", map[string]any{"run_id": run, "model_json": model("global")})
	f.must("POST", "/ajax-api/2.0/mlflow/runs/log-model", map[string]any{"run_id": run, "model_json": model("site-1")})
	tagValue := func() string {
		got, err := f.store.GetRun(ctx, run)
		if err != nil {
			t.Fatal(err)
		}
		for _, tg := range got.Data.Tags {
			if tg.Key == tracking.TagLoggedModels {
				return tg.Value
			}
		}
		return ""
	}
	var hist []map[string]any
	if err := json.Unmarshal([]byte(tagValue()), &hist); err != nil {
		t.Fatalf("%s is not a JSON list: %v", tracking.TagLoggedModels, err)
	}
	if len(hist) != 2 || hist[0]["artifact_path"] != "global" || hist[1]["artifact_path"] != "site-1" || hist[1]["run_id"] != run {
		t.Errorf("history = %v; want global then site-1", hist)
	}
	before := tagValue()
	huge := fmt.Sprintf(`{"artifact_path": "big", "flavors": {"x": %q}, "run_id": %q, "utc_time_created": "t"}`, strings.Repeat("f", 8000), run)
	for _, c := range []struct {
		name   string
		body   map[string]any
		status int
		msg    string
	}{
		{"missing model_json", map[string]any{"run_id": run}, 400, "Missing value for required parameter 'model_json'. See the API docs for more information about request parameters."},
		{"model_json an object", map[string]any{"run_id": run, "model_json": map[string]any{}}, 400, "Invalid value {} for parameter 'model_json' supplied:  Hint: Value was of type 'dict'. See the API docs for more information about request parameters."},
		{"not JSON", map[string]any{"run_id": run, "model_json": "{oops"}, 400, "Malformed model info. \n {oops \n is not a valid JSON."},
		{"missing fields", map[string]any{"run_id": run, "model_json": `{"artifact_path": "m", "run_id": "r"}`}, 400, "Model json is missing mandatory fields: {'flavors', 'utc_time_created'}"},
		{"unknown run", map[string]any{"run_id": "nope", "model_json": model("x")}, 404, "Run with id=nope not found"},
		{"history past the tag limit", map[string]any{"run_id": run, "model_json": huge}, 400, "which exceeded length limit of 8000"},
	} {
		st, out := f.call("POST", api+"runs/log-model", c.body)
		if msg, _ := out["message"].(string); st != c.status || !strings.Contains(msg, c.msg) {
			t.Errorf("%s: = %d %v; want %d with %q", c.name, st, out, c.status, c.msg)
		}
	}
	if after := tagValue(); after != before {
		t.Errorf("a refused model changed the history:\n%s\n%s", before, after)
	}
}

func TestSearchDatasets(t *testing.T) {
	f := newFixture(t, Config{})
	expB := f.must("POST", api+"experiments/create", map[string]any{"name": "b"})["experiment_id"].(string)
	ds := func(name, digest, context string) map[string]any {
		d := map[string]any{"dataset": map[string]any{"name": name, "digest": digest, "source_type": "local", "source": "{}"}}
		if context != "" {
			d["tags"] = []any{map[string]any{"key": "mlflow.data.context", "value": context}}
		}
		return d
	}
	r1, r2, r3 := f.createRun("0", nil), f.createRun("0", nil), f.createRun(expB, nil)
	f.must("POST", api+"runs/log-inputs", map[string]any{"run_id": r1, "datasets": []any{ds("mnist/train", "d1", "training"), ds("mnist/test", "d2", "evaluation")}})
	f.must("POST", api+"runs/log-inputs", map[string]any{"run_id": r2, "datasets": []any{ds("mnist/train", "d1", "training"), ds("raw", "d3", "")}})
	f.must("POST", api+"runs/log-inputs", map[string]any{"run_id": r3, "datasets": []any{ds("cifar", "d4", "training")}})
	const path = "/ajax-api/2.0/mlflow/experiments/search-datasets"
	out := f.must("POST", path, map[string]any{"experiment_ids": []string{"0"}})
	want := []any{
		map[string]any{"experiment_id": "0", "name": "mnist/test", "digest": "d2", "context": "evaluation"},
		map[string]any{"experiment_id": "0", "name": "mnist/train", "digest": "d1", "context": "training"},
		map[string]any{"experiment_id": "0", "name": "raw", "digest": "d3"},
	}
	if diff := cmp.Diff(want, out["dataset_summaries"]); diff != "" {
		t.Errorf("experiment 0 (-want +got):\n%s", diff)
	}
	out = f.must("POST", path, map[string]any{"experiment_ids": []string{expB, "0"}})
	if n := len(out["dataset_summaries"].([]any)); n != 4 {
		t.Errorf("both experiments: %d summaries, want 4", n)
	}
	// A deleted run's datasets stay: MLflow keeps datasets per experiment.
	f.must("POST", api+"runs/delete", map[string]any{"run_id": r3})
	out = f.must("POST", path, map[string]any{"experiment_ids": []string{expB}})
	if n := len(out["dataset_summaries"].([]any)); n != 1 {
		t.Errorf("after deleting the run: %d summaries, want 1", n)
	}
	if out := f.must("POST", path, map[string]any{"experiment_ids": []string{"999"}}); out["dataset_summaries"] != nil {
		t.Errorf("unknown experiment: %v; want none", out)
	}
	ids := make([]string, 21)
	for i := range ids {
		ids[i] = fmt.Sprint(i)
	}
	for _, c := range []struct {
		body any
		msg  string
	}{
		{map[string]any{}, "SearchDatasets request must specify at least one experiment_id."},
		{map[string]any{"experiment_ids": ids}, "SearchDatasets request cannot specify more than 20 experiment_ids. Received 21 experiment_ids."},
		{map[string]any{"experiment_ids": []int{1}}, "Invalid value [1] for parameter 'experiment_ids' supplied:  Hint: Value was of type 'list'. See the API docs for more information about request parameters."},
	} {
		if st, out := f.call("POST", path, c.body); st != 400 || out["error_code"] != "INVALID_PARAMETER_VALUE" || out["message"] != c.msg {
			t.Errorf("%v = %d %v; want 400 %q", c.body, st, out, c.msg)
		}
	}
}

// logSteps logs key at steps [from, to) in run, value = step/10,
// timestamp = 1000+step, through the store.
func logSteps(t *testing.T, f *fixture, run, key string, from, to int) {
	t.Helper()
	for lo := from; lo < to; lo += tracking.MaxMetricsPerBatch {
		var ms []tracking.Metric
		for s := lo; s < min(to, lo+tracking.MaxMetricsPerBatch); s++ {
			ms = append(ms, tracking.Metric{Key: key, Value: float64(s) / 10, Timestamp: int64(1000 + s), Step: int64(s)})
		}
		if err := f.store.LogBatch(context.Background(), run, ms, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
}

func TestGetHistoryBulk(t *testing.T) {
	f := newFixture(t, Config{})
	runs := []string{f.createRun("0", nil), f.createRun("0", nil), f.createRun("0", nil)}
	for i, r := range runs {
		logSteps(t, f, r, "loss", 0, 3+i)
	}
	if err := f.store.LogMetric(context.Background(), runs[0], tracking.Metric{Key: "loss", Value: math.NaN(), Timestamp: 5000, Step: 9}); err != nil {
		t.Fatal(err)
	}
	const path = "/ajax-api/2.0/mlflow/metrics/get-history-bulk"
	q := "?metric_key=loss&run_id=" + runs[2] + "&run_id=" + runs[0] + "&run_id=" + runs[1] + "&run_id=" + runs[0] + "&run_id=nope"
	out := f.must("GET", path+q, nil)
	sorted := slices.Sorted(slices.Values(runs))
	var want []any
	for _, r := range sorted {
		n := 3 + slices.Index(runs, r)
		for s := range n {
			want = append(want, map[string]any{"key": "loss", "value": float64(s) / 10, "timestamp": float64(1000 + s), "step": float64(s), "run_id": r})
		}
		if r == runs[0] {
			want = append(want, map[string]any{"key": "loss", "value": "NaN", "timestamp": 5000.0, "step": 9.0, "run_id": r})
		}
	}
	if diff := cmp.Diff(want, out["metrics"]); diff != "" {
		t.Errorf("bulk history (-want +got):\n%s", diff)
	}
	if got := f.must("GET", path+q+"&max_results=4", nil)["metrics"].([]any); !cmp.Equal(got, want[:4]) {
		t.Errorf("max_results=4 gave %v; want the first 4 points", got)
	}
	if got := f.must("GET", path+"?metric_key=other&run_id="+runs[0], nil); !cmp.Equal(got, map[string]any{"metrics": []any{}}) {
		t.Errorf("unlogged key = %v; want {\"metrics\": []}", got)
	}
	many := strings.Repeat("&run_id=r", 101)
	for _, c := range []struct{ query, msg string }{
		{"?metric_key=loss", "GetMetricHistoryBulk request must specify at least one run_id."},
		{"?metric_key=loss" + many, "GetMetricHistoryBulk request cannot specify more than 100 run_ids. Received 101 run_ids."},
		{"?run_id=" + runs[0], "GetMetricHistoryBulk request must specify a metric_key."},
		{"?metric_key=loss&run_id=r&max_results=lots", "Invalid value \"lots\" for parameter 'max_results' supplied:  Hint: Value was of type 'str'. See the API docs for more information about request parameters."},
	} {
		if st, out := f.call("GET", path+c.query, nil); st != 400 || out["error_code"] != "INVALID_PARAMETER_VALUE" || out["message"] != c.msg {
			t.Errorf("%.60s = %d %v; want 400 %q", c.query, st, out, c.msg)
		}
	}
	// MLflow serves it only to its UI, under /ajax-api.
	if st, out := f.call("GET", api+"metrics/get-history-bulk"+q, nil); st != 404 || out["error_code"] != "ENDPOINT_NOT_FOUND" {
		t.Errorf("under /api = %d %v; want 404 ENDPOINT_NOT_FOUND", st, out)
	}
}

func TestGetHistoryBulkInterval(t *testing.T) {
	f := newFixture(t, Config{})
	long, short := f.createRun("0", nil), f.createRun("0", nil)
	logSteps(t, f, long, "acc", 0, 10000)
	logSteps(t, f, short, "acc", 0, 5)
	const path = "/ajax-api/2.0/mlflow/metrics/get-history-bulk-interval"
	steps := func(query string) map[string][]int64 {
		t.Helper()
		out := f.must("GET", path+query, nil)
		got := map[string][]int64{}
		for _, m := range out["metrics"].([]any) {
			mm := m.(map[string]any)
			got[mm["run_id"].(string)] = append(got[mm["run_id"].(string)], int64(mm["step"].(float64)))
		}
		return got
	}
	// 10 samples of steps 0…9999: every 1000th, the last, and each run's
	// first and last steps (4 is the short run's last).
	got := steps("?metric_key=acc&max_results=10&run_ids=" + long + "&run_ids=" + short)
	want := map[string][]int64{
		long:  {0, 4, 1000, 2000, 3000, 4000, 5000, 6000, 7000, 8000, 9000, 9999},
		short: {0, 4},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("sampled steps (-want +got):\n%s", diff)
	}
	// A window: steps 100…199, 4 samples, plus the last.
	got = steps("?metric_key=acc&max_results=4&start_step=100&end_step=199&run_ids=" + long)
	if diff := cmp.Diff(map[string][]int64{long: {100, 125, 150, 175, 199}}, got); diff != "" {
		t.Errorf("window (-want +got):\n%s", diff)
	}
	// Default max_results (2500) over the short run: all 5 points.
	if got := steps("?metric_key=acc&run_ids=" + short); len(got[short]) != 5 {
		t.Errorf("short run = %v; want all 5 steps", got)
	}
	also := f.must("GET", api+"metrics/get-history-bulk-interval?metric_key=acc&run_ids="+short, nil)
	if n := len(also["metrics"].([]any)); n != 5 {
		t.Errorf("under /api: %d points, want 5", n)
	}
	many := strings.Repeat("&run_ids=r", 101)
	for _, c := range []struct{ query, msg string }{
		{"?metric_key=acc", "Missing value for required parameter 'run_ids'. See the API docs for more information about request parameters."},
		{"?run_ids=" + long, "Missing value for required parameter 'metric_key'. See the API docs for more information about request parameters."},
		{"?metric_key=acc" + many, "GetMetricHistoryBulkInterval request must specify at most 100 run_ids. Received 101 run_ids. See the API docs for more information about request parameters."},
		{"?metric_key=acc&run_ids=r&max_results=2501", "max_results must be between 1 and 2500. See the API docs for more information about request parameters."},
		{"?metric_key=acc&run_ids=r&max_results=0", "max_results must be between 1 and 2500. See the API docs for more information about request parameters."},
		{"?metric_key=acc&run_ids=r&start_step=5", "If either start step or end step are specified, both must be specified."},
		{"?metric_key=acc&run_ids=r&start_step=5&end_step=4", "end_step must be greater than start_step. Found start_step=5 and end_step=4."},
		{"?metric_key=acc&run_ids=r&start_step=x&end_step=4", "Invalid value \"x\" for parameter 'start_step' supplied:  Hint: Value was of type 'str'. See the API docs for more information about request parameters."},
	} {
		if st, out := f.call("GET", path+c.query, nil); st != 400 || out["error_code"] != "INVALID_PARAMETER_VALUE" || out["message"] != c.msg {
			t.Errorf("%.60s = %d %v; want 400 %q", c.query, st, out, c.msg)
		}
	}
}

func TestUploadAndGetArtifact(t *testing.T) {
	f := newFixture(t, Config{})
	run := f.createRun("0", nil)
	const upload = "/ajax-api/2.0/mlflow/upload-artifact"
	if st, hdr, b := f.rawCall("POST", upload+"?run_uuid="+run+"&path=notes/readme.md", "text/markdown", []byte("# hello")); st != 200 || len(b) != 0 || hdr.Get("Content-Type") != "application/json" {
		t.Fatalf("upload = %d %q %q", st, b, hdr.Get("Content-Type"))
	}
	st, hdr, b := f.rawCall("GET", "/get-artifact?run_id="+run+"&path=notes/readme.md", "", nil)
	if st != 200 || string(b) != "# hello" {
		t.Errorf("get-artifact = %d %q", st, b)
	}
	if cd := hdr.Get("Content-Disposition"); cd != "attachment; filename=readme.md" {
		t.Errorf("Content-Disposition = %q", cd)
	}
	if hdr.Get("X-Content-Type-Options") != "nosniff" {
		t.Errorf("X-Content-Type-Options = %q", hdr.Get("X-Content-Type-Options"))
	}
	// The same file through the store, the run's listing and the proxy.
	out := f.must("GET", api+"artifacts/list?run_id="+run+"&path=notes", nil)
	if diff := cmp.Diff([]any{map[string]any{"path": "notes/readme.md", "is_dir": false, "file_size": 7.0}}, out["files"]); diff != "" {
		t.Errorf("artifacts/list (-want +got):\n%s", diff)
	}
	if st, _, b := f.rawCall("GET", "/api/2.0/mlflow-artifacts/artifacts/0/"+run+"/artifacts/notes/readme.md", "", nil); st != 200 || string(b) != "# hello" {
		t.Errorf("proxy download = %d %q", st, b)
	}
	big := bytes.Repeat([]byte("x"), 10<<20+1)
	deleted := f.createRun("0", nil)
	f.must("POST", api+"runs/delete", map[string]any{"run_id": deleted})
	for _, c := range []struct {
		name, method, path string
		body               []byte
		status             int
		code, msg          string
	}{
		{"no run_uuid", "POST", upload + "?path=a.txt", []byte("x"), 400, "INVALID_PARAMETER_VALUE", "Request must specify run_uuid."},
		{"no path", "POST", upload + "?run_uuid=" + run, []byte("x"), 400, "INVALID_PARAMETER_VALUE", "Request must specify path."},
		{"climbing path", "POST", upload + "?run_uuid=" + run + "&path=../../x", []byte("x"), 400, "INVALID_PARAMETER_VALUE", "Invalid path: '../../x'"},
		{"absolute path", "POST", upload + "?run_uuid=" + run + "&path=/etc/x", []byte("x"), 400, "INVALID_PARAMETER_VALUE", "Invalid path: '/etc/x'"},
		{"no data", "POST", upload + "?run_uuid=" + run + "&path=a.txt", nil, 400, "INVALID_PARAMETER_VALUE", "Request must specify data."},
		{"over 10 MB", "POST", upload + "?run_uuid=" + run + "&path=a.txt", big, 400, "INVALID_PARAMETER_VALUE", "Artifact size is too large. Max size is 10MB."},
		{"unknown run", "POST", upload + "?run_uuid=nope&path=a.txt", []byte("x"), 404, "RESOURCE_DOES_NOT_EXIST", "Run with id=nope not found"},
		{"deleted run", "POST", upload + "?run_uuid=" + deleted + "&path=a.txt", []byte("x"), 400, "INVALID_PARAMETER_VALUE", "The run " + deleted + " must be in the 'active' state. Current state is deleted."},
		{"get: no run_id", "GET", "/get-artifact?path=a.txt", nil, 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'run_id'. See the API docs for more information about request parameters."},
		{"get: no path", "GET", "/get-artifact?run_id=" + run, nil, 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'path'. See the API docs for more information about request parameters."},
		{"get: climbing path", "GET", "/get-artifact?run_id=" + run + "&path=notes/../../../x", nil, 400, "INVALID_PARAMETER_VALUE", "Invalid path: 'notes/../../../x'"},
		{"get: missing file", "GET", "/get-artifact?run_id=" + run + "&path=nothing.txt", nil, 404, "RESOURCE_DOES_NOT_EXIST", "Artifact 'nothing.txt' of run " + run + " not found"},
		{"get: a directory", "GET", "/get-artifact?run_id=" + run + "&path=notes", nil, 400, "INVALID_PARAMETER_VALUE", "Artifact 'notes' of run " + run + " is a directory"},
		{"get: unknown run", "GET", "/get-artifact?run_id=nope&path=a.txt", nil, 404, "RESOURCE_DOES_NOT_EXIST", "Run with id=nope not found"},
	} {
		st, _, b := f.rawCall(c.method, c.path, "application/octet-stream", c.body)
		var e map[string]string
		_ = json.Unmarshal(b, &e)
		if st != c.status || e["error_code"] != c.code || !strings.HasPrefix(e["message"], c.msg) {
			t.Errorf("%s: = %d %.200s; want %d %s %q", c.name, st, b, c.status, c.code, c.msg)
		}
	}
	if _, err := f.store.OpenArtifact(context.Background(), run, "a.txt"); err == nil {
		t.Error("a refused upload left a file")
	}
}

// FuzzRequest feeds arbitrary bodies to the request-decoding layer with
// log-batch's schema: it must answer a value or MLflow's
// INVALID_PARAMETER_VALUE, never panic, never another error.
func FuzzRequest(f *testing.F) {
	for _, seed := range []string{
		`{"run_id": "r", "metrics": [{"key": "a", "value": 1, "timestamp": 1, "step": 2}], "params": [{"key": "p", "value": "v"}]}`,
		`{"run_id": 5}`, `{"metrics": [5]}`, `{"metrics": [{"value": "NaN", "timestamp": "12"}]}`, `"{\"run_id\": \"r\"}"`,
		`[1]`, `{`, ``, `null`, `{"run_id": "r", "tags": [{"key": "k", "value": 1.5e400}]}`, `{"run_id": "r", "metrics": [{"key": "a", "value": 1, "timestamp": 1.5}]}`,
	} {
		f.Add([]byte(seed))
	}
	schema := []param{
		p("run_id", isString, isRequired),
		each("metrics", metricSchema...),
		each("params", p("key", isRequired, isString), p("value", isString)),
		each("tags", p("key", isRequired, isString), p("value", isString)),
		p("max_results", isInt, atMost(10)),
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		var req struct {
			mlflowwire.LogBatch
			MaxResults *mlflowwire.Int64 `json:"max_results"`
		}
		o, raw, err := parseBody(body)
		if err == nil {
			if err = validate(o, schema, ""); err == nil {
				if uerr := json.Unmarshal(raw, &req); uerr != nil {
					err = typeError(o, uerr)
				}
			}
		}
		if err == nil {
			if req.RunID == "" && req.RunUUID == "" {
				t.Fatalf("%q passed without a run_id", body)
			}
			return
		}
		ae := toAPIError(err)
		if ae.code != codeInvalidParameter || ae.msg == "" {
			t.Fatalf("%q: %v; want an INVALID_PARAMETER_VALUE", body, err)
		}
	})
}
