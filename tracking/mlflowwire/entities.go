package mlflowwire

// The entities, as service.proto and model_registry.proto in JSON. The
// omitempty fields are those MLflow leaves out when they are empty.

// KeyValue is a param, a run or experiment tag, a registry tag or a
// dataset input's tag: MLflow's Param, RunTag, ExperimentTag,
// RegisteredModelTag, ModelVersionTag and InputTag share its JSON.
type KeyValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Metric is one point of a metric. Timestamp is in milliseconds since the
// Unix epoch.
type Metric struct {
	Key       string  `json:"key"`
	Value     Float64 `json:"value"`
	Timestamp Int64   `json:"timestamp"`
	Step      Int64   `json:"step"`
}

// RunInfo is a run's metadata. MLflow sends the run's ID twice, as run_id
// and the deprecated run_uuid; EndTime is absent while the run has not
// ended. Times are in milliseconds since the Unix epoch.
type RunInfo struct {
	RunID          string `json:"run_id"`
	RunUUID        string `json:"run_uuid"`
	RunName        string `json:"run_name,omitempty"`
	ExperimentID   string `json:"experiment_id"`
	UserID         string `json:"user_id,omitempty"`
	Status         string `json:"status"`
	StartTime      Int64  `json:"start_time"`
	EndTime        *Int64 `json:"end_time,omitempty"`
	ArtifactURI    string `json:"artifact_uri"`
	LifecycleStage string `json:"lifecycle_stage"`
}

// RunData is a run's latest metrics, its params and its tags.
type RunData struct {
	Metrics []Metric   `json:"metrics,omitempty"`
	Params  []KeyValue `json:"params,omitempty"`
	Tags    []KeyValue `json:"tags,omitempty"`
}

// Dataset is a dataset a run used, as MLflow's Dataset: Source, Schema and
// Profile are JSON documents in strings.
type Dataset struct {
	Name       string `json:"name"`
	Digest     string `json:"digest"`
	SourceType string `json:"source_type"`
	Source     string `json:"source"`
	Schema     string `json:"schema,omitempty"`
	Profile    string `json:"profile,omitempty"`
}

// DatasetInput is a dataset with the tags of its use by a run
// (mlflow.data.context: training, evaluation, …).
type DatasetInput struct {
	Tags    []KeyValue `json:"tags,omitempty"`
	Dataset Dataset    `json:"dataset"`
}

// RunInputs is what a run took in.
type RunInputs struct {
	DatasetInputs []DatasetInput `json:"dataset_inputs,omitempty"`
}

// Run is a run: its metadata, data and inputs.
type Run struct {
	Info   RunInfo   `json:"info"`
	Data   RunData   `json:"data"`
	Inputs RunInputs `json:"inputs"`
}

// Experiment is an experiment. Times are in milliseconds since the Unix
// epoch.
type Experiment struct {
	ExperimentID     string     `json:"experiment_id"`
	Name             string     `json:"name"`
	ArtifactLocation string     `json:"artifact_location"`
	LifecycleStage   string     `json:"lifecycle_stage"`
	LastUpdateTime   Int64      `json:"last_update_time"`
	CreationTime     Int64      `json:"creation_time"`
	Tags             []KeyValue `json:"tags,omitempty"`
}

// FileInfo is an entry of an artifact listing; FileSize is absent for a
// folder.
type FileInfo struct {
	Path     string `json:"path"`
	IsDir    bool   `json:"is_dir"`
	FileSize *Int64 `json:"file_size,omitempty"`
}

// ModelAlias names a version of a registered model.
type ModelAlias struct {
	Alias   string `json:"alias"`
	Version string `json:"version"`
}

// ModelVersion is a version of a registered model. Timestamps are in
// milliseconds since the Unix epoch.
type ModelVersion struct {
	Name                 string     `json:"name"`
	Version              string     `json:"version"`
	CreationTimestamp    Int64      `json:"creation_timestamp"`
	LastUpdatedTimestamp Int64      `json:"last_updated_timestamp"`
	UserID               string     `json:"user_id,omitempty"`
	CurrentStage         string     `json:"current_stage"`
	Description          string     `json:"description,omitempty"`
	Source               string     `json:"source"`
	RunID                string     `json:"run_id,omitempty"`
	Status               string     `json:"status"`
	StatusMessage        string     `json:"status_message,omitempty"`
	Tags                 []KeyValue `json:"tags,omitempty"`
	RunLink              string     `json:"run_link,omitempty"`
	Aliases              []string   `json:"aliases,omitempty"`
}

// RegisteredModel is a registered model with its latest version per
// stage, its tags and its aliases.
type RegisteredModel struct {
	Name                 string         `json:"name"`
	CreationTimestamp    Int64          `json:"creation_timestamp"`
	LastUpdatedTimestamp Int64          `json:"last_updated_timestamp"`
	UserID               string         `json:"user_id,omitempty"`
	Description          string         `json:"description,omitempty"`
	LatestVersions       []ModelVersion `json:"latest_versions,omitempty"`
	Tags                 []KeyValue     `json:"tags,omitempty"`
	Aliases              []ModelAlias   `json:"aliases,omitempty"`
}

// Size returns the file's size in bytes; 0 for a folder or when the
// listing leaves it out.
func (f FileInfo) Size() int64 {
	if f.FileSize == nil {
		return 0
	}
	return int64(*f.FileSize)
}

// RunMetric is a metric point with its run, as the web UI's
// metrics/get-history-bulk and get-history-bulk-interval answer.
type RunMetric struct {
	Key       string  `json:"key"`
	Value     Float64 `json:"value"`
	Timestamp Int64   `json:"timestamp"`
	Step      Int64   `json:"step"`
	RunID     string  `json:"run_id"`
}

// DatasetSummary is a dataset an experiment's runs used, with its
// mlflow.data.context, as the web UI's experiments/search-datasets
// answers.
type DatasetSummary struct {
	ExperimentID string `json:"experiment_id"`
	Name         string `json:"name"`
	Digest       string `json:"digest"`
	Context      string `json:"context,omitempty"`
}
