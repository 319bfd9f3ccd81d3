package tracking

import (
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// LogBatch logs metrics, params and tags to a run in one transaction: all
// or nothing. Within a call at most [MaxMetricsPerBatch] metrics,
// [MaxParamsTagsPerBatch] params and as many tags, [MaxEntitiesPerBatch] in
// all (MLflow's limits); split larger sets across calls.
//
// Metrics append to each key's history (the very same point twice is kept
// once) and update the key's latest value when the new point has a higher
// (step, timestamp, value). Params are immutable: a key logged again with
// the same value is fine, with a different one [ErrParamConflict]. Tags
// overwrite; the last of a key in tags wins, and [TagRunName] renames the
// run. A deleted run is [ErrRunDeleted]; a finished one takes writes, as
// in MLflow.
func (s *SQLiteStore) LogBatch(ctx context.Context, runID string, metrics []Metric, params []Param, tags []Tag) error {
	what := fmt.Sprintf("logging to run %s", runID)
	if err := validateBatch(metrics, params, tags); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		return s.logBatchTx(ctx, tx, RunBatch{RunID: runID, Metrics: metrics, Params: params, Tags: tags})
	})
}

// RunBatch is one run's part of a [SQLiteStore.LogBatches] call: what
// one [SQLiteStore.LogBatch] call takes, and dataset inputs as
// [SQLiteStore.LogInputs] takes them.
type RunBatch struct {
	RunID   string
	Metrics []Metric
	Params  []Param
	Tags    []Tag
	Inputs  []DatasetInput
}

// LogBatches logs several batches, each to its run, in one transaction:
// all or nothing. Each batch is checked as [SQLiteStore.LogBatch] checks
// it (its limits are per batch, not per call). The batches are written
// grouped by run (see byRun), each run's in the order given; a batch
// touches its own run's rows only, so the result is that of one LogBatch
// call per batch in order (a run may appear more than once), and one
// LogInputs call for its inputs. An error names a batch that failed, by
// its index in batches and its run; nothing is written then. Invalid
// metrics, params, tags or inputs are found before anything is written.
//
// It is for a writer of many runs at once (a round's site runs): one
// transaction instead of one per run.
func (s *SQLiteStore) LogBatches(ctx context.Context, batches []RunBatch) error {
	for i, b := range batches {
		err := validateBatch(b.Metrics, b.Params, b.Tags)
		if err == nil {
			err = validateInputs(b.Inputs)
		}
		if err != nil {
			return fmt.Errorf("logging %d batches: batch %d, to run %s: %w", len(batches), i, b.RunID, err)
		}
	}
	if len(batches) == 0 {
		return nil
	}
	order := byRun(batches)
	ids := make([]string, 0, len(batches)) // each run once: order keeps a run's batches together
	for _, i := range order {
		if id := batches[i].RunID; len(ids) == 0 || ids[len(ids)-1] != id {
			ids = append(ids, id)
		}
	}
	return s.write(ctx, fmt.Sprintf("logging %d batches", len(batches)), func(tx *sql.Tx) error {
		sctx := statementContext(ctx)
		// Every run's stage at once: nothing in the transaction changes
		// one, so each batch is checked as logBatchTx would check it.
		stages, err := runStages(sctx, tx, ids)
		if err != nil {
			return err
		}
		for _, i := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			b := batches[i]
			stage, found := stages[b.RunID]
			err := stageError(b.RunID, stage, found)
			if err == nil {
				err = s.writeBatch(sctx, tx, b)
			}
			if err != nil {
				return fmt.Errorf("batch %d, to run %s: %w", i, b.RunID, err)
			}
		}
		return nil
	})
}

// byRun returns the batches' indexes in the order of their runs' IDs,
// each run's batches in their own order. A run's rows lie together in
// every table (keyed by run first), so writing in that order visits each
// B-tree page once, where the order the batches came in (a round's sites
// as they reported) jumps between pages the cache may have let go.
func byRun(batches []RunBatch) []int {
	order := make([]int, len(batches))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(i, j int) int { return strings.Compare(batches[i].RunID, batches[j].RunID) })
	return order
}

// logBatchTx writes one checked batch within tx.
func (s *SQLiteStore) logBatchTx(ctx context.Context, tx *sql.Tx, b RunBatch) error {
	if err := s.checkRunActive(ctx, tx, b.RunID); err != nil {
		return err
	}
	return s.writeBatch(ctx, tx, b)
}

// writeBatch writes one checked batch, its run checked active, within tx.
func (s *SQLiteStore) writeBatch(ctx context.Context, tx *sql.Tx, b RunBatch) error {
	if err := s.logParams(ctx, tx, b.RunID, b.Params); err != nil {
		return err
	}
	if err := s.setTags(ctx, tx, b.RunID, b.Tags); err != nil {
		return err
	}
	if err := s.logMetrics(ctx, tx, b.RunID, b.Metrics); err != nil {
		return err
	}
	return s.logInputs(ctx, tx, b.RunID, b.Inputs)
}

// LogMetric logs one metric point; see LogBatch.
func (s *SQLiteStore) LogMetric(ctx context.Context, runID string, m Metric) error {
	return s.LogBatch(ctx, runID, []Metric{m}, nil, nil)
}

// LogParam logs one param; see LogBatch.
func (s *SQLiteStore) LogParam(ctx context.Context, runID string, p Param) error {
	return s.LogBatch(ctx, runID, nil, []Param{p}, nil)
}

// SetTag sets (or overwrites) one tag; see LogBatch.
func (s *SQLiteStore) SetTag(ctx context.Context, runID string, t Tag) error {
	return s.LogBatch(ctx, runID, nil, nil, []Tag{t})
}

// DeleteTag removes a tag from a run; [ErrNotFound] when the run has no
// such tag.
func (s *SQLiteStore) DeleteTag(ctx context.Context, runID, key string) error {
	return s.write(ctx, fmt.Sprintf("deleting tag %q of run %s", key, runID), func(tx *sql.Tx) error {
		if err := s.checkRunActive(ctx, tx, runID); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM tags WHERE run_uuid = ? AND key = ?`, runID, key)
		return mustAffect(res, err)
	})
}

// GetMetricHistory returns every point logged under key in a run, by step
// then timestamp; none (and no error) when the run never logged key.
func (s *SQLiteStore) GetMetricHistory(ctx context.Context, runID, key string) ([]Metric, error) {
	var hist []Metric
	err := s.read(ctx, fmt.Sprintf("getting history of metric %q of run %s", key, runID), func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM runs WHERE run_uuid = ?`, runID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		// The primary key's order is (run, key, step, timestamp, …).
		return eachRow(ctx, tx, `SELECT value, timestamp, step, is_nan FROM metrics WHERE run_uuid = ? AND key = ?
			ORDER BY step, timestamp, value, is_nan`, []any{runID, key}, func(rows *sql.Rows) error {
			m := Metric{Key: key}
			var isNaN bool
			if err := rows.Scan(&m.Value, &m.Timestamp, &m.Step, &isNaN); err != nil {
				return err
			}
			if isNaN {
				m.Value = math.NaN()
			}
			hist = append(hist, m)
			return nil
		})
	})
	return hist, err
}

func (s *SQLiteStore) logParams(ctx context.Context, tx *sql.Tx, runID string, params []Param) error {
	if len(params) == 0 {
		return nil
	}
	ins, sel := tx.StmtContext(ctx, s.insertParam), tx.StmtContext(ctx, s.selectParam)
	for _, p := range params {
		res, err := ins.ExecContext(ctx, runID, p.Key, p.Value)
		if err != nil {
			return err
		}
		n, err := res.RowsAffected()
		if err != nil {
			return err
		}
		if n == 1 {
			continue
		}
		var old string
		if err := sel.QueryRowContext(ctx, runID, p.Key).Scan(&old); err != nil {
			return err
		}
		if old != p.Value {
			return fmt.Errorf("%w: param %q is %.80q, cannot change it to %.80q; log it under another key or in a new run", ErrParamConflict, p.Key, old, p.Value)
		}
	}
	return nil
}

func (s *SQLiteStore) setTags(ctx context.Context, tx *sql.Tx, runID string, tags []Tag) error {
	if len(tags) == 0 {
		return nil
	}
	up := tx.StmtContext(ctx, s.upsertTag)
	for _, t := range tags {
		if _, err := up.ExecContext(ctx, runID, t.Key, t.Value); err != nil {
			return err
		}
		if t.Key == TagRunName {
			if _, err := tx.ExecContext(ctx, `UPDATE runs SET name = ? WHERE run_uuid = ?`, t.Value, runID); err != nil {
				return err
			}
		}
	}
	return nil
}

// logMetrics appends every point and then raises each key's latest value
// once, to the batch's greatest point of that key.
func (s *SQLiteStore) logMetrics(ctx context.Context, tx *sql.Tx, runID string, metrics []Metric) error {
	if len(metrics) == 0 {
		return nil
	}
	ins := tx.StmtContext(ctx, s.insertMetric)
	latest := make(map[string]storedMetric, 8)
	var order []string // keys in first-seen order, so writes are deterministic
	for _, m := range metrics {
		sm := storeMetric(m)
		if _, err := ins.ExecContext(ctx, runID, m.Key, sm.Step, sm.Timestamp, sm.value, sm.isNaN); err != nil {
			return fmt.Errorf("metric %q: %w", m.Key, err)
		}
		cur, ok := latest[m.Key]
		if !ok {
			order = append(order, m.Key)
		}
		if !ok || sm.after(cur) {
			latest[m.Key] = sm
		}
	}
	up := tx.StmtContext(ctx, s.upsertLatest)
	for _, k := range order {
		sm := latest[k]
		if _, err := up.ExecContext(ctx, runID, k, sm.Step, sm.Timestamp, sm.value, sm.isNaN); err != nil {
			return fmt.Errorf("metric %q: %w", k, err)
		}
	}
	return nil
}

// storedMetric is a metric as stored: a NaN becomes value 0 with isNaN set.
type storedMetric struct {
	Metric
	value float64
	isNaN bool
}

func storeMetric(m Metric) storedMetric {
	if math.IsNaN(m.Value) {
		return storedMetric{Metric: m, isNaN: true}
	}
	return storedMetric{Metric: m, value: m.Value}
}

// after reports whether a is later than b in MLflow's latest-value order:
// step, then timestamp, then value, then NaN after the same stored value.
// It matches the WHERE clause of the latest_metrics upsert.
func (a storedMetric) after(b storedMetric) bool {
	c := cmp.Or(cmp.Compare(a.Step, b.Step), cmp.Compare(a.Timestamp, b.Timestamp), cmp.Compare(a.value, b.value))
	if c == 0 && a.isNaN && !b.isNaN {
		c = 1
	}
	return c > 0
}
