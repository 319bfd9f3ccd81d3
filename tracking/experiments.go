package tracking

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// querier is what *sql.DB and *sql.Tx share.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const experimentColumns = `experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time`

// CreateExperiment creates an experiment and returns its ID. Its artifacts
// go under the store's artifact root, in a folder named by the ID. A name
// already taken, by an active or a deleted experiment, is
// [ErrAlreadyExists].
func (s *SQLiteStore) CreateExperiment(ctx context.Context, name string, tags map[string]string) (string, error) {
	return s.createExperiment(ctx, name, tags, false)
}

// CreateProxiedExperiment is CreateExperiment for an experiment whose
// artifacts go through the mlflow-artifacts proxy, as an MLflow server
// serving artifacts creates them: its location is mlflow-artifacts:/<id>,
// under the store's proxy artifact root, and so are its runs' artifact
// URIs.
func (s *SQLiteStore) CreateProxiedExperiment(ctx context.Context, name string, tags map[string]string) (string, error) {
	return s.createExperiment(ctx, name, tags, true)
}

func (s *SQLiteStore) createExperiment(ctx context.Context, name string, tags map[string]string, proxied bool) (string, error) {
	what := fmt.Sprintf("creating experiment %q", name)
	if strings.TrimSpace(name) == "" || !utf8.ValidString(name) {
		return "", fmt.Errorf("%s: %w: an experiment name must be non-empty UTF-8 text", what, ErrInvalid)
	}
	sorted := sortedTags(tags)
	for _, t := range sorted {
		if err := validateExperimentTag(t); err != nil {
			return "", fmt.Errorf("%s: %w", what, err)
		}
	}
	var id int64
	err := s.write(ctx, what, func(tx *sql.Tx) error {
		var stage LifecycleStage
		switch err := tx.QueryRowContext(ctx, `SELECT lifecycle_stage FROM experiments WHERE name = ?`, name).Scan(&stage); {
		case err == nil && stage == LifecycleDeleted:
			return fmt.Errorf("%w: a deleted experiment has that name; restore it with RestoreExperiment or pick another name", ErrAlreadyExists)
		case err == nil:
			return fmt.Errorf("%w: pick another name, or use EnsureExperiment to reuse it", ErrAlreadyExists)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		now := time.Now().UnixMilli()
		res, err := tx.ExecContext(ctx, `INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time)
			VALUES (?, '', 'active', ?, ?)`, name, now, now)
		if err != nil {
			return err
		}
		if id, err = res.LastInsertId(); err != nil {
			return err
		}
		loc := fileURI(filepath.Join(s.root, strconv.FormatInt(id, 10)))
		if proxied {
			loc = fmt.Sprintf("%s:/%d", ProxyScheme, id)
		}
		if _, err := tx.ExecContext(ctx, `UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?`, loc, id); err != nil {
			return err
		}
		for _, t := range sorted {
			if _, err := tx.ExecContext(ctx, `INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?)`, id, t.Key, t.Value); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return strconv.FormatInt(id, 10), nil
}

// GetExperiment returns the experiment with the given ID, active or
// deleted; [ErrNotFound] when there is none.
func (s *SQLiteStore) GetExperiment(ctx context.Context, id string) (Experiment, error) {
	what := fmt.Sprintf("getting experiment %s", id)
	n, err := parseExperimentID(id)
	if err != nil {
		return Experiment{}, fmt.Errorf("%s: %w", what, err)
	}
	return s.getExperiment(ctx, what, `experiment_id = ?`, n)
}

// GetExperimentByName returns the experiment with the given name, active
// or deleted; [ErrNotFound] when there is none.
func (s *SQLiteStore) GetExperimentByName(ctx context.Context, name string) (Experiment, error) {
	return s.getExperiment(ctx, fmt.Sprintf("getting experiment %q", name), `name = ?`, name)
}

func (s *SQLiteStore) getExperiment(ctx context.Context, what, where string, arg any) (Experiment, error) {
	var exps []Experiment
	err := s.read(ctx, what, func(tx *sql.Tx) error {
		var err error
		exps, err = queryExperiments(ctx, tx, where, arg)
		return err
	})
	if err != nil {
		return Experiment{}, err
	}
	if len(exps) == 0 {
		return Experiment{}, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return exps[0], nil
}

// EnsureExperiment returns the ID of the experiment with the given name,
// creating it when there is none. A deleted experiment of that name is
// [ErrExperimentDeleted]: restore it or pick another name.
func (s *SQLiteStore) EnsureExperiment(ctx context.Context, name string) (string, error) {
	for range 2 { // a second try covers another process creating it between the two calls
		exp, err := s.GetExperimentByName(ctx, name)
		switch {
		case err == nil && exp.LifecycleStage == LifecycleDeleted:
			return "", fmt.Errorf("ensuring experiment %q: %w; restore it (experiment %s) or pick another name", name, ErrExperimentDeleted, exp.ExperimentID)
		case err == nil:
			return exp.ExperimentID, nil
		case !errors.Is(err, ErrNotFound):
			return "", err
		}
		id, err := s.CreateExperiment(ctx, name, nil)
		if !errors.Is(err, ErrAlreadyExists) {
			return id, err
		}
	}
	return "", fmt.Errorf("ensuring experiment %q: it keeps being created and deleted concurrently", name)
}

// ListExperiments returns the active experiments, by ID.
func (s *SQLiteStore) ListExperiments(ctx context.Context) ([]Experiment, error) {
	var exps []Experiment
	err := s.read(ctx, "listing experiments", func(tx *sql.Tx) error {
		var err error
		exps, err = queryExperiments(ctx, tx, `lifecycle_stage = ?`, LifecycleActive)
		return err
	})
	return exps, err
}

// DeleteExperiment moves an experiment to the deleted lifecycle stage: it
// stays stored, no run can be created in it, and RestoreExperiment brings
// it back. Its runs are left as they are. The Default experiment cannot be
// deleted.
func (s *SQLiteStore) DeleteExperiment(ctx context.Context, id string) error {
	if id == DefaultExperimentID {
		return fmt.Errorf("deleting experiment %s: %w: the Default experiment cannot be deleted", id, ErrInvalid)
	}
	return s.setExperimentStage(ctx, "deleting", id, LifecycleDeleted)
}

// RestoreExperiment moves a deleted experiment back to the active stage.
func (s *SQLiteStore) RestoreExperiment(ctx context.Context, id string) error {
	return s.setExperimentStage(ctx, "restoring", id, LifecycleActive)
}

func (s *SQLiteStore) setExperimentStage(ctx context.Context, verb, id string, stage LifecycleStage) error {
	what := fmt.Sprintf("%s experiment %s", verb, id)
	n, err := parseExperimentID(id)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE experiments SET lifecycle_stage = ?, last_update_time = ? WHERE experiment_id = ?`,
			stage, time.Now().UnixMilli(), n)
		return mustAffect(res, err)
	})
}

// SetExperimentTag sets (or overwrites) a tag on an experiment.
func (s *SQLiteStore) SetExperimentTag(ctx context.Context, id string, tag Tag) error {
	what := fmt.Sprintf("setting tag %q on experiment %s", tag.Key, id)
	n, err := parseExperimentID(id)
	if err == nil {
		err = validateExperimentTag(tag)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE experiments SET last_update_time = ? WHERE experiment_id = ?`, time.Now().UnixMilli(), n)
		if err := mustAffect(res, err); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?)
			ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value`, n, tag.Key, tag.Value)
		return err
	})
}

// queryExperiments reads the experiments matching where (a condition on
// the experiments table with one argument), with their tags, by ID.
func queryExperiments(ctx context.Context, q querier, where string, arg any) ([]Experiment, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+experimentColumns+` FROM experiments WHERE `+where+` ORDER BY experiment_id`, arg)
	if err != nil {
		return nil, err
	}
	var exps []Experiment
	byID := map[string]int{}
	for rows.Next() {
		var e Experiment
		var id, created, updated int64
		if err := rows.Scan(&id, &e.Name, &e.ArtifactLocation, &e.LifecycleStage, &created, &updated); err != nil {
			rows.Close()
			return nil, err
		}
		e.ExperimentID = strconv.FormatInt(id, 10)
		e.CreationTime, e.LastUpdateTime = fromMillis(created), fromMillis(updated)
		byID[e.ExperimentID] = len(exps)
		exps = append(exps, e)
	}
	if err := rows.Close(); err != nil {
		return nil, err
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(exps) == 0 {
		return nil, nil
	}
	rows, err = q.QueryContext(ctx, `SELECT experiment_id, key, value FROM experiment_tags
		WHERE experiment_id IN (SELECT experiment_id FROM experiments WHERE `+where+`) ORDER BY experiment_id, key`, arg)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id int64
		var t Tag
		if err := rows.Scan(&id, &t.Key, &t.Value); err != nil {
			return nil, err
		}
		if i, ok := byID[strconv.FormatInt(id, 10)]; ok {
			exps[i].Tags = append(exps[i].Tags, t)
		}
	}
	return exps, rows.Err()
}

// mustAffect turns an UPDATE or DELETE that touched no row into
// [ErrNotFound].
func mustAffect(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// sortedTags turns a tag map into tags sorted by key.
func sortedTags(m map[string]string) []Tag {
	tags := make([]Tag, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		tags = append(tags, Tag{Key: k, Value: m[k]})
	}
	return tags
}

// ExperimentQuery selects experiments for SearchExperiments.
type ExperimentQuery struct {
	// Filter is an MLflow filter over the attributes name, creation_time
	// and last_update_time and over experiment tags, e.g.
	// "name LIKE 'fmnist%' AND tags.team = 'kit'"; "" selects all.
	Filter string
	// OrderBy are clauses over name, experiment_id, creation_time and
	// last_update_time; the default is creation_time DESC, and
	// experiment_id breaks ties.
	OrderBy []string
	// MaxResults is the page size: 0 means 1000, at most
	// [MaxSearchResults].
	MaxResults int
	// PageToken continues a search from the token a previous call returned.
	PageToken string
	// ViewType selects active, deleted or all experiments.
	ViewType ViewType
}

// SearchExperiments returns one page of the experiments q selects and the
// token of the next page ("" on the last page).
func (s *SQLiteStore) SearchExperiments(ctx context.Context, q ExperimentQuery) ([]Experiment, string, error) {
	const what = "searching experiments"
	fail := func(err error) ([]Experiment, string, error) { return nil, "", fmt.Errorf("%s: %w", what, err) }
	var conds []string
	var args []any
	switch q.ViewType {
	case ViewActiveOnly:
		conds, args = append(conds, `lifecycle_stage = ?`), append(args, LifecycleActive)
	case ViewDeletedOnly:
		conds, args = append(conds, `lifecycle_stage = ?`), append(args, LifecycleDeleted)
	case ViewAll:
	default:
		return fail(fmt.Errorf("%w: view type %d is none of ViewActiveOnly, ViewDeletedOnly, ViewAll", ErrInvalid, int(q.ViewType)))
	}
	clauses, err := ParseFilter(q.Filter)
	if err != nil {
		return fail(err)
	}
	fconds, fargs, err := experimentConditions(clauses)
	if err != nil {
		return fail(err)
	}
	conds, args = append(conds, fconds...), append(args, fargs...)
	order, err := ParseOrderBy(q.OrderBy)
	if err != nil {
		return fail(err)
	}
	orderSQL, err := experimentOrder(order)
	if err != nil {
		return fail(err)
	}
	limit := q.MaxResults
	switch {
	case limit == 0:
		limit = DefaultSearchResults
	case limit < 0 || limit > MaxSearchResults:
		return fail(fmt.Errorf("%w: MaxResults %d is outside 0 (the default, %d) to %d", ErrInvalid, limit, DefaultSearchResults, MaxSearchResults))
	}
	offset, err := decodePageToken(q.PageToken)
	if err != nil {
		return fail(err)
	}
	where := "1"
	if len(conds) > 0 {
		where = strings.Join(conds, " AND ")
	}
	var exps []Experiment
	next := ""
	err = s.read(ctx, what, func(tx *sql.Tx) error {
		var ids []any
		err := eachRow(ctx, tx, fmt.Sprintf(`SELECT experiment_id FROM experiments AS experiments WHERE %s ORDER BY %s LIMIT %d OFFSET %d`,
			where, orderSQL, limit+1, offset), args, func(rows *sql.Rows) error {
			var id int64
			if err := rows.Scan(&id); err != nil {
				return err
			}
			ids = append(ids, id)
			return nil
		})
		if err != nil {
			return err
		}
		if len(ids) > limit {
			ids = ids[:limit]
			next = encodePageToken(offset + limit)
		}
		for _, id := range ids {
			e, err := queryExperiments(ctx, tx, `experiment_id = ?`, id)
			if err != nil {
				return err
			}
			exps = append(exps, e...)
		}
		return nil
	})
	if err != nil {
		return nil, "", err
	}
	return exps, next, nil
}

// RenameExperiment gives an experiment a new name; a name another
// experiment has is [ErrAlreadyExists], a deleted experiment
// [ErrExperimentDeleted].
func (s *SQLiteStore) RenameExperiment(ctx context.Context, id, newName string) error {
	what := fmt.Sprintf("renaming experiment %s to %q", id, newName)
	n, err := parseExperimentID(id)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if strings.TrimSpace(newName) == "" || !utf8.ValidString(newName) {
		return fmt.Errorf("%s: %w: an experiment name must be non-empty UTF-8 text", what, ErrInvalid)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		var stage LifecycleStage
		switch err := tx.QueryRowContext(ctx, `SELECT lifecycle_stage FROM experiments WHERE experiment_id = ?`, n).Scan(&stage); {
		case errors.Is(err, sql.ErrNoRows):
			return ErrNotFound
		case err != nil:
			return err
		case stage == LifecycleDeleted:
			return fmt.Errorf("%w: restore it first", ErrExperimentDeleted)
		}
		var other int64
		switch err := tx.QueryRowContext(ctx, `SELECT experiment_id FROM experiments WHERE name = ?`, newName).Scan(&other); {
		case err == nil && other != n:
			return fmt.Errorf("%w: experiment %d has that name", ErrAlreadyExists, other)
		case err != nil && !errors.Is(err, sql.ErrNoRows):
			return err
		}
		_, err := tx.ExecContext(ctx, `UPDATE experiments SET name = ?, last_update_time = ? WHERE experiment_id = ?`, newName, time.Now().UnixMilli(), n)
		return err
	})
}
