package tracking

import (
	"fmt"
	"time"
)

// LifecycleStage is whether an experiment or run is active or deleted
// (soft-deleted: it stays in the store and can be restored).
type LifecycleStage string

// The lifecycle stages, spelled as MLflow spells them.
const (
	LifecycleActive  LifecycleStage = "active"
	LifecycleDeleted LifecycleStage = "deleted"
)

// RunStatus is the state of a run, spelled as MLflow's RunStatus enum.
type RunStatus string

// The run statuses. A new run is [StatusRunning]; the empty RunStatus means
// "leave unchanged" where UpdateRun takes one.
const (
	StatusRunning   RunStatus = "RUNNING"
	StatusScheduled RunStatus = "SCHEDULED"
	StatusFinished  RunStatus = "FINISHED"
	StatusFailed    RunStatus = "FAILED"
	StatusKilled    RunStatus = "KILLED"
)

// Valid reports whether s is one of the five statuses.
func (s RunStatus) Valid() bool {
	switch s {
	case StatusRunning, StatusScheduled, StatusFinished, StatusFailed, StatusKilled:
		return true
	}
	return false
}

// Check returns nil for a valid status, else an error wrapping
// [ErrInvalid] that lists the valid ones.
func (s RunStatus) Check() error {
	if s.Valid() {
		return nil
	}
	return fmt.Errorf("%w: status %q is none of RUNNING, SCHEDULED, FINISHED, FAILED, KILLED", ErrInvalid, s)
}

// Terminal reports whether s is a final status: FINISHED, FAILED or KILLED.
func (s RunStatus) Terminal() bool {
	return s == StatusFinished || s == StatusFailed || s == StatusKilled
}

// ViewType selects runs by lifecycle stage in SearchRuns. The zero value is
// [ViewActiveOnly], MLflow's default.
type ViewType int

// The view types, as MLflow's ViewType enum.
const (
	ViewActiveOnly ViewType = iota
	ViewDeletedOnly
	ViewAll
)

// String returns MLflow's name for v: ACTIVE_ONLY, DELETED_ONLY or ALL.
func (v ViewType) String() string {
	switch v {
	case ViewActiveOnly:
		return "ACTIVE_ONLY"
	case ViewDeletedOnly:
		return "DELETED_ONLY"
	case ViewAll:
		return "ALL"
	}
	return fmt.Sprintf("ViewType(%d)", int(v))
}

// DefaultExperimentID is the ID of the experiment named
// [DefaultExperimentName], which every store holds from the start.
const DefaultExperimentID = "0"

// DefaultExperimentName is the name of the experiment with ID "0".
const DefaultExperimentName = "Default"

// Experiment is MLflow's Experiment entity. IDs are decimal strings. Times
// have millisecond precision and are in UTC.
type Experiment struct {
	ExperimentID     string
	Name             string
	ArtifactLocation string // a URI; file:// for the embedded store
	LifecycleStage   LifecycleStage
	CreationTime     time.Time
	LastUpdateTime   time.Time
	Tags             []Tag // sorted by key
}

// Run is one MLflow run: its info and its data.
type Run struct {
	Info RunInfo
	Data RunData
	// Inputs are the datasets the run used (MLflow's RunInputs), in the
	// order they were first logged.
	Inputs []DatasetInput
}

// RunInfo is MLflow's RunInfo entity. RunID is 32 lowercase hex characters
// (a UUID4 without dashes). Times have millisecond precision and are in
// UTC; EndTime is the zero time until the run is ended.
type RunInfo struct {
	RunID          string
	RunName        string
	ExperimentID   string
	UserID         string
	Status         RunStatus
	StartTime      time.Time
	EndTime        time.Time
	ArtifactURI    string
	LifecycleStage LifecycleStage
}

// RunData is MLflow's RunData entity: the latest value of each metric
// (highest step, then highest timestamp, then highest value, as MLflow
// picks it), the params and the tags, each sorted by key.
type RunData struct {
	Metrics []Metric
	Params  []Param
	Tags    []Tag
}

// Metric returns the latest value logged under key.
func (d RunData) Metric(key string) (Metric, bool) {
	for _, m := range d.Metrics {
		if m.Key == key {
			return m, true
		}
	}
	return Metric{}, false
}

// Param returns the value of the param key.
func (d RunData) Param(key string) (string, bool) {
	for _, p := range d.Params {
		if p.Key == key {
			return p.Value, true
		}
	}
	return "", false
}

// Tag returns the value of the tag key.
func (d RunData) Tag(key string) (string, bool) {
	for _, t := range d.Tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return "", false
}

// Metric is one point of a metric's history. Value may be NaN or ±Inf; the
// store keeps them (negative zero reads back as zero). Timestamp is Unix milliseconds; the store does
// not fill it in, so set it (time.Now().UnixMilli()). Step is the round or
// epoch; MLflow's default is 0.
type Metric struct {
	Key       string
	Value     float64
	Timestamp int64
	Step      int64
}

// Param is an immutable key-value setting of a run.
type Param struct {
	Key   string
	Value string
}

// Tag is a mutable key-value label of a run or experiment.
type Tag struct {
	Key   string
	Value string
}

// CreateRun is what a new run starts with.
type CreateRun struct {
	// ExperimentID is the experiment the run belongs to; "" means the
	// Default experiment, "0".
	ExperimentID string
	// Name is the run's name; "" generates one in MLflow's style
	// (adjective-animal-NNN). It is also stored as the tag [TagRunName].
	Name string
	// UserID is the user who started the run (MLflow's user_id); it is
	// also stored as the tag [TagUser] when not empty.
	UserID string
	// StartTime is when the run started; the zero time means now.
	StartTime time.Time
	// Tags are set on the run at creation.
	Tags map[string]string
	// ParentRunID, when not empty, nests the run under that run (which
	// must exist, in the same experiment) by setting [TagParentRunID].
	ParentRunID string
	// ProxiedArtifacts gives the run the artifact URI
	// mlflow-artifacts:/<experiment id>/<run id>/artifacts, as an MLflow
	// server serving artifacts does, instead of one under the experiment's
	// artifact location. The store resolves it under its proxy artifact
	// root (see [WithProxyArtifactRoot]).
	ProxiedArtifacts bool
	// UncheckedParent skips looking the parent run up: a parent that does
	// not exist, or is in another experiment, is recorded all the same, as
	// MLflow's stores do. The MLflow REST server sets it.
	UncheckedParent bool
}

// RunQuery selects runs for SearchRuns. Results are ordered by OrderBy,
// then as MLflow's default: start time descending, then run ID.
type RunQuery struct {
	// Filter is an MLflow search filter (see [ParseFilter]), e.g.
	// "metrics.acc > 0.5 and params.algo = 'fedavg'"; "" selects all.
	Filter string
	// OrderBy are MLflow order-by clauses (see [ParseOrderBy]), e.g.
	// "metrics.acc DESC"; runs missing the key sort last.
	OrderBy []string
	// ExperimentIDs restricts the search to these experiments; empty means
	// every experiment.
	ExperimentIDs []string
	// ParentRunID, when not empty, keeps only the direct children of that
	// run (runs whose [TagParentRunID] tag is it).
	ParentRunID string
	// MaxResults is the page size: 0 means 1000 (MLflow's default), and at
	// most [MaxSearchResults].
	MaxResults int
	// PageToken continues a search from the token a previous call returned.
	PageToken string
	// ViewType selects active, deleted or all runs; the zero value is
	// active only.
	ViewType ViewType
}

// FileInfo is MLflow's FileInfo: one entry of an artifact listing. Path is
// relative to the run's artifact root, with forward slashes. FileSize is 0
// for directories.
type FileInfo struct {
	Path     string
	IsDir    bool
	FileSize int64
}

// Limits, as MLflow's (mlflow/utils/validation.py). Lengths are in
// characters (Unicode code points).
const (
	// MaxKeyLength bounds metric, param and tag keys.
	MaxKeyLength = 250
	// MaxParamValueLength bounds a param's value.
	MaxParamValueLength = 6000
	// MaxTagValueLength bounds a run tag's value (and a run's name).
	MaxTagValueLength = 8000
	// MaxExperimentTagValueLength bounds an experiment tag's value.
	MaxExperimentTagValueLength = 5000
	// MaxMetricsPerBatch bounds the metrics of one LogBatch call.
	MaxMetricsPerBatch = 1000
	// MaxParamsTagsPerBatch bounds the params, and separately the tags, of
	// one LogBatch call.
	MaxParamsTagsPerBatch = 100
	// MaxEntitiesPerBatch bounds metrics, params and tags together in one
	// LogBatch call.
	MaxEntitiesPerBatch = 1000
	// MaxSearchResults bounds RunQuery.MaxResults.
	MaxSearchResults = 50000
	// DefaultSearchResults is the page size when RunQuery.MaxResults is 0.
	DefaultSearchResults = 1000
)

// fromMillis converts stored Unix milliseconds to a UTC time.
func fromMillis(ms int64) time.Time { return time.UnixMilli(ms).UTC() }
