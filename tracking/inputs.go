package tracking

import "context"

// Dataset is MLflow's Dataset entity: what data a run consumed. Digest is
// at most [MaxDatasetDigestLength] characters (MLflow's limit), so Cohort
// puts a short digest there and keeps the full SHA-256 of the exact
// partition in Profile (a JSON object) beside the sample count.
type Dataset struct {
	Name       string // e.g. "fashion-mnist/train/site-2"
	Digest     string // ≤ 36 characters
	SourceType string // e.g. "local", "http", "synthetic"
	Source     string // a JSON object naming where it came from (path or URL)
	Schema     string // optional JSON
	Profile    string // JSON, e.g. {"num_samples": 15000, "sha256": "…"}
}

// InputTag is a tag on one dataset input of a run (MLflow's InputTag),
// e.g. mlflow.data.context = "training".
type InputTag struct {
	Key   string
	Value string
}

// DatasetInput is MLflow's DatasetInput: a dataset and the tags of its use
// by one run.
type DatasetInput struct {
	Tags    []InputTag
	Dataset Dataset
}

// TagDatasetContext is the input tag MLflow uses to say how a run used a
// dataset ("training", "evaluation").
const TagDatasetContext = "mlflow.data.context"

// MaxDatasetDigestLength bounds Dataset.Digest, as MLflow does.
const MaxDatasetDigestLength = 36

// InputLogger records the datasets a run used; [SQLiteStore] and the MLflow
// REST client implement it.
type InputLogger interface {
	// LogInputs records inputs on the run. Logging the same dataset (name
	// and digest) again on the same run is not an error and stores it once.
	LogInputs(ctx context.Context, runID string, inputs []DatasetInput) error
}
