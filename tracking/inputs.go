package tracking

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strings"
)

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

// MLflow's limits on dataset inputs (mlflow/utils/validation.py), in
// characters.
const (
	maxDatasetNameLength     = 500
	maxDatasetSourceLength   = 65535
	maxDatasetSchemaLength   = 1048575
	maxDatasetProfileLength  = 16777215
	maxDatasetSourceTypeLen  = 36
	maxInputTagKeyLength     = 255
	maxInputTagValueLength   = 500
	maxInputsPerLogInputsReq = 1000
)

var _ InputLogger = (*SQLiteStore)(nil)

// LogInputs records dataset inputs on a run, in one transaction. A dataset
// is identified by its name and digest within the run: logging it again
// stores it once, updating its other fields and merging its tags. Name,
// Digest, SourceType and Source are required. A deleted run is
// [ErrRunDeleted].
func (s *SQLiteStore) LogInputs(ctx context.Context, runID string, inputs []DatasetInput) error {
	what := fmt.Sprintf("logging inputs to run %s", runID)
	if err := validateInputs(inputs); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if err := s.checkRunActive(ctx, tx, runID); err != nil {
			return err
		}
		return s.logInputs(ctx, tx, runID, inputs)
	})
}

// validateInputs checks a LogInputs call's inputs.
func validateInputs(inputs []DatasetInput) error {
	if len(inputs) > maxInputsPerLogInputsReq {
		return fmt.Errorf("%w: at most %d dataset inputs per call, got %d", ErrInvalid, maxInputsPerLogInputsReq, len(inputs))
	}
	for i, in := range inputs {
		if err := validateDatasetInput(in); err != nil {
			return fmt.Errorf("input %d: %w", i, err)
		}
	}
	return nil
}

// logInputs writes checked inputs of an active run within tx.
func (s *SQLiteStore) logInputs(ctx context.Context, tx *sql.Tx, runID string, inputs []DatasetInput) error {
	if len(inputs) == 0 {
		return nil
	}
	upsert, upsertTag := tx.StmtContext(ctx, s.upsertInput), tx.StmtContext(ctx, s.upsertInputTag)
	for _, in := range inputs {
		d := in.Dataset
		dctx := ""
		for _, t := range in.Tags {
			if t.Key == TagDatasetContext {
				dctx = t.Value
			}
		}
		if _, err := upsert.ExecContext(ctx, runID, d.Name, d.Digest, d.SourceType, d.Source, d.Schema, d.Profile, dctx); err != nil {
			return err
		}
		for _, t := range in.Tags {
			if _, err := upsertTag.ExecContext(ctx, runID, d.Name, d.Digest, t.Key, t.Value); err != nil {
				return err
			}
		}
	}
	return nil
}

func validateDatasetInput(in DatasetInput) error {
	d := in.Dataset
	for _, f := range []struct {
		name, value string
		limit       int
		required    bool
	}{
		{"name", d.Name, maxDatasetNameLength, true},
		{"digest", d.Digest, MaxDatasetDigestLength, true},
		{"source_type", d.SourceType, maxDatasetSourceTypeLen, true},
		{"source", d.Source, maxDatasetSourceLength, true},
		{"schema", d.Schema, maxDatasetSchemaLength, false},
		{"profile", d.Profile, maxDatasetProfileLength, false},
	} {
		if f.required && f.value == "" {
			return fmt.Errorf("%w: dataset %s is required", ErrInvalid, f.name)
		}
		if err := validateValue("dataset", f.name, f.value, f.limit); err != nil {
			return err
		}
	}
	for _, t := range in.Tags {
		if t.Key == "" {
			return fmt.Errorf("%w: input tag key is empty", ErrInvalid)
		}
		if err := validateValue("input tag key", t.Key, t.Key, maxInputTagKeyLength); err != nil {
			return err
		}
		if err := validateValue("input tag", t.Key, t.Value, maxInputTagValueLength); err != nil {
			return err
		}
	}
	return nil
}

// loadInputs fills in the dataset inputs of runs.
func loadInputs(ctx context.Context, q querier, runs []Run) error {
	index := make(map[string]*Run, len(runs))
	for i := range runs {
		index[runs[i].Info.RunID] = &runs[i]
	}
	type dkey struct{ run, name, digest string }
	pos := map[dkey]int{}
	for chunk := range slices.Chunk(runs, idChunk) {
		ids := make([]any, len(chunk))
		for i, r := range chunk {
			ids[i] = r.Info.RunID
		}
		in := `run_uuid IN (?` + strings.Repeat(", ?", len(ids)-1) + `)`
		err := eachRow(ctx, q, `SELECT run_uuid, name, digest, source_type, source, schema, profile FROM run_inputs WHERE `+in+` ORDER BY rowid`, ids, func(rows *sql.Rows) error {
			var id string
			var d Dataset
			if err := rows.Scan(&id, &d.Name, &d.Digest, &d.SourceType, &d.Source, &d.Schema, &d.Profile); err != nil {
				return err
			}
			r := index[id]
			pos[dkey{id, d.Name, d.Digest}] = len(r.Inputs)
			r.Inputs = append(r.Inputs, DatasetInput{Dataset: d})
			return nil
		})
		if err != nil {
			return err
		}
		if len(pos) == 0 {
			continue
		}
		err = eachRow(ctx, q, `SELECT run_uuid, name, digest, key, value FROM run_input_tags WHERE `+in+` ORDER BY run_uuid, name, digest, key`, ids, func(rows *sql.Rows) error {
			var k dkey
			var t InputTag
			if err := rows.Scan(&k.run, &k.name, &k.digest, &t.Key, &t.Value); err != nil {
				return err
			}
			if i, ok := pos[k]; ok {
				r := index[k.run]
				r.Inputs[i].Tags = append(r.Inputs[i].Tags, t)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}
