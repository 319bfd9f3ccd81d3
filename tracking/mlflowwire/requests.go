package mlflowwire

import (
	"encoding/json"
	"reflect"
	"strings"

	"github.com/cohortfl/cohort/tracking"
)

// The request and response envelopes, as service.proto's messages. A
// client fills a request and encodes it; a server decodes it after
// checking it against the endpoint's schema. The client's spool keeps
// requests as they are encoded here, so a field's JSON name is part of
// the spool's format as well as the wire's.

// RunRef is a request's run: run_id, or the run_uuid older clients send
// instead.
type RunRef struct {
	RunID   string `json:"run_id"`
	RunUUID string `json:"run_uuid,omitempty"`
}

// ID returns run_id, or run_uuid when run_id is empty.
func (r RunRef) ID() string {
	if r.RunID != "" {
		return r.RunID
	}
	return r.RunUUID
}

// CreateExperiment is experiments/create.
type CreateExperiment struct {
	Name             string     `json:"name"`
	ArtifactLocation string     `json:"artifact_location,omitempty"`
	Tags             []KeyValue `json:"tags,omitempty"`
}

// CreateExperimentResponse answers experiments/create.
type CreateExperimentResponse struct {
	ExperimentID string `json:"experiment_id"`
}

// ExperimentResponse answers experiments/get and
// experiments/get-by-name.
type ExperimentResponse struct {
	Experiment Experiment `json:"experiment"`
}

// SearchExperimentsResponse answers experiments/search.
type SearchExperimentsResponse struct {
	Experiments   []Experiment `json:"experiments,omitempty"`
	NextPageToken string       `json:"next_page_token,omitempty"`
}

// CreateRun is runs/create. StartTime, in milliseconds since the Unix
// epoch, is nil when the server is to use its own clock.
type CreateRun struct {
	ExperimentID string     `json:"experiment_id"`
	UserID       string     `json:"user_id,omitempty"`
	RunName      string     `json:"run_name,omitempty"`
	StartTime    *Int64     `json:"start_time,omitempty"`
	Tags         []KeyValue `json:"tags,omitempty"`
}

// RunResponse answers runs/create and runs/get.
type RunResponse struct {
	Run Run `json:"run"`
}

// UpdateRun is runs/update; an empty field (a nil EndTime) leaves the
// run's value as it is.
type UpdateRun struct {
	RunRef
	Status  string `json:"status,omitempty"`
	EndTime *Int64 `json:"end_time,omitempty"`
	RunName string `json:"run_name,omitempty"`
}

// UpdateRunResponse answers runs/update.
type UpdateRunResponse struct {
	RunInfo RunInfo `json:"run_info"`
}

// LogBatch is runs/log-batch.
type LogBatch struct {
	RunRef
	Metrics []Metric   `json:"metrics,omitempty"`
	Params  []KeyValue `json:"params,omitempty"`
	Tags    []KeyValue `json:"tags,omitempty"`
}

// LogInputs is runs/log-inputs.
type LogInputs struct {
	RunRef
	Datasets []DatasetInput `json:"datasets"`
}

// SearchRuns is runs/search. MaxResults is nil for the server's default.
type SearchRuns struct {
	ExperimentIDs []string `json:"experiment_ids"`
	Filter        string   `json:"filter,omitempty"`
	RunViewType   ViewType `json:"run_view_type,omitempty"`
	MaxResults    *Int64   `json:"max_results,omitempty"`
	OrderBy       []string `json:"order_by,omitempty"`
	PageToken     string   `json:"page_token,omitempty"`
}

// SearchRunsResponse answers runs/search.
type SearchRunsResponse struct {
	Runs          []Run  `json:"runs,omitempty"`
	NextPageToken string `json:"next_page_token,omitempty"`
}

// MetricHistoryResponse answers metrics/get-history.
type MetricHistoryResponse struct {
	Metrics       []Metric `json:"metrics,omitempty"`
	NextPageToken string   `json:"next_page_token,omitempty"`
}

// ViewType is MLflow's ViewType: written as its name (ACTIVE_ONLY,
// DELETED_ONLY, ALL), read from its name in any case or its number (1, 2,
// 3); the empty ViewType is MLflow's default, ACTIVE_ONLY. Any other
// value fails to decode with a [*json.UnmarshalTypeError].
type ViewType string

// The view types.
const (
	ViewActiveOnly  ViewType = "ACTIVE_ONLY"
	ViewDeletedOnly ViewType = "DELETED_ONLY"
	ViewAll         ViewType = "ALL"
)

// ParseViewType reads a view type's name (in any case) or number.
func ParseViewType(s string) (ViewType, bool) {
	switch strings.ToUpper(s) {
	case "ACTIVE_ONLY", "1":
		return ViewActiveOnly, true
	case "DELETED_ONLY", "2":
		return ViewDeletedOnly, true
	case "ALL", "3":
		return ViewAll, true
	}
	return "", false
}

// UnmarshalJSON implements [json.Unmarshaler].
func (v *ViewType) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	p, ok := ParseViewType(strings.Trim(string(b), `"`))
	if !ok {
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[string]()}
	}
	*v = p
	return nil
}

// ToTracking returns the tracking package's view type; the empty
// ViewType is [tracking.ViewActiveOnly].
func (v ViewType) ToTracking() tracking.ViewType {
	switch v {
	case ViewDeletedOnly:
		return tracking.ViewDeletedOnly
	case ViewAll:
		return tracking.ViewAll
	}
	return tracking.ViewActiveOnly
}

// RegisteredModelResponse answers registered-models/create, get, rename
// and update.
type RegisteredModelResponse struct {
	RegisteredModel RegisteredModel `json:"registered_model"`
}

// ModelVersionResponse answers model-versions/create, get, update and
// transition-stage, and registered-models/alias (GET).
type ModelVersionResponse struct {
	ModelVersion ModelVersion `json:"model_version"`
}

// SearchRegisteredModelsResponse answers registered-models/search.
type SearchRegisteredModelsResponse struct {
	RegisteredModels []RegisteredModel `json:"registered_models,omitempty"`
	NextPageToken    string            `json:"next_page_token,omitempty"`
}

// ModelVersionsResponse answers model-versions/search and
// registered-models/get-latest-versions (which sends no page token).
type ModelVersionsResponse struct {
	ModelVersions []ModelVersion `json:"model_versions,omitempty"`
	NextPageToken string         `json:"next_page_token,omitempty"`
}

// ListArtifactsResponse answers artifacts/list: a run's artifacts under
// its root URI.
type ListArtifactsResponse struct {
	RootURI string     `json:"root_uri"`
	Files   []FileInfo `json:"files,omitempty"`
}

// ProxyListResponse answers the artifact proxy's listing, GET
// /api/2.0/mlflow-artifacts/artifacts?path=….
type ProxyListResponse struct {
	Files []FileInfo `json:"files,omitempty"`
}
