package mlflowserver

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

func ok(w http.ResponseWriter, v any) error {
	if v == nil {
		v = struct{}{}
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// runRequest, runIDOf, required and nonEmpty serve handlers that decode
// with [Server.decode] (no schema) and check fields themselves.
type runRequest struct {
	RunID   *string `json:"run_id"`
	RunUUID *string `json:"run_uuid"`
}

// runIDOf returns run_id, or the deprecated run_uuid, or an error naming
// run_id.
func runIDOf(runID, runUUID *string) (string, error) {
	switch {
	case runID != nil && *runID != "":
		return *runID, nil
	case runUUID != nil && *runUUID != "":
		return *runUUID, nil
	}
	return "", missing("run_id")
}

// required returns *v, or MLflow's missing-parameter error when v is nil.
func required(field string, v *string) (string, error) {
	if v == nil {
		return "", missing(field)
	}
	return *v, nil
}

// nonEmpty returns *v, or MLflow's missing-parameter error when v is nil
// or empty.
func nonEmpty(field string, v *string) (string, error) {
	if v == nil || *v == "" {
		return "", missing(field)
	}
	return *v, nil
}

// --- MLflow's messages for the store's errors ---

func experimentNotFound(err error, id string) error {
	return notFoundAs(err, fmt.Sprintf("No Experiment with id=%s exists", id))
}

// runNotFound gives a missing run MLflow's message, and a deleted one
// MLflow's "must be in the 'active' state".
func runNotFound(err error, id string) error {
	if errors.Is(err, tracking.ErrRunDeleted) {
		return apiError{code: codeInvalidParameter, msg: fmt.Sprintf("The run %s must be in the 'active' state. Current state is deleted.", id), err: err}
	}
	return notFoundAs(err, fmt.Sprintf("Run with id=%s not found", id))
}

// notFoundAs gives a not-found error MLflow's message.
func notFoundAs(err error, msg string) error {
	if ae := toAPIError(err); ae.code == codeNotFound {
		return apiError{code: codeNotFound, msg: msg, err: err}
	}
	return err
}

// nameError checks a metric, param or tag key as MLflow's
// _validate_metric_name / _validate_param_name / _validate_tag_name do,
// with their messages; kind is "metric", "parameter" or "tag".
func nameError(kind, key string) error {
	for _, r := range key {
		if !unicode.IsLetter(r) && !unicode.IsDigit(r) && !strings.ContainsRune("_/.- :", r) {
			return invalid("Invalid %s name: '%s'. Names may only contain alphanumerics, underscores (_), dashes (-), periods (.), spaces ( ), colon(:) and slashes (/).", kind, key)
		}
	}
	if norm := path.Clean(key); norm != key || norm == "." || strings.HasPrefix(norm, "..") || strings.HasPrefix(norm, "/") {
		return invalid("Invalid %s name: '%s'. Names may be treated as files in certain cases, and must not resolve to other names when treated as such. This name would resolve to '%s'", kind, key, norm)
	}
	return nil
}

// lengthError is MLflow's _validate_length_limit.
func lengthError(entity string, limit int, value string) error {
	n := utf8.RuneCountInString(value)
	if n <= limit {
		return nil
	}
	shown := value
	if r := []rune(value); len(r) > 250 {
		shown = string(r[:250])
	}
	return invalid("%s '%s' had length %d, which exceeded length limit of %d", entity, shown, n, limit)
}

func paramError(p tracking.Param) error {
	if err := nameError("parameter", p.Key); err != nil {
		return err
	}
	if err := lengthError("Param key", tracking.MaxKeyLength, p.Key); err != nil {
		return err
	}
	return lengthError("Param value", tracking.MaxParamValueLength, p.Value)
}

func tagError(t tracking.Tag) error {
	if err := nameError("tag", t.Key); err != nil {
		return err
	}
	if err := lengthError("Tag key", tracking.MaxKeyLength, t.Key); err != nil {
		return err
	}
	return lengthError("Tag value", tracking.MaxTagValueLength, t.Value)
}

// pyFloat writes a float as Python's str does (1.0, not 1).
func pyFloat(f float64) string {
	if f == math.Trunc(f) && math.Abs(f) < 1e16 {
		return strconv.FormatFloat(f, 'f', 1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

func metricError(m tracking.Metric) error {
	if err := nameError("metric", m.Key); err != nil {
		return err
	}
	if m.Timestamp < 0 {
		return invalid("Got invalid timestamp %d for metric '%s' (value=%s). Timestamp must be a nonnegative long (64-bit integer) ", m.Timestamp, m.Key, pyFloat(m.Value))
	}
	return lengthError("Metric name", tracking.MaxKeyLength, m.Key)
}

// searchMaxResults checks a search's max_results as MLflow's stores do.
func searchMaxResults(n *mlflowwire.Int64) error {
	switch {
	case n == nil:
		return nil
	case *n < 1:
		return invalid("Invalid value for max_results. It must be a positive integer, but got %d", *n)
	case *n > tracking.MaxSearchResults:
		return invalid("Invalid value for max_results. It must be at most %d, but got %d", tracking.MaxSearchResults, *n)
	}
	return nil
}

// intOr returns *n, or or when n is nil.
func intOr(n *mlflowwire.Int64, or int64) int64 {
	if n == nil {
		return or
	}
	return int64(*n)
}

// --- experiments ---

func (s *Server) createExperiment(w http.ResponseWriter, r *http.Request) error {
	var req mlflowwire.CreateExperiment
	if err := s.request(w, r, &req,
		p("name", isRequired, isString),
		p("artifact_location", isString),
		each("tags", p("key", isString), p("value", isString)),
	); err != nil {
		return err
	}
	if req.ArtifactLocation != "" {
		// Deliberate difference (doc.go): no artifact location of the client's choosing.
		return invalid("Invalid value %q for parameter 'artifact_location' supplied: this server keeps every experiment's artifacts under its own artifact root; leave artifact_location empty", req.ArtifactLocation)
	}
	if n := utf8.RuneCountInString(req.Name); n > maxExperimentNameLength {
		return invalid("Experiment name exceeds the maximum length of %d characters", maxExperimentNameLength)
	}
	tags := map[string]string{}
	for _, t := range req.Tags {
		tags[t.Key] = t.Value
	}
	id, err := s.store.CreateProxiedExperiment(r.Context(), req.Name, tags)
	if errors.Is(err, tracking.ErrAlreadyExists) {
		return apiError{code: codeAlreadyExists, msg: fmt.Sprintf("Experiment(name=%s) already exists.", req.Name), err: err}
	}
	if err != nil {
		return err
	}
	return ok(w, mlflowwire.CreateExperimentResponse{ExperimentID: id})
}

// maxExperimentNameLength is MLflow's MAX_EXPERIMENT_NAME_LENGTH.
const maxExperimentNameLength = 500

func (s *Server) getExperiment(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ExperimentID string `json:"experiment_id"`
	}
	if err := s.request(w, r, &req, p("experiment_id", isRequired, isString)); err != nil {
		return err
	}
	e, err := s.store.GetExperiment(r.Context(), req.ExperimentID)
	if err != nil {
		return experimentNotFound(err, req.ExperimentID)
	}
	return ok(w, mlflowwire.ExperimentResponse{Experiment: mlflowwire.FromExperiment(e)})
}

func (s *Server) getExperimentByName(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name string `json:"experiment_name"`
	}
	if err := s.request(w, r, &req, p("experiment_name", isRequired, isString)); err != nil {
		return err
	}
	e, err := s.store.GetExperimentByName(r.Context(), req.Name)
	if err != nil {
		return notFoundAs(err, fmt.Sprintf("Could not find experiment with name '%s'", req.Name))
	}
	return ok(w, mlflowwire.ExperimentResponse{Experiment: mlflowwire.FromExperiment(e)})
}

type searchExperimentsRequest struct {
	MaxResults *mlflowwire.Int64   `json:"max_results"`
	PageToken  string              `json:"page_token"`
	Filter     string              `json:"filter"`
	OrderBy    []string            `json:"order_by"`
	ViewType   mlflowwire.ViewType `json:"view_type"`
}

func (s *Server) searchExperiments(w http.ResponseWriter, r *http.Request) error {
	var req searchExperimentsRequest
	if err := s.request(w, r, &req,
		p("max_results", isInt),
		p("order_by", isArray, isStrings),
		p("filter", isString),
		p("page_token", isString),
	); err != nil {
		return err
	}
	if err := searchMaxResults(req.MaxResults); err != nil {
		return err
	}
	exps, next, err := s.store.SearchExperiments(r.Context(), tracking.ExperimentQuery{
		Filter: req.Filter, OrderBy: req.OrderBy, MaxResults: int(intOr(req.MaxResults, 0)), PageToken: req.PageToken, ViewType: req.ViewType.ToTracking(),
	})
	if err != nil {
		return err
	}
	resp := mlflowwire.SearchExperimentsResponse{NextPageToken: next}
	for _, e := range exps {
		resp.Experiments = append(resp.Experiments, mlflowwire.FromExperiment(e))
	}
	return ok(w, resp)
}

type experimentIDRequest struct {
	ExperimentID string `json:"experiment_id"`
	NewName      string `json:"new_name"`
	Key          string `json:"key"`
	Value        string `json:"value"`
}

var experimentIDSchema = p("experiment_id", isRequired, isString)

func (s *Server) updateExperiment(w http.ResponseWriter, r *http.Request) error {
	var req experimentIDRequest
	if err := s.request(w, r, &req, experimentIDSchema, p("new_name", isString, isRequired)); err != nil {
		return err
	}
	if err := s.store.RenameExperiment(r.Context(), req.ExperimentID, req.NewName); err != nil {
		if errors.Is(err, tracking.ErrAlreadyExists) {
			return apiError{code: codeAlreadyExists, msg: fmt.Sprintf("Experiment(name=%s) already exists.", req.NewName), err: err}
		}
		return experimentNotFound(err, req.ExperimentID)
	}
	return ok(w, nil)
}

func (s *Server) deleteExperiment(w http.ResponseWriter, r *http.Request) error {
	var req experimentIDRequest
	if err := s.request(w, r, &req, experimentIDSchema); err != nil {
		return err
	}
	if err := s.store.DeleteExperiment(r.Context(), req.ExperimentID); err != nil {
		return experimentNotFound(err, req.ExperimentID)
	}
	return ok(w, nil)
}

func (s *Server) restoreExperiment(w http.ResponseWriter, r *http.Request) error {
	var req experimentIDRequest
	if err := s.request(w, r, &req, experimentIDSchema); err != nil {
		return err
	}
	if err := s.store.RestoreExperiment(r.Context(), req.ExperimentID); err != nil {
		return experimentNotFound(err, req.ExperimentID)
	}
	return ok(w, nil)
}

func (s *Server) setExperimentTag(w http.ResponseWriter, r *http.Request) error {
	var req experimentIDRequest
	if err := s.request(w, r, &req, experimentIDSchema, p("key", isRequired, isString), p("value", isString)); err != nil {
		return err
	}
	if err := nameError("tag", req.Key); err != nil {
		return err
	}
	if err := lengthError("Tag key", tracking.MaxKeyLength, req.Key); err != nil {
		return err
	}
	if err := lengthError("Tag value", tracking.MaxExperimentTagValueLength, req.Value); err != nil {
		return err
	}
	if err := s.store.SetExperimentTag(r.Context(), req.ExperimentID, tracking.Tag{Key: req.Key, Value: req.Value}); err != nil {
		return experimentNotFound(err, req.ExperimentID)
	}
	return ok(w, nil)
}

// --- runs ---

func (s *Server) createRun(w http.ResponseWriter, r *http.Request) error {
	var req mlflowwire.CreateRun
	if err := s.request(w, r, &req,
		p("experiment_id", isString),
		p("start_time", isInt),
		p("run_name", isString),
		p("user_id", isString),
		each("tags", p("key", isString), p("value", isString)),
	); err != nil {
		return err
	}
	tags := map[string]string{}
	for _, t := range req.Tags {
		if err := tagError(tracking.Tag(t)); err != nil {
			return err
		}
		tags[t.Key] = t.Value
	}
	// MLflow's stores do not look the parent run up: a run naming a parent
	// that does not exist (or is elsewhere) is created all the same.
	cr := tracking.CreateRun{ExperimentID: req.ExperimentID, Name: req.RunName, UserID: req.UserID, Tags: tags, ProxiedArtifacts: true, UncheckedParent: true}
	if req.StartTime != nil {
		cr.StartTime = time.UnixMilli(int64(*req.StartTime))
	}
	if cr.ExperimentID == "" {
		cr.ExperimentID = tracking.DefaultExperimentID
	}
	run, err := s.store.CreateRun(r.Context(), cr)
	if errors.Is(err, tracking.ErrExperimentDeleted) {
		return apiError{code: codeInvalidParameter, msg: fmt.Sprintf("The experiment %s must be in the 'active' state. Current state is deleted.", cr.ExperimentID), err: err}
	}
	if err != nil {
		return experimentNotFound(err, cr.ExperimentID)
	}
	return ok(w, mlflowwire.RunResponse{Run: mlflowwire.FromRun(run)})
}

var runIDSchema = p("run_id", isRequired, isString)

func (s *Server) getRun(w http.ResponseWriter, r *http.Request) error {
	var req mlflowwire.RunRef
	if err := s.request(w, r, &req, runIDSchema); err != nil {
		return err
	}
	run, err := s.store.GetRun(r.Context(), req.ID())
	if err != nil {
		return runNotFound(err, req.ID())
	}
	return ok(w, mlflowwire.RunResponse{Run: mlflowwire.FromRun(run)})
}

func (s *Server) updateRun(w http.ResponseWriter, r *http.Request) error {
	var req mlflowwire.UpdateRun
	if err := s.request(w, r, &req, runIDSchema, p("end_time", isInt), p("status", isString), p("run_name", isString)); err != nil {
		return err
	}
	id := req.ID()
	if req.Status != "" && !slices.Contains([]string{"RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"}, req.Status) {
		return invalid("Invalid value %q for parameter 'status' supplied: it must be one of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED", req.Status)
	}
	var end time.Time
	if req.EndTime != nil {
		end = time.UnixMilli(int64(*req.EndTime))
	}
	if err := s.store.UpdateRun(r.Context(), id, tracking.RunStatus(req.Status), end, req.RunName); err != nil {
		return runNotFound(err, id)
	}
	run, err := s.store.GetRun(r.Context(), id)
	if err != nil {
		return runNotFound(err, id)
	}
	return ok(w, mlflowwire.UpdateRunResponse{RunInfo: mlflowwire.FromRunInfo(run.Info)})
}

func (s *Server) runOnly(w http.ResponseWriter, r *http.Request, fn func(id string) error) error {
	var req mlflowwire.RunRef
	if err := s.request(w, r, &req, runIDSchema); err != nil {
		return err
	}
	if err := fn(req.ID()); err != nil {
		return runNotFound(err, req.ID())
	}
	return ok(w, nil)
}

func (s *Server) deleteRun(w http.ResponseWriter, r *http.Request) error {
	return s.runOnly(w, r, func(id string) error { return s.store.DeleteRun(r.Context(), id) })
}

func (s *Server) restoreRun(w http.ResponseWriter, r *http.Request) error {
	return s.runOnly(w, r, func(id string) error { return s.store.RestoreRun(r.Context(), id) })
}

func (s *Server) searchRuns(w http.ResponseWriter, r *http.Request) error {
	var req mlflowwire.SearchRuns
	if err := s.request(w, r, &req,
		p("experiment_ids", isArray),
		p("filter", isString),
		p("max_results", isInt, atMost(tracking.MaxSearchResults)),
		p("order_by", isArray, isStrings),
		p("page_token", isString),
	); err != nil {
		return err
	}
	if err := searchMaxResults(req.MaxResults); err != nil {
		return err
	}
	if len(req.ExperimentIDs) == 0 {
		// MLflow searches no experiment then; keep that rather than all.
		return ok(w, nil)
	}
	runs, next, err := s.store.SearchRuns(r.Context(), tracking.RunQuery{
		ExperimentIDs: req.ExperimentIDs, Filter: req.Filter, OrderBy: req.OrderBy,
		MaxResults: int(intOr(req.MaxResults, 0)), PageToken: req.PageToken, ViewType: req.RunViewType.ToTracking(),
	})
	if err != nil {
		return err
	}
	resp := mlflowwire.SearchRunsResponse{NextPageToken: next}
	for _, run := range runs {
		resp.Runs = append(resp.Runs, mlflowwire.FromRun(run))
	}
	return ok(w, resp)
}

// --- logging ---

// metricSchema is log-metric's, and each of log-batch's metrics.
var metricSchema = []param{
	p("key", isRequired, isString),
	p("value", isRequired, isFloat),
	p("timestamp", isInt, isRequired),
	p("step", isInt),
}

func (s *Server) logMetric(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		mlflowwire.RunRef
		mlflowwire.Metric
	}
	if err := s.request(w, r, &req, append([]param{runIDSchema}, metricSchema...)...); err != nil {
		return err
	}
	id, m := req.ID(), req.ToTracking()
	if err := metricError(m); err != nil {
		return err
	}
	if err := s.store.LogMetric(r.Context(), id, m); err != nil {
		return runNotFound(err, id)
	}
	return ok(w, nil)
}

type kvRequest struct {
	mlflowwire.RunRef
	Key   string `json:"key"`
	Value string `json:"value"`
}

func (s *Server) kv(w http.ResponseWriter, r *http.Request, withValue bool) (kvRequest, error) {
	var req kvRequest
	schema := []param{runIDSchema, p("key", isRequired, isString)}
	if withValue {
		schema = append(schema, p("value", isString))
	}
	err := s.request(w, r, &req, schema...)
	return req, err
}

func (s *Server) logParam(w http.ResponseWriter, r *http.Request) error {
	req, err := s.kv(w, r, true)
	if err != nil {
		return err
	}
	prm := tracking.Param{Key: req.Key, Value: req.Value}
	if err := paramError(prm); err != nil {
		return err
	}
	if err := s.store.LogParam(r.Context(), req.ID(), prm); err != nil {
		return runNotFound(err, req.ID())
	}
	return ok(w, nil)
}

func (s *Server) setTag(w http.ResponseWriter, r *http.Request) error {
	req, err := s.kv(w, r, true)
	if err != nil {
		return err
	}
	tag := tracking.Tag{Key: req.Key, Value: req.Value}
	if err := tagError(tag); err != nil {
		return err
	}
	if err := s.store.SetTag(r.Context(), req.ID(), tag); err != nil {
		return runNotFound(err, req.ID())
	}
	return ok(w, nil)
}

func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request) error {
	req, err := s.kv(w, r, false)
	if err != nil {
		return err
	}
	id, key := req.ID(), req.Key
	if err := s.store.DeleteTag(r.Context(), id, key); err != nil {
		if toAPIError(err).code == codeNotFound {
			if _, gerr := s.store.GetRun(r.Context(), id); gerr != nil {
				return runNotFound(gerr, id)
			}
			return apiError{code: codeNotFound, msg: fmt.Sprintf("No tag with name: %s in run with id %s", key, id), err: err}
		}
		return runNotFound(err, id)
	}
	return ok(w, nil)
}

func (s *Server) logBatch(w http.ResponseWriter, r *http.Request) error {
	var req mlflowwire.LogBatch
	if err := s.request(w, r, &req,
		p("run_id", isString, isRequired),
		each("metrics", metricSchema...),
		each("params", p("key", isRequired, isString), p("value", isString)),
		each("tags", p("key", isRequired, isString), p("value", isString)),
	); err != nil {
		return err
	}
	id := req.ID()
	// MLflow's order: every entity's validity, then the batch's limits.
	metrics := make([]tracking.Metric, len(req.Metrics))
	for i, m := range req.Metrics {
		metrics[i] = m.ToTracking()
		if err := metricError(metrics[i]); err != nil {
			return err
		}
	}
	params := make([]tracking.Param, len(req.Params))
	for i, prm := range req.Params {
		params[i] = tracking.Param(prm)
		if err := paramError(params[i]); err != nil {
			return err
		}
	}
	tags := make([]tracking.Tag, len(req.Tags))
	for i, t := range req.Tags {
		tags[i] = tracking.Tag(t)
		if err := tagError(tags[i]); err != nil {
			return err
		}
	}
	for _, c := range []struct {
		what     string
		limit, n int
	}{
		{"metrics", tracking.MaxMetricsPerBatch, len(metrics)},
		{"params", tracking.MaxParamsTagsPerBatch, len(params)},
		{"tags", tracking.MaxParamsTagsPerBatch, len(tags)},
		{"metrics, params, and tags", tracking.MaxEntitiesPerBatch, len(metrics) + len(params) + len(tags)},
	} {
		if c.n > c.limit {
			return invalid("A batch logging request can contain at most %d %s. Got %d %s. Please split up %s across multiple requests and try again.", c.limit, c.what, c.n, c.what, c.what)
		}
	}
	seen := map[string]bool{}
	var dupes []string
	for _, prm := range params {
		if seen[prm.Key] {
			dupes = append(dupes, "'"+prm.Key+"'")
		}
		seen[prm.Key] = true
	}
	if len(dupes) > 0 {
		return invalid("Duplicate parameter keys have been submitted: [%s]. Please ensure the request contains only one param value per param key.", strings.Join(dupes, ", "))
	}
	if err := s.store.LogBatch(r.Context(), id, metrics, params, tags); err != nil {
		return runNotFound(err, id)
	}
	return ok(w, nil)
}

func (s *Server) logInputs(w http.ResponseWriter, r *http.Request) error {
	var req mlflowwire.LogInputs
	datasets := each("datasets",
		each("tags", p("key", isString), p("value", isString)),
		obj("dataset", p("name", isString), p("digest", isString), p("source_type", isString),
			p("source", isString), p("schema", isString), p("profile", isString)),
	)
	datasets.checks = []check{isRequired, isArray}
	if err := s.request(w, r, &req, runIDSchema, datasets); err != nil {
		return err
	}
	id := req.ID()
	inputs := make([]tracking.DatasetInput, len(req.Datasets))
	for i, d := range req.Datasets {
		inputs[i] = d.ToTracking()
	}
	if err := s.store.LogInputs(r.Context(), id, inputs); err != nil {
		return runNotFound(err, id)
	}
	return ok(w, nil)
}

// maxHistoryResults is MLflow's bound on get-history's max_results.
const maxHistoryResults = 25000

func (s *Server) getMetricHistory(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		mlflowwire.RunRef
		MetricKey  string            `json:"metric_key"`
		PageToken  string            `json:"page_token"`
		MaxResults *mlflowwire.Int64 `json:"max_results"`
	}
	if err := s.request(w, r, &req,
		p("run_id", isString, isRequired),
		p("metric_key", isString, isRequired),
		p("page_token", isString),
		p("max_results", isInt, within(1, maxHistoryResults, fmt.Sprintf("max_results must be between 1 and %d.", maxHistoryResults))),
	); err != nil {
		return err
	}
	runID, key, limit := req.ID(), req.MetricKey, int(intOr(req.MaxResults, 0))
	offset, err := decodeOffset(req.PageToken)
	if err != nil {
		return err
	}
	hist, err := s.store.GetMetricHistory(r.Context(), runID, key)
	if err != nil {
		return runNotFound(err, runID)
	}
	resp := mlflowwire.MetricHistoryResponse{}
	if offset > len(hist) {
		offset = len(hist)
	}
	page := hist[offset:]
	if limit > 0 && len(page) > limit {
		page = page[:limit]
		resp.NextPageToken = encodeOffset(offset + limit)
	}
	for _, m := range page {
		resp.Metrics = append(resp.Metrics, mlflowwire.FromMetric(m))
	}
	return ok(w, resp)
}

// --- models, datasets and the UI's bulk histories ---

// logModel is runs/log-model: the model's MLmodel JSON is appended to the
// run's mlflow.log-model.history tag.
func (s *Server) logModel(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		mlflowwire.RunRef
		ModelJSON string `json:"model_json"`
	}
	if err := s.request(w, r, &req, p("run_id", isString, isRequired), p("model_json", isString, isRequired)); err != nil {
		return err
	}
	var model map[string]json.RawMessage
	if err := json.Unmarshal([]byte(req.ModelJSON), &model); err != nil {
		return invalid("Malformed model info. \n %s \n is not a valid JSON.", req.ModelJSON)
	}
	var missingFields []string
	for _, f := range []string{"artifact_path", "flavors", "run_id", "utc_time_created"} {
		if _, has := model[f]; !has {
			missingFields = append(missingFields, "'"+f+"'")
		}
	}
	if len(missingFields) > 0 {
		return invalid("Model json is missing mandatory fields: {%s}", strings.Join(missingFields, ", "))
	}
	if err := s.store.RecordLoggedModel(r.Context(), req.ID(), []byte(req.ModelJSON)); err != nil {
		return runNotFound(err, req.ID())
	}
	return ok(w, nil)
}

// maxSearchDatasetsExperiments is MLflow's MAX_EXPERIMENT_IDS_PER_REQUEST
// for search-datasets.
const maxSearchDatasetsExperiments = 20

// searchDatasets is the UI's experiments/search-datasets: the datasets
// the experiments' runs used, with their mlflow.data.context.
func (s *Server) searchDatasets(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ExperimentIDs []string `json:"experiment_ids"`
	}
	if err := s.request(w, r, &req, p("experiment_ids", isArray, isStrings)); err != nil {
		return err
	}
	switch n := len(req.ExperimentIDs); {
	case n == 0:
		return invalid("SearchDatasets request must specify at least one experiment_id.")
	case n > maxSearchDatasetsExperiments:
		return invalid("SearchDatasets request cannot specify more than %d experiment_ids. Received %d experiment_ids.", maxSearchDatasetsExperiments, n)
	}
	sums, err := s.store.SearchDatasets(r.Context(), req.ExperimentIDs)
	if err != nil {
		return err
	}
	resp := struct {
		DatasetSummaries []mlflowwire.DatasetSummary `json:"dataset_summaries,omitempty"`
	}{}
	for _, d := range sums {
		resp.DatasetSummaries = append(resp.DatasetSummaries, mlflowwire.DatasetSummary(d))
	}
	return ok(w, resp)
}

// MLflow's bounds on the UI's bulk metric histories.
const (
	maxBulkRuns          = 100   // MAX_RUN_IDS_PER_REQUEST, MAX_RUNS_GET_METRIC_HISTORY_BULK
	maxBulkResults       = 25000 // MAX_HISTORY_RESULTS
	maxIntervalPerRun    = 2500  // MAX_RESULTS_PER_RUN
	maxIntervalRunPoints = 25000 // MAX_RESULTS_GET_METRIC_HISTORY
)

// getHistoryBulk is the UI's GET metrics/get-history-bulk: one metric's
// history in up to 100 runs, by run then timestamp, at most max_results
// points in all.
func (s *Server) getHistoryBulk(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	runIDs := q["run_id"]
	switch {
	case len(runIDs) == 0:
		return invalid("GetMetricHistoryBulk request must specify at least one run_id.")
	case len(runIDs) > maxBulkRuns:
		return invalid("GetMetricHistoryBulk request cannot specify more than %d run_ids. Received %d run_ids.", maxBulkRuns, len(runIDs))
	case !q.Has("metric_key"):
		return invalid("GetMetricHistoryBulk request must specify a metric_key.")
	}
	limit := maxBulkResults
	if v := q.Get("max_results"); q.Has("max_results") {
		n, good := intOf(v)
		if !good || n < 0 {
			return invalidValue("max_results", v)
		}
		limit = int(min(n, maxBulkResults))
	}
	resp := struct {
		Metrics []mlflowwire.RunMetric `json:"metrics"`
	}{Metrics: []mlflowwire.RunMetric{}}
	if limit == 0 {
		return ok(w, resp)
	}
	slices.Sort(runIDs)
	hist, err := s.store.MetricHistoryBulk(r.Context(), slices.Compact(runIDs), q.Get("metric_key"), limit)
	if err != nil {
		return err
	}
	for _, m := range hist {
		resp.Metrics = append(resp.Metrics, mlflowwire.FromRunMetric(m))
	}
	return ok(w, resp)
}

// getHistoryBulkInterval is the UI's GET metrics/get-history-bulk-interval:
// one metric in up to 100 runs, sampled at no more than max_results
// steps (every run's first and last step kept), as MLflow samples it.
func (s *Server) getHistoryBulkInterval(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RunIDs     []string          `json:"run_ids"`
		MetricKey  string            `json:"metric_key"`
		StartStep  *mlflowwire.Int64 `json:"start_step"`
		EndStep    *mlflowwire.Int64 `json:"end_step"`
		MaxResults *mlflowwire.Int64 `json:"max_results"`
	}
	if err := s.request(w, r, &req,
		p("run_ids", isRequired, isArray, isStrings),
		p("metric_key", isRequired, isString),
		p("start_step", isInt),
		p("end_step", isInt),
		p("max_results", isInt, within(1, maxIntervalPerRun, fmt.Sprintf("max_results must be between 1 and %d.", maxIntervalPerRun))),
	); err != nil {
		return err
	}
	if n := len(req.RunIDs); n > maxBulkRuns {
		return invalid("GetMetricHistoryBulkInterval request must specify at most %d run_ids. Received %d run_ids.%s", maxBulkRuns, n, apiDocsHint)
	}
	limit := intOr(req.MaxResults, maxIntervalPerRun)
	start, end := intOr(req.StartStep, 0), intOr(req.EndStep, 0)
	switch {
	case req.StartStep != nil && req.EndStep != nil && start > end:
		return invalid("end_step must be greater than start_step. Found start_step=%d and end_step=%d.", start, end)
	case (req.StartStep == nil) != (req.EndStep == nil):
		return invalid("If either start step or end step are specified, both must be specified.")
	}
	distinct := slices.Sorted(slices.Values(req.RunIDs))
	hist, err := s.store.MetricHistoryBulk(r.Context(), slices.Compact(distinct), req.MetricKey, maxBulkRuns*maxIntervalRunPoints)
	if err != nil {
		return err
	}
	byRun := map[string][]tracking.RunMetric{}
	var all []int64
	ends := map[int64]bool{} // every run's first and last step
	for _, m := range hist {
		byRun[m.RunID] = append(byRun[m.RunID], m)
		all = append(all, m.Step)
	}
	for _, pts := range byRun {
		lo, hi := pts[0].Step, pts[0].Step
		for _, m := range pts {
			lo, hi = min(lo, m.Step), max(hi, m.Step)
		}
		ends[lo], ends[hi] = true, true
	}
	slices.Sort(all)
	all = slices.Compact(all)
	if req.StartStep == nil {
		start, end = 0, 0
		if len(all) > 0 {
			end = all[len(all)-1]
		}
	}
	steps := sampleSteps(start, end, int(limit), all)
	for st := range ends {
		if start <= st && st <= end {
			steps[st] = true
		}
	}
	resp := struct {
		Metrics []mlflowwire.RunMetric `json:"metrics,omitempty"`
	}{}
	for _, id := range req.RunIDs {
		var pts []tracking.RunMetric
		for _, m := range byRun[id] {
			if steps[m.Step] {
				pts = append(pts, m)
			}
		}
		slices.SortStableFunc(pts, func(a, b tracking.RunMetric) int {
			if c := cmp.Compare(a.Step, b.Step); c != 0 {
				return c
			}
			return cmp.Compare(a.Timestamp, b.Timestamp)
		})
		for _, m := range pts[:min(len(pts), maxIntervalRunPoints)] {
			resp.Metrics = append(resp.Metrics, mlflowwire.FromRunMetric(m))
		}
	}
	return ok(w, resp)
}

// sampleSteps is MLflow's sampling (get_metric_history_bulk_interval):
// of the sorted distinct steps in [start, end], all of them when there are
// at most limit, else limit evenly spaced ones and the last. (MLflow 2.11's
// handler compared the index with the count rather than the end, so a
// window not starting at step 0 lost its samples; newer MLflow and this
// server do not.)
func sampleSteps(start, end int64, limit int, all []int64) map[int64]bool {
	lo, _ := slices.BinarySearch(all, start)
	hi, found := slices.BinarySearch(all, end)
	if found {
		hi++
	}
	out := map[int64]bool{}
	if hi-lo <= limit {
		for _, s := range all[lo:hi] {
			out[s] = true
		}
		return out
	}
	interval := float64(hi-lo) / float64(limit)
	for i := range limit {
		if idx := lo + int(float64(i)*interval); idx < hi {
			out[all[idx]] = true
		}
	}
	out[all[hi-1]] = true
	return out
}
