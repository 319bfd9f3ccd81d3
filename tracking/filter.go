package tracking

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// EntityType is what a filter or order-by clause compares: a run's metric,
// param or tag, an attribute of the run (or experiment) itself, or a
// dataset input.
type EntityType string

// The entity types, as MLflow's search grammar names them (singular).
const (
	EntityMetric    EntityType = "metric"
	EntityParam     EntityType = "parameter"
	EntityTag       EntityType = "tag"
	EntityAttribute EntityType = "attribute"
	EntityDataset   EntityType = "dataset"
)

// Clause is one comparison of a filter: Entity.Key Op Value, e.g.
// metrics.acc > 0.5. Exactly one of Number, String and List is meaningful,
// as Kind says.
type Clause struct {
	Entity EntityType
	Key    string
	Op     string // =, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN (upper case)
	Kind   ValueKind
	Number float64
	String string
	List   []string
}

// ValueKind is the kind of a clause's value.
type ValueKind int

// The kinds of value a clause compares with.
const (
	ValueNumber ValueKind = iota
	ValueString
	ValueList
)

// OrderBy is one parsed order-by clause, e.g. metrics.acc DESC.
type OrderBy struct {
	Entity    EntityType
	Key       string
	Ascending bool
}

// maxFilterLength bounds a filter string, so a hostile one costs little.
const maxFilterLength = 100_000

// ParseFilter parses MLflow's search filter: comparisons joined by AND
// (case-insensitive; OR is not part of the grammar), each
// <entity>.<key> <op> <value> where the entity is metrics/metric,
// params/param/parameters/parameter, tags/tag, attributes/attribute/attr/run
// or datasets/dataset; a bare key is an attribute. Keys may be quoted with
// backquotes or double quotes; strings with single or double quotes;
// numbers are decimal; IN and NOT IN take a parenthesised list of strings.
// The empty filter is no clause. Errors are [ErrInvalid] and say where.
func ParseFilter(filter string) ([]Clause, error) {
	if len(filter) > maxFilterLength {
		return nil, fmt.Errorf("%w: filter is %d bytes long; the limit is %d", ErrInvalid, len(filter), maxFilterLength)
	}
	if !utf8.ValidString(filter) {
		return nil, fmt.Errorf("%w: filter is not valid UTF-8", ErrInvalid)
	}
	p := &parser{src: filter}
	var out []Clause
	p.skip()
	if p.eof() {
		return nil, nil
	}
	for {
		c, err := p.clause()
		if err != nil {
			return nil, fmt.Errorf("%w: filter %.200q: %v", ErrInvalid, filter, err)
		}
		out = append(out, c)
		p.skip()
		if p.eof() {
			return out, nil
		}
		w := p.word()
		if !strings.EqualFold(w, "and") {
			if strings.EqualFold(w, "or") {
				return nil, fmt.Errorf("%w: filter %.200q: OR is not supported; only AND joins comparisons, as in MLflow", ErrInvalid, filter)
			}
			return nil, fmt.Errorf("%w: filter %.200q: expected AND at offset %d, got %q", ErrInvalid, filter, p.pos, w)
		}
		p.skip()
	}
}

// ParseOrderBy parses MLflow order-by clauses such as "metrics.acc DESC",
// "params.algo", "attributes.start_time ASC", "`tags`.`my tag`".
func ParseOrderBy(clauses []string) ([]OrderBy, error) {
	var out []OrderBy
	for _, s := range clauses {
		p := &parser{src: s}
		p.skip()
		ent, key, err := p.identifier()
		if err != nil {
			return nil, fmt.Errorf("%w: order_by %.200q: %v", ErrInvalid, s, err)
		}
		o := OrderBy{Entity: ent, Key: key, Ascending: true}
		p.skip()
		if !p.eof() {
			switch w := p.word(); strings.ToUpper(w) {
			case "ASC":
			case "DESC":
				o.Ascending = false
			default:
				return nil, fmt.Errorf("%w: order_by %.200q: expected ASC or DESC, got %q", ErrInvalid, s, w)
			}
			p.skip()
			if !p.eof() {
				return nil, fmt.Errorf("%w: order_by %.200q: unexpected text at offset %d", ErrInvalid, s, p.pos)
			}
		}
		out = append(out, o)
	}
	return out, nil
}

type parser struct {
	src string
	pos int
}

func (p *parser) eof() bool { return p.pos >= len(p.src) }

func (p *parser) skip() {
	for p.pos < len(p.src) {
		r, n := utf8.DecodeRuneInString(p.src[p.pos:])
		if !unicode.IsSpace(r) {
			return
		}
		p.pos += n
	}
}

// word reads a run of letters, digits, '_' and '.'.
func (p *parser) word() string {
	start := p.pos
	for p.pos < len(p.src) {
		r, n := utf8.DecodeRuneInString(p.src[p.pos:])
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '.') {
			break
		}
		p.pos += n
	}
	return p.src[start:p.pos]
}

// quoted reads a string quoted with q (the opening quote is at pos); a
// backslash escapes the next character, and a doubled quote is one quote.
func (p *parser) quoted() (string, error) {
	q := p.src[p.pos]
	start := p.pos
	p.pos++
	var b strings.Builder
	for p.pos < len(p.src) {
		c := p.src[p.pos]
		switch {
		case c == '\\' && p.pos+1 < len(p.src):
			b.WriteByte(p.src[p.pos+1])
			p.pos += 2
		case c == q && p.pos+1 < len(p.src) && p.src[p.pos+1] == q:
			b.WriteByte(q)
			p.pos += 2
		case c == q:
			p.pos++
			return b.String(), nil
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
	return "", fmt.Errorf("unterminated quote starting at offset %d", start)
}

var entityNames = map[string]EntityType{
	"metric": EntityMetric, "metrics": EntityMetric,
	"param": EntityParam, "params": EntityParam, "parameter": EntityParam, "parameters": EntityParam,
	"tag": EntityTag, "tags": EntityTag,
	"attribute": EntityAttribute, "attributes": EntityAttribute, "attr": EntityAttribute, "run": EntityAttribute,
	"dataset": EntityDataset, "datasets": EntityDataset,
}

// identifier reads entity.key, or a bare key (an attribute).
func (p *parser) identifier() (EntityType, string, error) {
	part := func() (string, bool, error) {
		if p.eof() {
			return "", false, fmt.Errorf("expected an identifier at offset %d", p.pos)
		}
		switch p.src[p.pos] {
		case '`', '"':
			s, err := p.quoted()
			return s, true, err
		}
		start := p.pos
		for p.pos < len(p.src) {
			r, n := utf8.DecodeRuneInString(p.src[p.pos:])
			if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_') {
				break
			}
			p.pos += n
		}
		if p.pos == start {
			return "", false, fmt.Errorf("expected an identifier at offset %d", p.pos)
		}
		return p.src[start:p.pos], false, nil
	}
	first, quotedFirst, err := part()
	if err != nil {
		return "", "", err
	}
	if p.pos < len(p.src) && p.src[p.pos] == '.' {
		ent, ok := entityNames[strings.ToLower(first)]
		if !ok || quotedFirst {
			return "", "", fmt.Errorf("unknown entity %q; use metrics, params, tags, attributes or datasets", first)
		}
		p.pos++
		if p.eof() {
			return "", "", fmt.Errorf("expected a key after %q", first+".")
		}
		var key string
		switch p.src[p.pos] {
		case '`', '"':
			if key, err = p.quoted(); err != nil {
				return "", "", err
			}
		default:
			// An unquoted key runs to the next space or operator; it may hold dots.
			start := p.pos
			for p.pos < len(p.src) {
				r, n := utf8.DecodeRuneInString(p.src[p.pos:])
				if unicode.IsSpace(r) || strings.ContainsRune("=!<>(),'\"`", r) {
					break
				}
				p.pos += n
			}
			key = p.src[start:p.pos]
		}
		if key == "" {
			return "", "", fmt.Errorf("empty key after %q", first+".")
		}
		return ent, key, nil
	}
	return EntityAttribute, first, nil
}

func (p *parser) clause() (Clause, error) {
	ent, key, err := p.identifier()
	if err != nil {
		return Clause{}, err
	}
	c := Clause{Entity: ent, Key: key}
	p.skip()
	if c.Op, err = p.operator(); err != nil {
		return Clause{}, err
	}
	p.skip()
	if p.eof() {
		return Clause{}, fmt.Errorf("expected a value after %s.%s %s", ent, key, c.Op)
	}
	switch ch := p.src[p.pos]; {
	case c.Op == "IN" || c.Op == "NOT IN":
		if ch != '(' {
			return Clause{}, fmt.Errorf("%s takes a parenthesised list of quoted strings, at offset %d", c.Op, p.pos)
		}
		p.pos++
		c.Kind = ValueList
		for {
			p.skip()
			if p.eof() || (p.src[p.pos] != '\'' && p.src[p.pos] != '"') {
				return Clause{}, fmt.Errorf("expected a quoted string in the %s list at offset %d", c.Op, p.pos)
			}
			s, err := p.quoted()
			if err != nil {
				return Clause{}, err
			}
			c.List = append(c.List, s)
			p.skip()
			if p.eof() {
				return Clause{}, fmt.Errorf("unterminated %s list", c.Op)
			}
			if p.src[p.pos] == ',' {
				p.pos++
				continue
			}
			if p.src[p.pos] == ')' {
				p.pos++
				break
			}
			return Clause{}, fmt.Errorf("expected ',' or ')' in the %s list at offset %d", c.Op, p.pos)
		}
	case ch == '\'' || ch == '"':
		if c.String, err = p.quoted(); err != nil {
			return Clause{}, err
		}
		c.Kind = ValueString
	default:
		start := p.pos
		for p.pos < len(p.src) && strings.IndexByte("+-.0123456789eE", p.src[p.pos]) >= 0 {
			p.pos++
		}
		num := p.src[start:p.pos]
		f, err := strconv.ParseFloat(num, 64)
		if err != nil || num == "" {
			return Clause{}, fmt.Errorf("expected a number or a quoted string at offset %d (strings take quotes: 'fedavg')", start)
		}
		c.Kind, c.Number = ValueNumber, f
	}
	return c, nil
}

func (p *parser) operator() (string, error) {
	for _, op := range []string{"!=", "<=", ">=", "=", "<", ">"} {
		if strings.HasPrefix(p.src[p.pos:], op) {
			p.pos += len(op)
			return op, nil
		}
	}
	save := p.pos
	switch w := strings.ToUpper(p.word()); w {
	case "LIKE", "ILIKE", "IN":
		return w, nil
	case "NOT":
		p.skip()
		if strings.ToUpper(p.word()) == "IN" {
			return "NOT IN", nil
		}
	}
	return "", fmt.Errorf("expected a comparison (=, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN) at offset %d", save)
}
