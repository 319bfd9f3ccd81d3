package mlflowserver

import (
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

// jViewType is MLflow's ViewType in JSON: its name or its number (1, 2, 3).
type jViewType struct {
	v   tracking.ViewType
	set bool
}

func parseViewType(s string) (tracking.ViewType, bool) {
	switch strings.ToUpper(s) {
	case "ACTIVE_ONLY", "1":
		return tracking.ViewActiveOnly, true
	case "DELETED_ONLY", "2":
		return tracking.ViewDeletedOnly, true
	case "ALL", "3":
		return tracking.ViewAll, true
	}
	return 0, false
}

func (j *jViewType) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s := strings.Trim(string(b), `"`)
	v, ok := parseViewType(s)
	if !ok {
		return &json.UnmarshalTypeError{Value: "view type " + string(b) + " (want ACTIVE_ONLY, DELETED_ONLY or ALL)", Type: reflect.TypeFor[string]()}
	}
	j.v, j.set = v, true
	return nil
}

func ok(w http.ResponseWriter, v any) error {
	if v == nil {
		v = struct{}{}
	}
	writeJSON(w, http.StatusOK, v)
	return nil
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

func required(field string, v *string) (string, error) {
	if v == nil {
		return "", missing(field)
	}
	return *v, nil
}

func nonEmpty(field string, v *string) (string, error) {
	if v == nil || *v == "" {
		return "", missing(field)
	}
	return *v, nil
}

// --- experiments ---

func (s *Server) createExperiment(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name             *string    `json:"name"`
		ArtifactLocation string     `json:"artifact_location"`
		Tags             []keyValue `json:"tags"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	name, err := nonEmpty("name", req.Name)
	if err != nil {
		return err
	}
	if req.ArtifactLocation != "" {
		return invalid("artifact_location %q is not supported: this server keeps every experiment's artifacts under its own artifact root; leave it empty", req.ArtifactLocation)
	}
	tags := map[string]string{}
	for _, t := range req.Tags {
		tags[t.Key] = t.Value
	}
	id, err := s.store.CreateExperiment(r.Context(), name, tags)
	if err != nil {
		return err
	}
	return ok(w, map[string]string{"experiment_id": id})
}

func (s *Server) getExperiment(w http.ResponseWriter, r *http.Request) error {
	id := r.URL.Query().Get("experiment_id")
	if id == "" {
		return missing("experiment_id")
	}
	e, err := s.store.GetExperiment(r.Context(), id)
	if err != nil {
		return notFoundAs(err, fmt.Sprintf("No Experiment with id=%s exists", id))
	}
	return ok(w, map[string]any{"experiment": toWireExperiment(e)})
}

// notFoundAs gives a not-found error MLflow's message.
func notFoundAs(err error, msg string) error {
	if ae := toAPIError(err); ae.code == codeNotFound {
		return apiError{code: codeNotFound, msg: msg, err: err}
	}
	return err
}

func (s *Server) getExperimentByName(w http.ResponseWriter, r *http.Request) error {
	name := r.URL.Query().Get("experiment_name")
	if name == "" {
		return missing("experiment_name")
	}
	e, err := s.store.GetExperimentByName(r.Context(), name)
	if err != nil {
		return notFoundAs(err, fmt.Sprintf("Could not find experiment with name '%s'", name))
	}
	return ok(w, map[string]any{"experiment": toWireExperiment(e)})
}

type searchExperimentsRequest struct {
	MaxResults jInt64    `json:"max_results"`
	PageToken  string    `json:"page_token"`
	Filter     string    `json:"filter"`
	OrderBy    []string  `json:"order_by"`
	ViewType   jViewType `json:"view_type"`
}

func (s *Server) searchExperiments(w http.ResponseWriter, r *http.Request) error {
	var req searchExperimentsRequest
	if r.Method == http.MethodPost {
		if err := s.decode(w, r, &req); err != nil {
			return err
		}
	} else {
		q := r.URL.Query()
		if v := q.Get("max_results"); v != "" {
			if err := req.MaxResults.UnmarshalJSON([]byte(v)); err != nil {
				return invalid("Invalid value %q for parameter 'max_results' supplied", v)
			}
		}
		req.PageToken, req.Filter, req.OrderBy = q.Get("page_token"), q.Get("filter"), q["order_by"]
		if v := q.Get("view_type"); v != "" {
			vt, good := parseViewType(v)
			if !good {
				return invalid("Invalid value %q for parameter 'view_type' supplied", v)
			}
			req.ViewType = jViewType{vt, true}
		}
	}
	if req.MaxResults.set && (req.MaxResults.v < 1 || req.MaxResults.v > tracking.MaxSearchResults) {
		return invalid("Invalid value %d for parameter 'max_results' supplied. It must be at most %d, and at least 1", req.MaxResults.v, tracking.MaxSearchResults)
	}
	exps, next, err := s.store.SearchExperiments(r.Context(), tracking.ExperimentQuery{
		Filter: req.Filter, OrderBy: req.OrderBy, MaxResults: int(req.MaxResults.v), PageToken: req.PageToken, ViewType: req.ViewType.v,
	})
	if err != nil {
		return err
	}
	resp := struct {
		Experiments   []wireExperiment `json:"experiments,omitempty"`
		NextPageToken string           `json:"next_page_token,omitempty"`
	}{NextPageToken: next}
	for _, e := range exps {
		resp.Experiments = append(resp.Experiments, toWireExperiment(e))
	}
	return ok(w, resp)
}

type experimentIDRequest struct {
	ExperimentID *string `json:"experiment_id"`
	NewName      *string `json:"new_name"`
	Key          *string `json:"key"`
	Value        *string `json:"value"`
}

func (s *Server) experimentRequest(w http.ResponseWriter, r *http.Request) (experimentIDRequest, string, error) {
	var req experimentIDRequest
	if err := s.decode(w, r, &req); err != nil {
		return req, "", err
	}
	id, err := nonEmpty("experiment_id", req.ExperimentID)
	return req, id, err
}

func (s *Server) updateExperiment(w http.ResponseWriter, r *http.Request) error {
	req, id, err := s.experimentRequest(w, r)
	if err != nil {
		return err
	}
	if req.NewName == nil || *req.NewName == "" {
		return ok(w, nil) // MLflow: nothing to update
	}
	if err := s.store.RenameExperiment(r.Context(), id, *req.NewName); err != nil {
		return notFoundAs(err, fmt.Sprintf("No Experiment with id=%s exists", id))
	}
	return ok(w, nil)
}

func (s *Server) deleteExperiment(w http.ResponseWriter, r *http.Request) error {
	_, id, err := s.experimentRequest(w, r)
	if err != nil {
		return err
	}
	if err := s.store.DeleteExperiment(r.Context(), id); err != nil {
		return notFoundAs(err, fmt.Sprintf("No Experiment with id=%s exists", id))
	}
	return ok(w, nil)
}

func (s *Server) restoreExperiment(w http.ResponseWriter, r *http.Request) error {
	_, id, err := s.experimentRequest(w, r)
	if err != nil {
		return err
	}
	if err := s.store.RestoreExperiment(r.Context(), id); err != nil {
		return notFoundAs(err, fmt.Sprintf("No Experiment with id=%s exists", id))
	}
	return ok(w, nil)
}

func (s *Server) setExperimentTag(w http.ResponseWriter, r *http.Request) error {
	req, id, err := s.experimentRequest(w, r)
	if err != nil {
		return err
	}
	key, err := nonEmpty("key", req.Key)
	if err != nil {
		return err
	}
	value, err := required("value", req.Value)
	if err != nil {
		return err
	}
	if err := s.store.SetExperimentTag(r.Context(), id, tracking.Tag{Key: key, Value: value}); err != nil {
		return notFoundAs(err, fmt.Sprintf("No Experiment with id=%s exists", id))
	}
	return ok(w, nil)
}

// --- runs ---

func (s *Server) createRun(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		ExperimentID string     `json:"experiment_id"`
		UserID       string     `json:"user_id"`
		RunName      string     `json:"run_name"`
		StartTime    jInt64     `json:"start_time"`
		Tags         []keyValue `json:"tags"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	tags := map[string]string{}
	for _, t := range req.Tags {
		tags[t.Key] = t.Value
	}
	cr := tracking.CreateRun{ExperimentID: req.ExperimentID, Name: req.RunName, UserID: req.UserID, Tags: tags, ProxiedArtifacts: true}
	if req.StartTime.set {
		cr.StartTime = time.UnixMilli(req.StartTime.v)
	}
	run, err := s.store.CreateRun(r.Context(), cr)
	if err != nil {
		return notFoundAs(err, fmt.Sprintf("Could not find experiment with ID %s", cr.ExperimentID))
	}
	return ok(w, map[string]any{"run": toWireRun(run)})
}

func runNotFound(err error, id string) error {
	return notFoundAs(err, fmt.Sprintf("Run with id=%s not found", id))
}

func (s *Server) getRun(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	id, uuid := q.Get("run_id"), q.Get("run_uuid")
	runID, err := runIDOf(&id, &uuid)
	if err != nil {
		return err
	}
	run, err := s.store.GetRun(r.Context(), runID)
	if err != nil {
		return runNotFound(err, runID)
	}
	return ok(w, map[string]any{"run": toWireRun(run)})
}

type runRequest struct {
	RunID   *string `json:"run_id"`
	RunUUID *string `json:"run_uuid"`
}

func (s *Server) updateRun(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		runRequest
		Status  string `json:"status"`
		EndTime jInt64 `json:"end_time"`
		RunName string `json:"run_name"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	id, err := runIDOf(req.RunID, req.RunUUID)
	if err != nil {
		return err
	}
	var end time.Time
	if req.EndTime.set {
		end = time.UnixMilli(req.EndTime.v)
	}
	if err := s.store.UpdateRun(r.Context(), id, tracking.RunStatus(req.Status), end, req.RunName); err != nil {
		return runNotFound(err, id)
	}
	run, err := s.store.GetRun(r.Context(), id)
	if err != nil {
		return runNotFound(err, id)
	}
	return ok(w, map[string]any{"run_info": toWireRunInfo(run.Info)})
}

func (s *Server) runOnly(w http.ResponseWriter, r *http.Request, fn func(id string) error) error {
	var req runRequest
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	id, err := runIDOf(req.RunID, req.RunUUID)
	if err != nil {
		return err
	}
	if err := fn(id); err != nil {
		return runNotFound(err, id)
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
	var req struct {
		ExperimentIDs []string  `json:"experiment_ids"`
		Filter        string    `json:"filter"`
		RunViewType   jViewType `json:"run_view_type"`
		MaxResults    jInt64    `json:"max_results"`
		OrderBy       []string  `json:"order_by"`
		PageToken     string    `json:"page_token"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	if req.MaxResults.set && (req.MaxResults.v < 1 || req.MaxResults.v > tracking.MaxSearchResults) {
		return invalid("Invalid value %d for parameter 'max_results' supplied. It must be at most %d, and at least 1", req.MaxResults.v, tracking.MaxSearchResults)
	}
	if len(req.ExperimentIDs) == 0 {
		// MLflow searches no experiment then; keep that rather than all.
		return ok(w, nil)
	}
	runs, next, err := s.store.SearchRuns(r.Context(), tracking.RunQuery{
		ExperimentIDs: req.ExperimentIDs, Filter: req.Filter, OrderBy: req.OrderBy,
		MaxResults: int(req.MaxResults.v), PageToken: req.PageToken, ViewType: req.RunViewType.v,
	})
	if err != nil {
		return err
	}
	resp := struct {
		Runs          []wireRun `json:"runs,omitempty"`
		NextPageToken string    `json:"next_page_token,omitempty"`
	}{NextPageToken: next}
	for _, run := range runs {
		resp.Runs = append(resp.Runs, toWireRun(run))
	}
	return ok(w, resp)
}

// --- logging ---

type metricRequest struct {
	Key       *string `json:"key"`
	Value     jFloat  `json:"value"`
	Timestamp jInt64  `json:"timestamp"`
	Step      jInt64  `json:"step"`
}

func (m metricRequest) metric(prefix string) (tracking.Metric, error) {
	key, err := nonEmpty(prefix+"key", m.Key)
	if err != nil {
		return tracking.Metric{}, err
	}
	if !m.Value.set {
		return tracking.Metric{}, missing(prefix + "value")
	}
	if !m.Timestamp.set {
		return tracking.Metric{}, missing(prefix + "timestamp")
	}
	return tracking.Metric{Key: key, Value: m.Value.v, Timestamp: m.Timestamp.v, Step: m.Step.v}, nil
}

func (s *Server) logMetric(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		runRequest
		metricRequest
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	id, err := runIDOf(req.RunID, req.RunUUID)
	if err != nil {
		return err
	}
	m, err := req.metric("")
	if err != nil {
		return err
	}
	if err := s.store.LogMetric(r.Context(), id, m); err != nil {
		return runNotFound(err, id)
	}
	return ok(w, nil)
}

type kvRequest struct {
	runRequest
	Key   *string `json:"key"`
	Value *string `json:"value"`
}

func (s *Server) kv(w http.ResponseWriter, r *http.Request, needValue bool) (string, string, string, error) {
	var req kvRequest
	if err := s.decode(w, r, &req); err != nil {
		return "", "", "", err
	}
	id, err := runIDOf(req.RunID, req.RunUUID)
	if err != nil {
		return "", "", "", err
	}
	key, err := nonEmpty("key", req.Key)
	if err != nil {
		return "", "", "", err
	}
	value := ""
	if needValue {
		if value, err = required("value", req.Value); err != nil {
			return "", "", "", err
		}
	}
	return id, key, value, nil
}

func (s *Server) logParam(w http.ResponseWriter, r *http.Request) error {
	id, key, value, err := s.kv(w, r, true)
	if err != nil {
		return err
	}
	if err := s.store.LogParam(r.Context(), id, tracking.Param{Key: key, Value: value}); err != nil {
		return runNotFound(err, id)
	}
	return ok(w, nil)
}

func (s *Server) setTag(w http.ResponseWriter, r *http.Request) error {
	id, key, value, err := s.kv(w, r, true)
	if err != nil {
		return err
	}
	if err := s.store.SetTag(r.Context(), id, tracking.Tag{Key: key, Value: value}); err != nil {
		return runNotFound(err, id)
	}
	return ok(w, nil)
}

func (s *Server) deleteTag(w http.ResponseWriter, r *http.Request) error {
	id, key, _, err := s.kv(w, r, false)
	if err != nil {
		return err
	}
	if err := s.store.DeleteTag(r.Context(), id, key); err != nil {
		if toAPIError(err).code == codeNotFound {
			if _, gerr := s.store.GetRun(r.Context(), id); gerr != nil {
				return runNotFound(gerr, id)
			}
			return apiError{code: codeNotFound, msg: fmt.Sprintf("No tag with name: %s in run with id %s", key, id), err: err}
		}
		return err
	}
	return ok(w, nil)
}

func (s *Server) logBatch(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		runRequest
		Metrics []metricRequest `json:"metrics"`
		Params  []keyValue      `json:"params"`
		Tags    []keyValue      `json:"tags"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	id, err := runIDOf(req.RunID, req.RunUUID)
	if err != nil {
		return err
	}
	switch {
	case len(req.Metrics) > tracking.MaxMetricsPerBatch:
		return invalid("A batch logging request can contain at most %d metrics. Got %d metrics. Please split up metrics across multiple requests and try again.", tracking.MaxMetricsPerBatch, len(req.Metrics))
	case len(req.Params) > tracking.MaxParamsTagsPerBatch:
		return invalid("A batch logging request can contain at most %d params. Got %d params. Please split up params across multiple requests and try again.", tracking.MaxParamsTagsPerBatch, len(req.Params))
	case len(req.Tags) > tracking.MaxParamsTagsPerBatch:
		return invalid("A batch logging request can contain at most %d tags. Got %d tags. Please split up tags across multiple requests and try again.", tracking.MaxParamsTagsPerBatch, len(req.Tags))
	case len(req.Metrics)+len(req.Params)+len(req.Tags) > tracking.MaxEntitiesPerBatch:
		return invalid("A batch logging request can contain at most %d metrics, params and tags in total. Got %d. Please split up entities across multiple requests and try again.", tracking.MaxEntitiesPerBatch, len(req.Metrics)+len(req.Params)+len(req.Tags))
	}
	metrics := make([]tracking.Metric, len(req.Metrics))
	for i, m := range req.Metrics {
		if metrics[i], err = m.metric(fmt.Sprintf("metrics[%d].", i)); err != nil {
			return err
		}
	}
	params := make([]tracking.Param, len(req.Params))
	for i, p := range req.Params {
		params[i] = tracking.Param(p)
	}
	tags := make([]tracking.Tag, len(req.Tags))
	for i, t := range req.Tags {
		tags[i] = tracking.Tag(t)
	}
	if err := s.store.LogBatch(r.Context(), id, metrics, params, tags); err != nil {
		return runNotFound(err, id)
	}
	return ok(w, nil)
}

func (s *Server) logInputs(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		runRequest
		Datasets []wireDatasetInput `json:"datasets"`
	}
	if err := s.decode(w, r, &req); err != nil {
		return err
	}
	id, err := runIDOf(req.RunID, req.RunUUID)
	if err != nil {
		return err
	}
	inputs := make([]tracking.DatasetInput, len(req.Datasets))
	for i, d := range req.Datasets {
		inputs[i].Dataset = tracking.Dataset(d.Dataset)
		for _, t := range d.Tags {
			inputs[i].Tags = append(inputs[i].Tags, tracking.InputTag(t))
		}
	}
	if err := s.store.LogInputs(r.Context(), id, inputs); err != nil {
		return runNotFound(err, id)
	}
	return ok(w, nil)
}

// maxHistoryResults is MLflow's bound on get-history's max_results.
const maxHistoryResults = 25000

func (s *Server) getMetricHistory(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	id, uuid := q.Get("run_id"), q.Get("run_uuid")
	runID, err := runIDOf(&id, &uuid)
	if err != nil {
		return err
	}
	key := q.Get("metric_key")
	if key == "" {
		return missing("metric_key")
	}
	limit := 0
	if v := q.Get("max_results"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxHistoryResults {
			return invalid("Invalid value %q for parameter 'max_results' supplied. It must be a number from 1 to %d", v, maxHistoryResults)
		}
		limit = n
	}
	offset, err := decodeOffset(q.Get("page_token"))
	if err != nil {
		return err
	}
	hist, err := s.store.GetMetricHistory(r.Context(), runID, key)
	if err != nil {
		return runNotFound(err, runID)
	}
	resp := struct {
		Metrics       []wireMetric `json:"metrics,omitempty"`
		NextPageToken string       `json:"next_page_token,omitempty"`
	}{}
	if offset > len(hist) {
		offset = len(hist)
	}
	page := hist[offset:]
	if limit > 0 && len(page) > limit {
		page = page[:limit]
		resp.NextPageToken = encodeOffset(offset + limit)
	}
	for _, m := range page {
		resp.Metrics = append(resp.Metrics, toWireMetric(m))
	}
	return ok(w, resp)
}
