package tracking

import (
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

const runColumns = `run_uuid, name, experiment_id, user_id, status, start_time, end_time, artifact_uri, lifecycle_stage`

// CreateRun starts a run in RUNNING status and returns it. See [CreateRun]
// for the defaults; the experiment must exist and be active, and a parent
// run must exist in the same experiment unless req.UncheckedParent.
func (s *SQLiteStore) CreateRun(ctx context.Context, req CreateRun) (Run, error) {
	nr, err := newRun(req)
	if err != nil {
		return Run{}, fmt.Errorf("creating run in experiment %s: %w", cmp.Or(req.ExperimentID, DefaultExperimentID), err)
	}
	err = s.write(ctx, "creating run in experiment "+nr.Info.ExperimentID, func(tx *sql.Tx) error {
		return s.runInserts(ctx, tx).insert(ctx, &nr)
	})
	if err != nil {
		return Run{}, err
	}
	return nr.Run, nil
}

// CreateRuns creates several runs, as CreateRun creates each, in one
// transaction: all or nothing. The runs come back in the order of reqs.
// An error names the first request that failed, by index; nothing is
// created then. It is for a writer that starts many runs at once (a
// round's site runs).
func (s *SQLiteStore) CreateRuns(ctx context.Context, reqs []CreateRun) ([]Run, error) {
	what := fmt.Sprintf("creating %d runs", len(reqs))
	nrs := make([]newRunReq, len(reqs))
	for i, req := range reqs {
		var err error
		if nrs[i], err = newRun(req); err != nil {
			return nil, fmt.Errorf("%s: run %d, in experiment %s: %w", what, i, cmp.Or(req.ExperimentID, DefaultExperimentID), err)
		}
	}
	if len(reqs) == 0 {
		return nil, nil
	}
	err := s.write(ctx, what, func(tx *sql.Tx) error {
		sctx := statementContext(ctx)
		ins := s.runInserts(sctx, tx)
		for i := range nrs {
			if err := ctx.Err(); err != nil {
				return err
			}
			if err := ins.insert(sctx, &nrs[i]); err != nil {
				return fmt.Errorf("run %d (%s), in experiment %s: %w", i, nrs[i].Info.RunName, nrs[i].Info.ExperimentID, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	runs := make([]Run, len(nrs))
	for i, nr := range nrs {
		runs[i] = nr.Run
	}
	return runs, nil
}

// newRunReq is a checked CreateRun: the run as it will be, and what its
// insert checks.
type newRunReq struct {
	Run
	expID           int64
	proxied         bool
	uncheckedParent bool
}

// newRun checks req and fills in its defaults and the new run's id; the
// artifact URI waits for the experiment's location (runInserts.insert).
func newRun(req CreateRun) (newRunReq, error) {
	if req.ExperimentID == "" {
		req.ExperimentID = DefaultExperimentID
	}
	expID, err := parseExperimentID(req.ExperimentID)
	if err != nil {
		return newRunReq{}, err
	}
	tags := make(map[string]string, len(req.Tags)+3)
	maps.Copy(tags, req.Tags)
	if err := mergeTag(tags, TagRunName, req.Name, "Name"); err != nil {
		return newRunReq{}, err
	}
	if err := mergeTag(tags, TagParentRunID, req.ParentRunID, "ParentRunID"); err != nil {
		return newRunReq{}, err
	}
	if err := mergeTag(tags, TagUser, req.UserID, "UserID"); err != nil {
		return newRunReq{}, err
	}
	if tags[TagRunName] == "" {
		tags[TagRunName] = generateRunName()
	}
	sorted := sortedTags(tags)
	for _, t := range sorted {
		if err := validateTag(t); err != nil {
			return newRunReq{}, err
		}
	}
	start := req.StartTime
	if start.IsZero() {
		start = time.Now()
	}
	info := RunInfo{
		RunID:          newRunID(),
		RunName:        tags[TagRunName],
		ExperimentID:   req.ExperimentID,
		UserID:         tags[TagUser],
		Status:         StatusRunning,
		StartTime:      fromMillis(start.UnixMilli()),
		LifecycleStage: LifecycleActive,
	}
	return newRunReq{Run: Run{Info: info, Data: RunData{Tags: sorted}}, expID: expID,
		proxied: req.ProxiedArtifacts, uncheckedParent: req.UncheckedParent}, nil
}

// runInserts inserts runs within tx through statements prepared once,
// remembering the experiments and parent runs it has checked: a round's
// thousands of site runs share one experiment and one parent.
type runInserts struct {
	exp, parent, run, tag *sql.Stmt
	exps                  map[int64]experimentRow
	parents               map[string]int64 // a parent run's experiment
}

// experimentRow is what inserting a run reads of its experiment.
type experimentRow struct {
	loc   string
	stage LifecycleStage
}

func (s *SQLiteStore) runInserts(ctx context.Context, tx *sql.Tx) *runInserts {
	return &runInserts{
		exp:     tx.StmtContext(ctx, s.selectExperimentLoc),
		parent:  tx.StmtContext(ctx, s.selectRunExperiment),
		run:     tx.StmtContext(ctx, s.insertRunRow),
		tag:     tx.StmtContext(ctx, s.upsertTag),
		exps:    make(map[int64]experimentRow),
		parents: make(map[string]int64),
	}
}

// insert inserts the checked run nr: its experiment must exist and be
// active, and its parent (unless unchecked) exist in the same experiment.
func (ri *runInserts) insert(ctx context.Context, nr *newRunReq) error {
	info, expID := &nr.Info, nr.expID
	e, ok := ri.exps[expID]
	if !ok {
		switch err := ri.exp.QueryRowContext(ctx, expID).Scan(&e.loc, &e.stage); {
		case errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("experiment %s: %w", info.ExperimentID, ErrNotFound)
		case err != nil:
			return err
		}
		ri.exps[expID] = e
	}
	if e.stage == LifecycleDeleted {
		return fmt.Errorf("%w: restore experiment %s first or use another", ErrExperimentDeleted, info.ExperimentID)
	}
	if parent, _ := nr.Data.Tag(TagParentRunID); parent != "" && !nr.uncheckedParent {
		parentExp, ok := ri.parents[parent]
		if !ok {
			switch err := ri.parent.QueryRowContext(ctx, parent).Scan(&parentExp); {
			case errors.Is(err, sql.ErrNoRows):
				return fmt.Errorf("parent run %s: %w", parent, ErrNotFound)
			case err != nil:
				return err
			}
			ri.parents[parent] = parentExp
		}
		if parentExp != expID {
			return fmt.Errorf("%w: parent run %s is in experiment %d; a nested run must be in its parent's experiment", ErrInvalid, parent, parentExp)
		}
	}
	info.ArtifactURI = strings.TrimSuffix(e.loc, "/") + "/" + info.RunID + "/artifacts"
	if nr.proxied {
		info.ArtifactURI = fmt.Sprintf("%s:/%d/%s/artifacts", ProxyScheme, expID, info.RunID)
	}
	if _, err := ri.run.ExecContext(ctx, info.RunID, info.RunName, expID, info.UserID, info.Status, info.StartTime.UnixMilli(), info.ArtifactURI, info.LifecycleStage); err != nil {
		return err
	}
	for _, t := range nr.Data.Tags {
		if _, err := ri.tag.ExecContext(ctx, info.RunID, t.Key, t.Value); err != nil {
			return err
		}
	}
	return nil
}

// mergeTag puts value under key in tags, unless value is empty; a
// different value already there is an error naming field.
func mergeTag(tags map[string]string, key, value, field string) error {
	if value == "" {
		return nil
	}
	if old, ok := tags[key]; ok && old != value {
		return fmt.Errorf("%w: %s %q and tag %s %q disagree; set one of them", ErrInvalid, field, value, key, old)
	}
	tags[key] = value
	return nil
}

// newRunID returns a random UUID4 as 32 lowercase hex characters, as
// MLflow's uuid.uuid4().hex.
func newRunID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return hex.EncodeToString(b[:])
}

// UpdateRun changes a run's status, end time and name; the zero value of
// each (empty status, zero time, empty name) leaves it unchanged. A new
// name also updates the [TagRunName] tag. A deleted run is
// [ErrRunDeleted].
func (s *SQLiteStore) UpdateRun(ctx context.Context, runID string, status RunStatus, end time.Time, name string) error {
	what := fmt.Sprintf("updating run %s", runID)
	if status != "" {
		if err := status.Check(); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if name != "" {
		if err := validateTag(Tag{Key: TagRunName, Value: name}); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if err := s.checkRunActive(ctx, tx, runID); err != nil {
			return err
		}
		var sets []string
		var args []any
		if status != "" {
			sets, args = append(sets, "status = ?"), append(args, status)
		}
		if !end.IsZero() {
			sets, args = append(sets, "end_time = ?"), append(args, end.UnixMilli())
		}
		if name != "" {
			sets, args = append(sets, "name = ?"), append(args, name)
			if _, err := tx.StmtContext(ctx, s.upsertTag).ExecContext(ctx, runID, TagRunName, name); err != nil {
				return err
			}
		}
		if len(sets) == 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, `UPDATE runs SET `+strings.Join(sets, ", ")+` WHERE run_uuid = ?`, append(args, runID)...)
		return err
	})
}

// EndRuns sets the status and end time of several runs, as UpdateRun sets
// each's, in one transaction: all or nothing. An error names the first
// run that failed, by index. It is for a writer that ends many runs at
// once (an arm's site runs).
func (s *SQLiteStore) EndRuns(ctx context.Context, runIDs []string, status RunStatus, end time.Time) error {
	what := fmt.Sprintf("ending %d runs", len(runIDs))
	if err := status.Check(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if end.IsZero() {
		return fmt.Errorf("%s: %w: no end time; give the time they ended", what, ErrInvalid)
	}
	if len(runIDs) == 0 {
		return nil
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		sctx := statementContext(ctx)
		upd := tx.StmtContext(sctx, s.endActiveRun)
		for i, id := range runIDs {
			if err := ctx.Err(); err != nil {
				return err
			}
			res, err := upd.ExecContext(sctx, status, end.UnixMilli(), id)
			if err != nil {
				return fmt.Errorf("run %d (%s): %w", i, id, err)
			}
			n, err := res.RowsAffected()
			if err == nil && n == 0 {
				// Not ended: the check says why (missing or deleted).
				if err = s.checkRunActive(sctx, tx, id); err == nil {
					err = fmt.Errorf("run %s: %w", id, ErrNotFound)
				}
			}
			if err != nil {
				return fmt.Errorf("run %d: %w", i, err)
			}
		}
		return nil
	})
}

// checkRunActive returns ErrNotFound or ErrRunDeleted unless the run
// exists and is active; tx is a write transaction.
func (s *SQLiteStore) checkRunActive(ctx context.Context, tx *sql.Tx, runID string) error {
	var stage LifecycleStage
	switch err := tx.StmtContext(ctx, s.selectRunStage).QueryRowContext(ctx, runID).Scan(&stage); {
	case errors.Is(err, sql.ErrNoRows):
		return stageError(runID, "", false)
	case err != nil:
		return err
	default:
		return stageError(runID, stage, true)
	}
}

// stageError is checkRunActive's error for a run in stage (found false:
// there is no such run), nil for an active one.
func stageError(runID string, stage LifecycleStage, found bool) error {
	switch {
	case !found:
		return fmt.Errorf("run %s: %w", runID, ErrNotFound)
	case stage == LifecycleDeleted:
		return fmt.Errorf("%w: restore run %s with RestoreRun to write to it", ErrRunDeleted, runID)
	}
	return nil
}

// runStages returns the lifecycle stage of each of ids (distinct) that
// exists, in one query for up to idChunk of them: for a writer of
// thousands of runs, which would otherwise ask once a run.
func runStages(ctx context.Context, tx *sql.Tx, ids []string) (map[string]LifecycleStage, error) {
	stages := make(map[string]LifecycleStage, len(ids))
	for chunk := range slices.Chunk(ids, idChunk) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		q := `SELECT run_uuid, lifecycle_stage FROM runs WHERE run_uuid IN (?` + strings.Repeat(", ?", len(args)-1) + `)`
		err := eachRow(ctx, tx, q, args, func(rows *sql.Rows) error {
			var id string
			var stage LifecycleStage
			if err := rows.Scan(&id, &stage); err != nil {
				return err
			}
			stages[id] = stage
			return nil
		})
		if err != nil {
			return nil, err
		}
	}
	return stages, nil
}

// GetRun returns a run with its latest metrics, params and tags, active or
// deleted; [ErrNotFound] when there is none.
func (s *SQLiteStore) GetRun(ctx context.Context, runID string) (Run, error) {
	var runs []Run
	err := s.read(ctx, fmt.Sprintf("getting run %s", runID), func(tx *sql.Tx) error {
		var err error
		if runs, err = queryRuns(ctx, tx, `runs AS runs WHERE runs.run_uuid = ?`, []any{runID}, ""); err != nil {
			return err
		}
		if len(runs) == 0 {
			return ErrNotFound
		}
		return loadRunData(ctx, tx, runs)
	})
	if err != nil {
		return Run{}, err
	}
	return runs[0], nil
}

// DeleteRun moves a run to the deleted lifecycle stage: it stays stored
// and readable but takes no more writes, and SearchRuns leaves it out
// unless asked. Its child runs are left as they are.
func (s *SQLiteStore) DeleteRun(ctx context.Context, runID string) error {
	return s.write(ctx, fmt.Sprintf("deleting run %s", runID), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = ? WHERE run_uuid = ?`, time.Now().UnixMilli(), runID)
		return mustAffect(res, err)
	})
}

// RestoreRun moves a deleted run back to the active stage.
func (s *SQLiteStore) RestoreRun(ctx context.Context, runID string) error {
	return s.write(ctx, fmt.Sprintf("restoring run %s", runID), func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE runs SET lifecycle_stage = 'active', deleted_time = NULL WHERE run_uuid = ?`, runID)
		return mustAffect(res, err)
	})
}

// SearchRuns returns one page of the runs q selects, with their data, and
// the token of the next page ("" on the last page). The token is MLflow's
// (base64 of {"offset": n}), so runs created while paging may shift
// pages, as in MLflow.
func (s *SQLiteStore) SearchRuns(ctx context.Context, q RunQuery) ([]Run, string, error) {
	const what = "searching runs"
	where, args, err := q.where()
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	clauses, err := ParseFilter(q.Filter)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	order, err := ParseOrderBy(q.OrderBy)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	from, args, orderSQL, err := runSearchSQL(where, args, clauses, order)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	limit := q.MaxResults
	switch {
	case limit == 0:
		limit = DefaultSearchResults
	case limit < 0 || limit > MaxSearchResults:
		return nil, "", fmt.Errorf("%s: %w: MaxResults %d is outside 0 (the default, %d) to %d", what, ErrInvalid, limit, DefaultSearchResults, MaxSearchResults)
	}
	offset, err := decodePageToken(q.PageToken)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", what, err)
	}
	var runs []Run
	next := ""
	err = s.read(ctx, what, func(tx *sql.Tx) error {
		// One more than a page tells whether there is a next page.
		page := fmt.Sprintf(` ORDER BY %s LIMIT %d OFFSET %d`, orderSQL, limit+1, offset)
		if runs, err = queryRuns(ctx, tx, from, args, page); err != nil {
			return err
		}
		if len(runs) > limit {
			runs = runs[:limit]
			next = encodePageToken(offset + limit)
		}
		return loadRunData(ctx, tx, runs)
	})
	if err != nil {
		return nil, "", err
	}
	return runs, next, nil
}

// where turns the query, but for its Filter (see runSearchSQL), into a
// condition on the runs table.
func (q RunQuery) where() (string, []any, error) {
	var conds []string
	var args []any
	switch q.ViewType {
	case ViewActiveOnly:
		conds, args = append(conds, `runs.lifecycle_stage = ?`), append(args, LifecycleActive)
	case ViewDeletedOnly:
		conds, args = append(conds, `runs.lifecycle_stage = ?`), append(args, LifecycleDeleted)
	case ViewAll:
	default:
		return "", nil, fmt.Errorf("%w: view type %d is none of ViewActiveOnly, ViewDeletedOnly, ViewAll", ErrInvalid, int(q.ViewType))
	}
	if len(q.ExperimentIDs) > 0 {
		marks := make([]string, len(q.ExperimentIDs))
		for i, id := range q.ExperimentIDs {
			n, err := parseExperimentID(id)
			if err != nil {
				return "", nil, err
			}
			marks[i] = "?"
			args = append(args, n)
		}
		conds = append(conds, `runs.experiment_id IN (`+strings.Join(marks, ", ")+`)`)
	}
	if q.ParentRunID != "" {
		conds = append(conds, `runs.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ? AND value = ?)`)
		args = append(args, TagParentRunID, q.ParentRunID)
	}
	if len(conds) == 0 {
		return "1", nil, nil
	}
	return strings.Join(conds, " AND "), args, nil
}

// ChildRuns returns every active run nested directly under parentRunID,
// oldest first (by start time, then name). The parent must exist.
func (s *SQLiteStore) ChildRuns(ctx context.Context, parentRunID string) ([]Run, error) {
	err := s.read(ctx, fmt.Sprintf("listing child runs of %s", parentRunID), func(tx *sql.Tx) error {
		var one int
		err := tx.QueryRowContext(ctx, `SELECT 1 FROM runs WHERE run_uuid = ?`, parentRunID).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotFound
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	var all []Run
	q := RunQuery{ParentRunID: parentRunID, MaxResults: MaxSearchResults}
	for {
		runs, next, err := s.SearchRuns(ctx, q)
		if err != nil {
			return nil, fmt.Errorf("listing child runs of %s: %w", parentRunID, err)
		}
		all = append(all, runs...)
		if next == "" {
			break
		}
		q.PageToken = next
	}
	slices.SortStableFunc(all, func(a, b Run) int {
		return cmp.Or(a.Info.StartTime.Compare(b.Info.StartTime), cmp.Compare(a.Info.RunName, b.Info.RunName), cmp.Compare(a.Info.RunID, b.Info.RunID))
	})
	return all, nil
}

// qualifiedRunColumns are runColumns of the table aliased runs.
const qualifiedRunColumns = `runs.run_uuid, runs.name, runs.experiment_id, runs.user_id, runs.status, runs.start_time, runs.end_time, runs.artifact_uri, runs.lifecycle_stage`

// queryRuns reads the RunInfo of the runs that from (a FROM clause, with
// the runs table aliased runs, and its WHERE clause) selects, in the order
// and page tail says.
func queryRuns(ctx context.Context, q querier, from string, args []any, tail string) ([]Run, error) {
	rows, err := q.QueryContext(ctx, `SELECT `+qualifiedRunColumns+` FROM `+from+tail, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var runs []Run
	for rows.Next() {
		var r Run
		var expID, start int64
		var end sql.NullInt64
		if err := rows.Scan(&r.Info.RunID, &r.Info.RunName, &expID, &r.Info.UserID, &r.Info.Status, &start, &end, &r.Info.ArtifactURI, &r.Info.LifecycleStage); err != nil {
			return nil, err
		}
		r.Info.ExperimentID = strconv.FormatInt(expID, 10)
		r.Info.StartTime = fromMillis(start)
		if end.Valid {
			r.Info.EndTime = fromMillis(end.Int64)
		}
		runs = append(runs, r)
	}
	return runs, rows.Err()
}

// idChunk bounds the IDs bound into one IN (…) list, well under SQLite's
// limit on bound parameters.
const idChunk = 500

// loadRunData fills in the latest metrics, params and tags of runs.
func loadRunData(ctx context.Context, q querier, runs []Run) error {
	index := make(map[string]*RunData, len(runs))
	for i := range runs {
		index[runs[i].Info.RunID] = &runs[i].Data
	}
	for chunk := range slices.Chunk(runs, idChunk) {
		ids := make([]any, len(chunk))
		for i, r := range chunk {
			ids[i] = r.Info.RunID
		}
		in := `run_uuid IN (?` + strings.Repeat(", ?", len(ids)-1) + `) ORDER BY run_uuid, key`
		err := eachRow(ctx, q, `SELECT run_uuid, key, value, timestamp, step, is_nan FROM latest_metrics WHERE `+in, ids, func(rows *sql.Rows) error {
			var id string
			var m Metric
			var isNaN bool
			if err := rows.Scan(&id, &m.Key, &m.Value, &m.Timestamp, &m.Step, &isNaN); err != nil {
				return err
			}
			if isNaN {
				m.Value = math.NaN()
			}
			index[id].Metrics = append(index[id].Metrics, m)
			return nil
		})
		if err != nil {
			return err
		}
		for _, table := range []string{"params", "tags"} {
			err := eachRow(ctx, q, `SELECT run_uuid, key, value FROM `+table+` WHERE `+in, ids, func(rows *sql.Rows) error {
				var id, k, v string
				if err := rows.Scan(&id, &k, &v); err != nil {
					return err
				}
				if d := index[id]; table == "params" {
					d.Params = append(d.Params, Param{Key: k, Value: v})
				} else {
					d.Tags = append(d.Tags, Tag{Key: k, Value: v})
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	return loadInputs(ctx, q, runs)
}

// eachRow runs query and calls fn on each row.
func eachRow(ctx context.Context, q querier, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := q.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// pageToken is MLflow's page token: base64 of a JSON object.
type pageToken struct {
	Offset *int `json:"offset"`
}

func encodePageToken(offset int) string {
	b, _ := json.Marshal(pageToken{Offset: &offset}) // cannot fail
	return base64.StdEncoding.EncodeToString(b)
}

// decodePageToken returns the offset a page token carries; "" is 0.
func decodePageToken(tok string) (int, error) {
	if tok == "" {
		return 0, nil
	}
	bad := func(why string) (int, error) {
		return 0, fmt.Errorf("%w: page token %.40q %s; pass the token a previous search returned, or none", ErrInvalid, tok, why)
	}
	b, err := base64.StdEncoding.DecodeString(tok)
	if err != nil {
		return bad("is not base64")
	}
	var p pageToken
	if err := json.Unmarshal(b, &p); err != nil {
		return bad("is not a JSON object")
	}
	if p.Offset == nil || *p.Offset < 0 {
		return bad("has no offset of 0 or more")
	}
	return *p.Offset, nil
}
