package tracking

import (
	"fmt"
	"slices"
	"strings"
)

// runAttributes maps MLflow's run attribute names in filters and order-by
// clauses to the runs table's columns, and says whether they are numbers.
var runAttributes = map[string]struct {
	column  string
	numeric bool
}{
	"run_id":          {"runs.run_uuid", false},
	"run_uuid":        {"runs.run_uuid", false},
	"run_name":        {"runs.name", false},
	"status":          {"runs.status", false},
	"user_id":         {"runs.user_id", false},
	"artifact_uri":    {"runs.artifact_uri", false},
	"lifecycle_stage": {"runs.lifecycle_stage", false},
	"start_time":      {"runs.start_time", true},
	"created":         {"runs.start_time", true},
	"end_time":        {"runs.end_time", true},
}

// experimentAttributes is runAttributes for experiments.
var experimentAttributes = map[string]struct {
	column  string
	numeric bool
}{
	"name":             {"experiments.name", false},
	"experiment_id":    {"experiments.experiment_id", true},
	"creation_time":    {"experiments.creation_time", true},
	"last_update_time": {"experiments.last_update_time", true},
}

// likeToGlob turns a LIKE pattern into a GLOB pattern, so that LIKE is
// case-sensitive as in MLflow (SQLite's LIKE ignores ASCII case).
func likeToGlob(p string) string {
	var b strings.Builder
	for _, r := range p {
		switch r {
		case '%':
			b.WriteByte('*')
		case '_':
			b.WriteByte('?')
		case '*', '?', '[':
			b.WriteByte('[')
			b.WriteRune(r)
			b.WriteByte(']')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// stringCondition renders expr op value for a string comparison.
func stringCondition(expr string, c Clause) (string, []any, error) {
	switch c.Op {
	case "=", "!=", "LIKE", "ILIKE":
		if c.Kind != ValueString {
			return "", nil, fmt.Errorf("%w: %s.%s %s needs a quoted string value", ErrInvalid, c.Entity, c.Key, c.Op)
		}
	case "IN", "NOT IN":
		marks := strings.TrimSuffix(strings.Repeat("?, ", len(c.List)), ", ")
		args := make([]any, len(c.List))
		for i, v := range c.List {
			args[i] = v
		}
		return expr + " " + c.Op + " (" + marks + ")", args, nil
	default:
		return "", nil, fmt.Errorf("%w: %s.%s cannot be compared with %s; strings take =, !=, LIKE, ILIKE, IN, NOT IN", ErrInvalid, c.Entity, c.Key, c.Op)
	}
	switch c.Op {
	case "LIKE":
		return expr + " GLOB ?", []any{likeToGlob(c.String)}, nil
	case "ILIKE":
		return "lower(" + expr + ") LIKE lower(?)", []any{c.String}, nil
	}
	return expr + " " + c.Op + " ?", []any{c.String}, nil
}

// numberCondition renders expr op value for a numeric comparison.
func numberCondition(expr string, c Clause) (string, []any, error) {
	switch c.Op {
	case "=", "!=", "<", "<=", ">", ">=":
	default:
		return "", nil, fmt.Errorf("%w: %s.%s is a number and takes =, !=, <, <=, >, >=, not %s", ErrInvalid, c.Entity, c.Key, c.Op)
	}
	if c.Kind != ValueNumber {
		return "", nil, fmt.Errorf("%w: %s.%s %s needs a number (unquoted)", ErrInvalid, c.Entity, c.Key, c.Op)
	}
	return expr + " " + c.Op + " ?", []any{c.Number}, nil
}

// runSearchSQL builds a run search: the FROM clause with its joins and
// WHERE clause (base, the query's own conditions, and the filter's), its
// arguments in order, and the ORDER BY list.
//
// When the first order-by key is a metric that a numeric filter clause
// also compares (metrics.acc > 0.5 ordered by metrics.acc DESC, the usual
// "best runs" search), the search is driven from the latest_metrics index
// on (key, is_nan, value): rows come in the order asked and the page's
// LIMIT stops the scan early, instead of every run of the experiment being
// read and sorted. The other clauses are then checked per row.
func runSearchSQL(base string, baseArgs []any, clauses []Clause, order []OrderBy) (string, []any, string, error) {
	drive := -1
	if len(order) > 0 && order[0].Entity == EntityMetric {
		for i, c := range clauses {
			if c.Entity == EntityMetric && c.Key == order[0].Key && c.Kind == ValueNumber {
				drive = i
				break
			}
		}
	}
	from := "runs AS runs"
	var conds []string
	var condArgs []any
	rest := clauses
	if drive >= 0 {
		c := clauses[drive]
		if _, _, err := numberCondition("value", c); err != nil {
			return "", nil, "", err
		}
		rest = slices.Delete(slices.Clone(clauses), drive, drive+1)
		from = "latest_metrics AS o0 CROSS JOIN runs AS runs ON runs.run_uuid = o0.run_uuid"
		conds = append(conds, "o0.key = ? AND o0.is_nan = 0 AND o0.value "+c.Op+" ?")
		condArgs = append(condArgs, c.Key, c.Number)
	}
	joins, args, orderSQL, err := runOrder(order, drive >= 0)
	if err != nil {
		return "", nil, "", err
	}
	fconds, fargs, err := runConditions(rest, drive >= 0)
	if err != nil {
		return "", nil, "", err
	}
	conds = append(append(conds, base), fconds...)
	args = append(append(append(args, condArgs...), baseArgs...), fargs...)
	return from + joins + " WHERE " + strings.Join(conds, " AND "), args, orderSQL, nil
}

// runConditions translates filter clauses into conditions on the runs
// table (aliased runs): IN (subquery) lists, or, when correlated,
// EXISTS probes of each row (cheaper when few rows are visited).
func runConditions(clauses []Clause, correlated bool) ([]string, []any, error) {
	sub := func(table, cond string) string {
		if correlated {
			return `EXISTS (SELECT 1 FROM ` + table + ` x WHERE x.run_uuid = runs.run_uuid AND ` + cond + `)`
		}
		return `runs.run_uuid IN (SELECT run_uuid FROM ` + table + ` WHERE ` + cond + `)`
	}
	var conds []string
	var args []any
	for _, c := range clauses {
		var cond string
		var a []any
		var err error
		switch c.Entity {
		case EntityMetric:
			cond, a, err = numberCondition("value", c)
			cond = sub("latest_metrics", `key = ? AND is_nan = 0 AND `+cond)
			a = append([]any{c.Key}, a...)
		case EntityParam, EntityTag:
			table := "params"
			if c.Entity == EntityTag {
				table = "tags"
			}
			cond, a, err = stringCondition("value", c)
			cond = sub(table, `key = ? AND `+cond)
			a = append([]any{c.Key}, a...)
		case EntityAttribute:
			attr, ok := runAttributes[strings.ToLower(c.Key)]
			switch {
			case !ok:
				err = fmt.Errorf("%w: unknown run attribute %q; use run_id, run_name, status, user_id, artifact_uri, start_time, end_time", ErrInvalid, c.Key)
			case attr.numeric:
				cond, a, err = numberCondition(attr.column, c)
			default:
				cond, a, err = stringCondition(attr.column, c)
			}
		case EntityDataset:
			col := map[string]string{"name": "name", "digest": "digest", "context": "context"}[strings.ToLower(c.Key)]
			if col == "" {
				err = fmt.Errorf("%w: unknown dataset attribute %q; use name, digest or context", ErrInvalid, c.Key)
				break
			}
			cond, a, err = stringCondition(col, c)
			cond = sub("run_inputs", cond)
		default:
			err = fmt.Errorf("%w: unknown entity %q", ErrInvalid, c.Entity)
		}
		if err != nil {
			return nil, nil, err
		}
		conds, args = append(conds, cond), append(args, a...)
	}
	return conds, args, nil
}

// runOrder translates order-by clauses into LEFT JOINs (with their
// arguments) and an ORDER BY list on runs, with MLflow's rules: a run
// missing the key sorts last either way (and a NaN metric after the
// numbers), then start time descending and run ID break ties.
//
// When driven, the first clause is a metric whose latest value is o0 of
// the FROM clause, filtered to numbers (see runSearchSQL).
func runOrder(order []OrderBy, driven bool) (joins string, args []any, orderBy string, err error) {
	var terms []string
	var js strings.Builder
	hasStart := false
	dir := func(o OrderBy) string {
		if o.Ascending {
			return " ASC"
		}
		return " DESC"
	}
	for i, o := range order {
		alias := fmt.Sprintf("o%d", i)
		switch o.Entity {
		case EntityMetric:
			if i == 0 && driven {
				terms = append(terms, alias+`.value`+dir(o))
				continue
			}
			fmt.Fprintf(&js, ` LEFT JOIN latest_metrics %[1]s ON %[1]s.run_uuid = runs.run_uuid AND %[1]s.key = ?`, alias)
			terms = append(terms, `coalesce(`+alias+`.is_nan, 2) ASC`, alias+`.value`+dir(o))
			args = append(args, o.Key)
		case EntityParam, EntityTag:
			table := "params"
			if o.Entity == EntityTag {
				table = "tags"
			}
			fmt.Fprintf(&js, ` LEFT JOIN %[2]s %[1]s ON %[1]s.run_uuid = runs.run_uuid AND %[1]s.key = ?`, alias, table)
			terms = append(terms, alias+`.value IS NULL ASC`, alias+`.value`+dir(o))
			args = append(args, o.Key)
		case EntityAttribute:
			attr, ok := runAttributes[strings.ToLower(o.Key)]
			if !ok {
				return "", nil, "", fmt.Errorf("%w: cannot order by unknown run attribute %q", ErrInvalid, o.Key)
			}
			if attr.column == "runs.start_time" {
				hasStart = true
			}
			terms = append(terms, attr.column+` IS NULL ASC`, attr.column+dir(o))
		default:
			return "", nil, "", fmt.Errorf("%w: cannot order runs by %s.%s; order by metrics, params, tags or attributes", ErrInvalid, o.Entity, o.Key)
		}
	}
	if !hasStart {
		terms = append(terms, "runs.start_time DESC")
	}
	terms = append(terms, "runs.run_uuid ASC")
	return js.String(), args, strings.Join(terms, ", "), nil
}

// experimentConditions translates filter clauses into conditions on the
// experiments table: attributes name, creation_time, last_update_time and
// experiment tags.
func experimentConditions(clauses []Clause) ([]string, []any, error) {
	var conds []string
	var args []any
	for _, c := range clauses {
		var cond string
		var a []any
		var err error
		switch c.Entity {
		case EntityTag:
			cond, a, err = stringCondition("value", c)
			cond = `experiments.experiment_id IN (SELECT experiment_id FROM experiment_tags WHERE key = ? AND ` + cond + `)`
			a = append([]any{c.Key}, a...)
		case EntityAttribute:
			attr, ok := experimentAttributes[strings.ToLower(c.Key)]
			switch {
			case !ok:
				err = fmt.Errorf("%w: unknown experiment attribute %q; use name, creation_time, last_update_time", ErrInvalid, c.Key)
			case attr.numeric:
				cond, a, err = numberCondition(attr.column, c)
			default:
				cond, a, err = stringCondition(attr.column, c)
			}
		default:
			err = fmt.Errorf("%w: experiments are filtered by attributes and tags, not %s", ErrInvalid, c.Entity)
		}
		if err != nil {
			return nil, nil, err
		}
		conds, args = append(conds, cond), append(args, a...)
	}
	return conds, args, nil
}

// experimentOrder is runOrder for experiments; the default is MLflow's,
// creation time descending, then experiment ID.
func experimentOrder(order []OrderBy) (string, error) {
	var terms []string
	hasID := false
	for _, o := range order {
		attr, ok := experimentAttributes[strings.ToLower(o.Key)]
		if o.Entity != EntityAttribute || !ok {
			return "", fmt.Errorf("%w: cannot order experiments by %s.%s; use name, experiment_id, creation_time or last_update_time", ErrInvalid, o.Entity, o.Key)
		}
		d := " ASC"
		if !o.Ascending {
			d = " DESC"
		}
		if attr.column == "experiments.experiment_id" {
			hasID = true
		}
		terms = append(terms, attr.column+d)
	}
	if len(terms) == 0 {
		terms = append(terms, "experiments.creation_time DESC")
	}
	if !hasID {
		terms = append(terms, "experiments.experiment_id ASC")
	}
	return strings.Join(terms, ", "), nil
}
