package mlflowclient

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// fakeMLflow is an in-memory MLflow tracking server, written from the REST
// API's documented requests and responses, and validating fields as
// MLflow does (required fields, request limits, immutable params).
type fakeMLflow struct {
	t *testing.T

	mu        sync.Mutex
	exps      []*fakeExp
	runs      map[string]*fakeRun
	runOrder  []string
	artifacts map[string][]byte // path under the proxy → content
	models    map[string]*fakeModel
	modelSeq  int64    // creation timestamps, increasing
	calls     []string // "POST runs/log-batch", in order
	bodies    map[string][]string

	// Knobs, set under mu.
	down           int // 0 up, 1 answers 503, 2 drops the connection
	serveArtifacts bool
	hook           func(w http.ResponseWriter, r *http.Request, endpoint string) bool // true: handled
	refusals       []chan struct{}                                                    // closed at the next request refused while down
}

type fakeModel struct {
	name, description string
	created, updated  int64
	tags              map[string]string
	versions          []*mlflowwire.ModelVersion // version i+1 at i
	aliases           map[string]string          // alias → version
}

type fakeExp struct {
	id, name, stage string
}

type fakeRun struct {
	info    mlflowwire.RunInfo
	metrics []mlflowwire.Metric // every point, in arrival order
	params  map[string]string
	tags    map[string]string
	inputs  []mlflowwire.DatasetInput
}

func newFake(t *testing.T) *fakeMLflow {
	return &fakeMLflow{
		t: t, runs: map[string]*fakeRun{}, artifacts: map[string][]byte{}, bodies: map[string][]string{}, models: map[string]*fakeModel{},
		exps: []*fakeExp{{id: "0", name: "Default", stage: "active"}}, serveArtifacts: true,
	}
}

func (f *fakeMLflow) setDown(mode int) {
	f.mu.Lock()
	f.down = mode
	f.mu.Unlock()
}

// refusal returns a channel closed the next time the fake, down, refuses
// a request.
func (f *fakeMLflow) refusal() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{})
	f.refusals = append(f.refusals, ch)
	return ch
}

func (f *fakeMLflow) countCalls(endpoint string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.calls {
		if c == endpoint {
			n++
		}
	}
	return n
}

// history returns every point of key in run, in arrival order.
func (f *fakeMLflow) history(runID, key string) []tracking.Metric {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []tracking.Metric
	if r := f.runs[runID]; r != nil {
		for _, m := range r.metrics {
			if m.Key == key {
				out = append(out, m.ToTracking())
			}
		}
	}
	return out
}

type mlflowErr struct {
	status int
	code   string
	msg    string
}

func invalid(format string, args ...any) *mlflowErr {
	return &mlflowErr{400, "INVALID_PARAMETER_VALUE", fmt.Sprintf(format, args...)}
}

func notExist(format string, args ...any) *mlflowErr {
	return &mlflowErr{404, "RESOURCE_DOES_NOT_EXIST", fmt.Sprintf(format, args...)}
}

func (f *fakeMLflow) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	down, hook := f.down, f.hook
	if down != 0 {
		for _, ch := range f.refusals {
			close(ch)
		}
		f.refusals = nil
	}
	f.mu.Unlock()
	switch down {
	case 1:
		http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
		return
	case 2:
		if hj, ok := w.(http.Hijacker); ok {
			if conn, _, err := hj.Hijack(); err == nil {
				conn.Close()
				return
			}
		}
		http.Error(w, "down", http.StatusBadGateway)
		return
	}
	var endpoint string
	switch {
	case strings.HasPrefix(r.URL.Path, "/api/2.0/mlflow/"):
		endpoint = strings.TrimPrefix(r.URL.Path, "/api/2.0/mlflow/")
	case strings.HasPrefix(r.URL.Path, "/api/2.0/mlflow-artifacts/artifacts/"):
		endpoint = "mlflow-artifacts"
	case r.URL.Path == "/api/2.0/mlflow-artifacts/artifacts":
		endpoint = "mlflow-artifacts-list"
	default:
		writeJSON(w, 404, map[string]string{"error_code": "ENDPOINT_NOT_FOUND", "message": "no such endpoint " + r.URL.Path})
		return
	}
	if hook != nil && hook(w, r, endpoint) {
		return
	}
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+endpoint)
	f.bodies[endpoint] = append(f.bodies[endpoint], string(body))
	out, merr := f.handle(r, endpoint, body)
	if merr != nil {
		writeJSON(w, merr.status, map[string]string{"error_code": merr.code, "message": merr.msg})
		return
	}
	if b, ok := out.(rawBody); ok {
		w.Header().Set("Content-Type", "application/octet-stream")
		_, _ = w.Write(b)
		return
	}
	writeJSON(w, 200, out)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode is strict, so a misspelt field fails the test's request.
func decode(body []byte, v any) *mlflowErr {
	d := json.NewDecoder(bytes.NewReader(body))
	d.DisallowUnknownFields()
	if err := d.Decode(v); err != nil {
		return &mlflowErr{400, "MALFORMED_REQUEST", "Malformed request: " + err.Error()}
	}
	return nil
}

var keyRE = regexp.MustCompile(`^[\w\-. :/]+$`)

func (f *fakeMLflow) handle(r *http.Request, endpoint string, body []byte) (any, *mlflowErr) {
	method := r.Method
	switch method + " " + endpoint {
	case "GET experiments/get-by-name":
		name := r.URL.Query().Get("experiment_name")
		if name == "" {
			return nil, invalid("Missing value for required parameter 'experiment_name'.")
		}
		for _, e := range f.exps {
			if e.name == name {
				return map[string]any{"experiment": f.expJSON(e)}, nil
			}
		}
		return nil, notExist("Could not find experiment with name '%s'", name)
	case "POST experiments/create":
		var req struct {
			Name             string                `json:"name"`
			ArtifactLocation string                `json:"artifact_location"`
			Tags             []mlflowwire.KeyValue `json:"tags"`
		}
		if e := decode(body, &req); e != nil {
			return nil, e
		}
		if req.Name == "" {
			return nil, invalid("Missing value for required parameter 'name'.")
		}
		for _, e := range f.exps {
			if e.name == req.Name {
				return nil, &mlflowErr{400, "RESOURCE_ALREADY_EXISTS", fmt.Sprintf("Experiment '%s' already exists.", req.Name)}
			}
		}
		e := &fakeExp{id: strconv.Itoa(len(f.exps)), name: req.Name, stage: "active"}
		f.exps = append(f.exps, e)
		return map[string]string{"experiment_id": e.id}, nil
	case "POST runs/create":
		var req mlflowwire.CreateRun
		if e := decode(body, &req); e != nil {
			return nil, e
		}
		var exp *fakeExp
		for _, e := range f.exps {
			if e.id == req.ExperimentID {
				exp = e
			}
		}
		if exp == nil {
			return nil, notExist("No Experiment with id=%s exists", req.ExperimentID)
		}
		if exp.stage != "active" {
			return nil, invalid("The experiment %s must be in the 'active' state. Current state is deleted.", exp.id)
		}
		id := randHex()
		run := &fakeRun{params: map[string]string{}, tags: map[string]string{}}
		for _, t := range req.Tags {
			run.tags[t.Key] = t.Value
		}
		name := cmp.Or(req.RunName, run.tags[tracking.TagRunName], "fake-run-"+strconv.Itoa(len(f.runs)))
		run.tags[tracking.TagRunName] = name
		art := "mlflow-artifacts:/" + exp.id + "/" + id + "/artifacts"
		if !f.serveArtifacts {
			art = "s3://bucket/" + exp.id + "/" + id + "/artifacts"
		}
		run.info = mlflowwire.RunInfo{RunID: id, RunUUID: id, RunName: name, ExperimentID: exp.id, UserID: req.UserID,
			Status: "RUNNING", StartTime: valueOr(req.StartTime, 0), ArtifactURI: art, LifecycleStage: "active"}
		f.runs[id] = run
		f.runOrder = append(f.runOrder, id)
		return map[string]any{"run": f.runJSON(run)}, nil
	case "POST runs/update":
		var req mlflowwire.UpdateRun
		if e := decode(body, &req); e != nil {
			return nil, e
		}
		run := f.runs[cmp.Or(req.RunID, req.RunUUID)]
		if run == nil {
			return nil, notExist("Run with id=%s not found", req.RunID)
		}
		if req.Status != "" {
			if !tracking.RunStatus(req.Status).Valid() {
				return nil, invalid("Invalid value %s for parameter 'status'", req.Status)
			}
			run.info.Status = req.Status
		}
		if req.EndTime != nil && *req.EndTime != 0 {
			run.info.EndTime = req.EndTime
		}
		if req.RunName != "" {
			run.info.RunName = req.RunName
			run.tags[tracking.TagRunName] = req.RunName
		}
		return map[string]any{"run_info": run.info}, nil
	case "POST runs/log-batch":
		var req mlflowwire.LogBatch
		if e := decode(body, &req); e != nil {
			return nil, e
		}
		run := f.runs[req.RunID]
		if run == nil {
			return nil, notExist("Run with id=%s not found", req.RunID)
		}
		switch {
		case len(req.Metrics) > 1000:
			return nil, invalid("A batch logging request can contain at most 1000 metrics. Got %d metrics.", len(req.Metrics))
		case len(req.Params) > 100:
			return nil, invalid("A batch logging request can contain at most 100 params. Got %d params.", len(req.Params))
		case len(req.Tags) > 100:
			return nil, invalid("A batch logging request can contain at most 100 tags. Got %d tags.", len(req.Tags))
		case len(req.Metrics)+len(req.Params)+len(req.Tags) > 1000:
			return nil, invalid("A batch logging request can contain at most 1000 metrics, params, and tags in total.")
		}
		for _, p := range req.Params {
			if !keyRE.MatchString(p.Key) || len(p.Value) > 6000 {
				return nil, invalid("Invalid param %q", p.Key)
			}
			if old, ok := run.params[p.Key]; ok && old != p.Value {
				return nil, invalid("Changing param values is not allowed. Param with key='%s' was already logged with value='%s' for run ID='%s'. Attempted logging new value '%s'.", p.Key, old, req.RunID, p.Value)
			}
		}
		for _, m := range req.Metrics {
			if !keyRE.MatchString(m.Key) {
				return nil, invalid("Invalid metric name: '%s'", m.Key)
			}
		}
		for _, p := range req.Params {
			run.params[p.Key] = p.Value
		}
		for _, t := range req.Tags {
			run.tags[t.Key] = t.Value
		}
		run.metrics = append(run.metrics, req.Metrics...)
		return map[string]any{}, nil
	case "POST runs/log-inputs":
		var req mlflowwire.LogInputs
		if e := decode(body, &req); e != nil {
			return nil, e
		}
		run := f.runs[req.RunID]
		if run == nil {
			return nil, notExist("Run with id=%s not found", req.RunID)
		}
		run.inputs = append(run.inputs, req.Datasets...)
		return map[string]any{}, nil
	case "GET runs/get":
		run := f.runs[cmp.Or(r.URL.Query().Get("run_id"), r.URL.Query().Get("run_uuid"))]
		if run == nil {
			return nil, notExist("Run with id=%s not found", r.URL.Query().Get("run_id"))
		}
		return map[string]any{"run": f.runJSON(run)}, nil
	case "POST runs/search":
		var req mlflowwire.SearchRuns
		if e := decode(body, &req); e != nil {
			return nil, e
		}
		var tagKey, tagValue string
		if m := regexp.MustCompile(`^tags\.(mlflow\.parentRunId|cohort\.create_key) = '([0-9a-f]+)'$`).FindStringSubmatch(req.Filter); m != nil {
			tagKey, tagValue = m[1], m[2]
		} else {
			return nil, invalid("Invalid filter '%s'", req.Filter)
		}
		switch req.RunViewType {
		case "", "ACTIVE_ONLY", "DELETED_ONLY", "ALL":
		default:
			return nil, invalid("Invalid run_view_type %q", req.RunViewType)
		}
		var hits []*fakeRun
		for _, id := range f.runOrder {
			run := f.runs[id]
			if run.tags[tagKey] == tagValue && slices.Contains(req.ExperimentIDs, run.info.ExperimentID) {
				hits = append(hits, run)
			}
		}
		// MLflow's default order: start time descending.
		slices.SortStableFunc(hits, func(a, b *fakeRun) int { return cmp.Compare(b.info.StartTime, a.info.StartTime) })
		off, _ := strconv.Atoi(req.PageToken)
		page := int(valueOr(req.MaxResults, 1000))
		// Small pages, to exercise the client's paging.
		page = min(page, 2)
		end := min(off+page, len(hits))
		out := map[string]any{}
		var runs []any
		for _, run := range hits[min(off, len(hits)):end] {
			runs = append(runs, f.runJSON(run))
		}
		if runs != nil {
			out["runs"] = runs
		}
		if end < len(hits) {
			out["next_page_token"] = strconv.Itoa(end)
		}
		return out, nil
	case "GET metrics/get-history":
		q := r.URL.Query()
		run := f.runs[q.Get("run_id")]
		if run == nil {
			return nil, notExist("Run with id=%s not found", q.Get("run_id"))
		}
		var pts []mlflowwire.Metric
		for _, m := range run.metrics {
			if m.Key == q.Get("metric_key") {
				pts = append(pts, m)
			}
		}
		off, _ := strconv.Atoi(q.Get("page_token"))
		page, _ := strconv.Atoi(q.Get("max_results"))
		page = min(cmp.Or(page, 25000), 3) // small pages, to exercise paging
		end := min(off+page, len(pts))
		out := map[string]any{"metrics": pts[min(off, len(pts)):end]}
		if end < len(pts) {
			out["next_page_token"] = strconv.Itoa(end)
		}
		return out, nil
	case "PUT mlflow-artifacts":
		if !f.serveArtifacts {
			return nil, &mlflowErr{503, "", "Endpoint: /mlflow-artifacts/artifacts/<path:artifact_path> disabled due to the mlflow server running with `--no-serve-artifacts`. To enable artifacts server functionality, run `mlflow server` with `--serve-artifacts`"}
		}
		f.artifacts[strings.TrimPrefix(r.URL.Path, "/api/2.0/mlflow-artifacts/artifacts/")] = body
		return map[string]any{}, nil
	case "GET mlflow-artifacts":
		b, ok := f.artifacts[strings.TrimPrefix(r.URL.Path, "/api/2.0/mlflow-artifacts/artifacts/")]
		if !ok {
			return nil, notExist("File not found")
		}
		return rawBody(b), nil
	case "GET mlflow-artifacts-list":
		return f.listArtifacts(strings.Trim(r.URL.Query().Get("path"), "/")), nil
	}
	if out, merr, ok := f.handleRegistry(r, endpoint, body); ok {
		return out, merr
	}
	return nil, &mlflowErr{404, "ENDPOINT_NOT_FOUND", "no endpoint " + method + " " + endpoint}
}

func (f *fakeMLflow) expJSON(e *fakeExp) map[string]any {
	loc := "mlflow-artifacts:/" + e.id
	if !f.serveArtifacts {
		loc = "s3://bucket/" + e.id
	}
	return map[string]any{"experiment_id": e.id, "name": e.name, "artifact_location": loc,
		"lifecycle_stage": e.stage, "creation_time": 1700000000000, "last_update_time": 1700000000000}
}

func (f *fakeMLflow) runJSON(run *fakeRun) map[string]any {
	latest := map[string]mlflowwire.Metric{}
	for _, m := range run.metrics {
		old, ok := latest[m.Key]
		if !ok || m.Step > old.Step || (m.Step == old.Step && m.Timestamp >= old.Timestamp) {
			latest[m.Key] = m
		}
	}
	var ms []mlflowwire.Metric
	for _, k := range slices.Sorted(mapsKeys(latest)) {
		ms = append(ms, latest[k])
	}
	var ps, ts []mlflowwire.KeyValue
	for _, k := range slices.Sorted(mapsKeys(run.params)) {
		ps = append(ps, mlflowwire.KeyValue{Key: k, Value: run.params[k]})
	}
	for _, k := range slices.Sorted(mapsKeys(run.tags)) {
		ts = append(ts, mlflowwire.KeyValue{Key: k, Value: run.tags[k]})
	}
	info := map[string]any{"run_id": run.info.RunID, "run_uuid": run.info.RunID, "run_name": run.info.RunName,
		"experiment_id": run.info.ExperimentID, "user_id": run.info.UserID, "status": run.info.Status,
		// MLflow's message_to_json writes int64 fields as numbers; one as a
		// string here checks the client takes both.
		"start_time": strconv.FormatInt(int64(run.info.StartTime), 10), "artifact_uri": run.info.ArtifactURI,
		"lifecycle_stage": run.info.LifecycleStage}
	if run.info.EndTime != nil {
		info["end_time"] = int64(*run.info.EndTime)
	}
	return map[string]any{"info": info, "data": map[string]any{"metrics": ms, "params": ps, "tags": ts}}
}

// valueOr returns *n, or or when n is nil (absent from the request).
func valueOr(n *mlflowwire.Int64, or mlflowwire.Int64) mlflowwire.Int64 {
	if n == nil {
		return or
	}
	return *n
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func randHex() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
