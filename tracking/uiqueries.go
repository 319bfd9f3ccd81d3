package tracking

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// TagLoggedModels is the run tag in which MLflow keeps the models logged
// on a run (mlflow.log_model): a JSON list of the models' MLmodel
// dictionaries, oldest first.
const TagLoggedModels = "mlflow.log-model.history"

// RecordLoggedModel appends model (a JSON object, MLflow's MLmodel as a
// dictionary) to the run's [TagLoggedModels] list, in one transaction, as
// MLflow's record_logged_model does. The whole list must fit in a tag
// value ([MaxTagValueLength] characters): a model that would take it past
// that is [ErrInvalid] and the tag is left as it was. A deleted run is
// [ErrRunDeleted]; a missing one [ErrNotFound].
func (s *SQLiteStore) RecordLoggedModel(ctx context.Context, runID string, model []byte) error {
	what := fmt.Sprintf("recording a logged model on run %s", runID)
	var compact bytes.Buffer
	if err := json.Compact(&compact, model); err != nil || !bytes.HasPrefix(compact.Bytes(), []byte("{")) {
		return fmt.Errorf("%s: %w: the model is not a JSON object", what, ErrInvalid)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if err := s.checkRunActive(ctx, tx, runID); err != nil {
			return err
		}
		var old string
		err := tx.QueryRowContext(ctx, `SELECT value FROM tags WHERE run_uuid = ? AND key = ?`, runID, TagLoggedModels).Scan(&old)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		var list []json.RawMessage
		if old != "" {
			if err := json.Unmarshal([]byte(old), &list); err != nil {
				return fmt.Errorf("%w: tag %s holds %.40q…, not a JSON list; delete the tag to start a new history", ErrInvalid, TagLoggedModels, old)
			}
		}
		list = append(list, compact.Bytes())
		parts := make([]string, len(list))
		for i, m := range list {
			parts[i] = string(m)
		}
		value := "[" + strings.Join(parts, ", ") + "]"
		if n := utf8.RuneCountInString(value); n > MaxTagValueLength {
			return fmt.Errorf("%w: Tag value '%.250s' had length %d, which exceeded length limit of %d", ErrInvalid, value, n, MaxTagValueLength)
		}
		_, err = tx.StmtContext(ctx, s.upsertTag).ExecContext(ctx, runID, TagLoggedModels, value)
		return err
	})
}

// DatasetSummary is one dataset used in an experiment, with the context
// it was used in (MLflow's DatasetSummary, what the MLflow UI lists).
type DatasetSummary struct {
	ExperimentID string
	Name         string
	Digest       string
	Context      string // the mlflow.data.context input tag; "" when none
}

// MaxDatasetSummaries bounds SearchDatasets' answer, as MLflow's.
const MaxDatasetSummaries = 1000

// SearchDatasets returns the distinct datasets (name, digest, context) the
// runs of the given experiments logged as inputs, deleted runs included
// (MLflow keeps datasets per experiment), ordered by experiment, name,
// digest and context, at most [MaxDatasetSummaries].
func (s *SQLiteStore) SearchDatasets(ctx context.Context, experimentIDs []string) ([]DatasetSummary, error) {
	what := "searching datasets"
	if len(experimentIDs) == 0 {
		return nil, nil
	}
	if len(experimentIDs) > idChunk {
		return nil, fmt.Errorf("%s: %w: at most %d experiments, got %d", what, ErrInvalid, idChunk, len(experimentIDs))
	}
	args := make([]any, len(experimentIDs))
	for i, id := range experimentIDs {
		n, err := parseExperimentID(id)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		args[i] = n
	}
	var out []DatasetSummary
	err := s.read(ctx, what, func(tx *sql.Tx) error {
		q := `SELECT DISTINCT r.experiment_id, i.name, i.digest, i.context FROM run_inputs i JOIN runs r ON r.run_uuid = i.run_uuid
			WHERE r.experiment_id IN (?` + strings.Repeat(", ?", len(args)-1) + `)
			ORDER BY r.experiment_id, i.name, i.digest, i.context LIMIT ` + fmt.Sprint(MaxDatasetSummaries)
		return eachRow(ctx, tx, q, args, func(rows *sql.Rows) error {
			var d DatasetSummary
			var exp int64
			if err := rows.Scan(&exp, &d.Name, &d.Digest, &d.Context); err != nil {
				return err
			}
			d.ExperimentID = fmt.Sprint(exp)
			out = append(out, d)
			return nil
		})
	})
	return out, err
}

// RunMetric is a metric point and the run it was logged in.
type RunMetric struct {
	RunID string
	Metric
}

// MetricHistoryBulk returns the points logged under key in the given
// runs, by run ID, then timestamp, step and value (the order of MLflow's
// get-history-bulk), at most limit of them (limit > 0). Runs that do not
// exist, or never logged key, add nothing. At most 500 run IDs.
func (s *SQLiteStore) MetricHistoryBulk(ctx context.Context, runIDs []string, key string, limit int) ([]RunMetric, error) {
	what := fmt.Sprintf("getting the history of metric %q of %d runs", key, len(runIDs))
	switch {
	case limit < 1:
		return nil, fmt.Errorf("%s: %w: limit %d is not positive", what, ErrInvalid, limit)
	case len(runIDs) > idChunk:
		return nil, fmt.Errorf("%s: %w: at most %d runs, got %d", what, ErrInvalid, idChunk, len(runIDs))
	case len(runIDs) == 0:
		return nil, nil
	}
	args := make([]any, 0, len(runIDs)+2)
	for _, id := range runIDs {
		args = append(args, id)
	}
	args = append(args, key, limit)
	var out []RunMetric
	err := s.read(ctx, what, func(tx *sql.Tx) error {
		q := `SELECT run_uuid, value, timestamp, step, is_nan FROM metrics
			WHERE run_uuid IN (?` + strings.Repeat(", ?", len(runIDs)-1) + `) AND key = ?
			ORDER BY run_uuid, timestamp, step, value, is_nan LIMIT ?`
		return eachRow(ctx, tx, q, args, func(rows *sql.Rows) error {
			m := RunMetric{Metric: Metric{Key: key}}
			var isNaN bool
			if err := rows.Scan(&m.RunID, &m.Value, &m.Timestamp, &m.Step, &isNaN); err != nil {
				return err
			}
			if isNaN {
				m.Value = math.NaN()
			}
			out = append(out, m)
			return nil
		})
	})
	return out, err
}
