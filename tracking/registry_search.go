package tracking

import (
	"context"
	"database/sql"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// SearchRegisteredModels returns one page of the registered models q
// selects, with their latest versions, tags and aliases, and the token of
// the next page ("" on the last page). The filter takes name (=, !=, LIKE,
// ILIKE) and tags.<key> (the same); the order is by name,
// creation_timestamp, last_updated_timestamp (or timestamp, its synonym),
// then name ascending, as MLflow's.
func (s *SQLiteStore) SearchRegisteredModels(ctx context.Context, q RegistryQuery) ([]RegisteredModel, string, error) {
	const what = "searching registered models"
	fail := func(err error) ([]RegisteredModel, string, error) { return nil, "", fmt.Errorf("%s: %w", what, err) }
	limit, offset, err := registryPage(q, DefaultRegisteredModelResults, MaxRegisteredModelResults)
	if err != nil {
		return fail(err)
	}
	clauses, err := ParseFilter(q.Filter)
	if err != nil {
		return fail(err)
	}
	conds, args, err := modelConditions(clauses)
	if err != nil {
		return fail(err)
	}
	orderSQL, err := registryOrder(q.OrderBy, modelOrderKeys, []string{"name"}, []string{"rm.name ASC"})
	if err != nil {
		return fail(err)
	}
	from := fmt.Sprintf(`FROM registered_models AS rm WHERE %s ORDER BY %s LIMIT %d OFFSET %d`, whereOf(conds), orderSQL, limit+1, offset)
	var rms []RegisteredModel
	err = s.read(ctx, what, func(tx *sql.Tx) error {
		var err error
		rms, err = queryModels(ctx, tx, from, args)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(rms) > limit {
		rms, next = rms[:limit], encodePageToken(offset+limit)
	}
	return rms, next, nil
}

// SearchModelVersions returns one page of the model versions q selects,
// with their tags and aliases, and the token of the next page ("" on the
// last page). The filter takes name (=, !=, LIKE, ILIKE), version_number
// (=, !=, <, <=, >, >=), run_id (=, !=, LIKE, ILIKE, IN), source_path (=,
// !=, LIKE, ILIKE) and tags.<key> (=, !=, LIKE, ILIKE). The default order
// is MLflow's: last_updated_timestamp DESC, name ASC, version_number DESC;
// order-by clauses take name, version_number, creation_timestamp and
// last_updated_timestamp.
func (s *SQLiteStore) SearchModelVersions(ctx context.Context, q RegistryQuery) ([]ModelVersion, string, error) {
	const what = "searching model versions"
	fail := func(err error) ([]ModelVersion, string, error) { return nil, "", fmt.Errorf("%s: %w", what, err) }
	limit, offset, err := registryPage(q, DefaultModelVersionResults, MaxModelVersionResults)
	if err != nil {
		return fail(err)
	}
	clauses, err := ParseFilter(q.Filter)
	if err != nil {
		return fail(err)
	}
	conds, args, err := versionConditions(clauses)
	if err != nil {
		return fail(err)
	}
	order := q.OrderBy
	if len(order) == 0 {
		order = []string{"last_updated_timestamp DESC", "name ASC", "version_number DESC"}
	}
	orderSQL, err := registryOrder(order, versionOrderKeys, []string{"name", "version_number"}, []string{"mv.name ASC", "mv.version DESC"})
	if err != nil {
		return fail(err)
	}
	from := fmt.Sprintf(`FROM model_versions AS mv WHERE %s ORDER BY %s LIMIT %d OFFSET %d`, whereOf(conds), orderSQL, limit+1, offset)
	var mvs []ModelVersion
	err = s.read(ctx, what, func(tx *sql.Tx) error {
		var err error
		mvs, err = queryVersions(ctx, tx, `SELECT `+versionColumns+` `+from, args)
		return err
	})
	if err != nil {
		return nil, "", err
	}
	next := ""
	if len(mvs) > limit {
		mvs, next = mvs[:limit], encodePageToken(offset+limit)
	}
	return mvs, next, nil
}

func whereOf(conds []string) string {
	if len(conds) == 0 {
		return "1"
	}
	return strings.Join(conds, " AND ")
}

// registryPage checks a query's page size and token.
func registryPage(q RegistryQuery, def, most int) (limit, offset int, err error) {
	limit = q.MaxResults
	switch {
	case limit == 0:
		limit = def
	case limit < 0 || limit > most:
		return 0, 0, fmt.Errorf("%w: invalid value %d for parameter 'max_results': it must be between 1 and %d (0 means the default, %d)", ErrInvalid, limit, most, def)
	}
	offset, err = decodePageToken(q.PageToken)
	return limit, offset, err
}

var (
	modelOrderKeys = map[string]string{
		"name":                   "rm.name",
		"creation_timestamp":     "rm.creation_time",
		"last_updated_timestamp": "rm.last_updated_time",
		"timestamp":              "rm.last_updated_time",
	}
	versionOrderKeys = map[string]string{
		"name":                   "mv.name",
		"version_number":         "mv.version",
		"creation_timestamp":     "mv.creation_time",
		"last_updated_timestamp": "mv.last_updated_time",
	}
)

// registryOrder turns order-by clauses into an ORDER BY list over keys
// (attribute name to column), refusing a column named twice, and appends
// the tie-breakers whose key the clauses do not name.
func registryOrder(clauses []string, keys map[string]string, tieKeys, tieTerms []string) (string, error) {
	parsed, err := ParseOrderBy(clauses)
	if err != nil {
		return "", err
	}
	var terms []string
	seen := map[string]bool{}
	for _, o := range parsed {
		col, ok := keys[o.Key]
		if o.Entity != EntityAttribute || !ok {
			return "", fmt.Errorf("%w: invalid order_by key %q; valid keys are %s", ErrInvalid, o.Key, validKeys(keys))
		}
		if seen[col] {
			return "", fmt.Errorf("%w: order_by %q names %s twice; name each key once", ErrInvalid, clauses, o.Key)
		}
		seen[col] = true
		dir := " ASC"
		if !o.Ascending {
			dir = " DESC"
		}
		terms = append(terms, col+dir)
	}
	for i, k := range tieKeys {
		if !seen[keys[k]] {
			terms = append(terms, tieTerms[i])
		}
	}
	return strings.Join(terms, ", "), nil
}

func validKeys(keys map[string]string) string {
	var names []string
	for _, k := range []string{"name", "version_number", "creation_timestamp", "last_updated_timestamp", "timestamp"} {
		if _, ok := keys[k]; ok {
			names = append(names, k)
		}
	}
	return strings.Join(names, ", ")
}

// registryStringCondition is stringCondition with MLflow's registry
// comparators: =, !=, LIKE, ILIKE, and IN only where allowIn.
func registryStringCondition(expr string, c Clause, what string, allowIn bool) (string, []any, error) {
	switch c.Op {
	case "=", "!=", "LIKE", "ILIKE":
		if c.Kind != ValueString {
			return "", nil, fmt.Errorf("%w: %s %s needs a quoted string value, such as 'my-value'", ErrInvalid, what, c.Op)
		}
	case "IN":
		if !allowIn {
			return "", nil, fmt.Errorf("%w: only the run_id attribute takes IN (a list of quoted strings); %s takes =, !=, LIKE, ILIKE", ErrInvalid, what)
		}
		if len(c.List) == 0 {
			return "", nil, fmt.Errorf("%w: %s IN needs at least one value", ErrInvalid, what)
		}
	default:
		comparators := "=, !=, LIKE, ILIKE"
		if allowIn {
			comparators += ", IN"
		}
		return "", nil, fmt.Errorf("%w: invalid comparator %s for %s; use %s", ErrInvalid, c.Op, what, comparators)
	}
	return stringCondition(expr, c)
}

// modelConditions translates filter clauses into conditions on
// registered_models AS rm.
func modelConditions(clauses []Clause) ([]string, []any, error) {
	var conds []string
	var args []any
	for _, c := range clauses {
		var cond string
		var a []any
		var err error
		switch c.Entity {
		case EntityAttribute:
			if strings.ToLower(c.Key) != "name" {
				return nil, nil, fmt.Errorf("%w: invalid attribute key %q in the filter; registered models are filtered by name and tags.<key>", ErrInvalid, c.Key)
			}
			cond, a, err = registryStringCondition("rm.name", c, "name", false)
		case EntityTag:
			cond, a, err = registryStringCondition("t.value", c, "tags."+c.Key, false)
			cond = `rm.name IN (SELECT t.name FROM registered_model_tags AS t WHERE t.key = ? AND ` + cond + `)`
			a = append([]any{c.Key}, a...)
		default:
			err = fmt.Errorf("%w: invalid entity %q in the filter; registered models are filtered by name and tags.<key>", ErrInvalid, c.Entity)
		}
		if err != nil {
			return nil, nil, err
		}
		conds, args = append(conds, cond), append(args, a...)
	}
	return conds, args, nil
}

// versionConditions translates filter clauses into conditions on
// model_versions AS mv.
func versionConditions(clauses []Clause) ([]string, []any, error) {
	var conds []string
	var args []any
	for _, c := range clauses {
		var cond string
		var a []any
		var err error
		switch c.Entity {
		case EntityAttribute:
			switch key := strings.ToLower(c.Key); key {
			case "name":
				cond, a, err = registryStringCondition("mv.name", c, key, false)
			case "run_id":
				cond, a, err = registryStringCondition("mv.run_id", c, key, true)
			case "source_path":
				cond, a, err = registryStringCondition("mv.source", c, key, false)
			case "version_number":
				cond, a, err = versionNumberCondition(c)
			default:
				err = fmt.Errorf("%w: invalid attribute key %q in the filter; model versions are filtered by name, version_number, run_id, source_path and tags.<key>", ErrInvalid, c.Key)
			}
		case EntityTag:
			cond, a, err = registryStringCondition("t.value", c, "tags."+c.Key, false)
			cond = `(mv.name, mv.version) IN (SELECT t.name, t.version FROM model_version_tags AS t WHERE t.key = ? AND ` + cond + `)`
			a = append([]any{c.Key}, a...)
		default:
			err = fmt.Errorf("%w: invalid entity %q in the filter; model versions are filtered by name, version_number, run_id, source_path and tags.<key>", ErrInvalid, c.Entity)
		}
		if err != nil {
			return nil, nil, err
		}
		conds, args = append(conds, cond), append(args, a...)
	}
	return conds, args, nil
}

// versionNumberCondition compares mv.version with an integer, given bare
// (version_number > 3) or quoted (version_number = '3').
func versionNumberCondition(c Clause) (string, []any, error) {
	switch c.Op {
	case "=", "!=", "<", "<=", ">", ">=":
	default:
		return "", nil, fmt.Errorf("%w: invalid comparator %s for version_number; use =, !=, <, <=, >, >=", ErrInvalid, c.Op)
	}
	var n float64
	switch c.Kind {
	case ValueNumber:
		n = c.Number
	case ValueString:
		v, err := strconv.ParseInt(strings.TrimSpace(c.String), 10, 64)
		if err != nil {
			return "", nil, fmt.Errorf("%w: version_number %s %q: the value is not an integer", ErrInvalid, c.Op, c.String)
		}
		n = float64(v)
	default:
		return "", nil, fmt.Errorf("%w: version_number takes one integer, not a list", ErrInvalid)
	}
	if n != math.Trunc(n) || math.Abs(n) > 1<<53 {
		return "", nil, fmt.Errorf("%w: version_number %s %v: the value is not an integer", ErrInvalid, c.Op, n)
	}
	return "mv.version " + c.Op + " ?", []any{int64(n)}, nil
}
