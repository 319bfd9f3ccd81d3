package mlflowserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"unicode"
)

// This file is the request-decoding layer. It reproduces what MLflow's
// handlers.py does before a handler runs (_get_request_message and
// _validate_param_against_schema): the request (a JSON body, or the query
// string of a GET) is checked against the endpoint's schema, parameter by
// parameter in the schema's order and, for each, check by check in order,
// so the first failure is the one MLflow reports, in MLflow's words:
//
//	Missing value for required parameter 'run_id'. See the API docs for more information about request parameters.
//	Invalid value "abc" for parameter 'max_results' supplied:  Hint: Value was of type 'str'. See the API docs for more information about request parameters.
//
// Types are named as Python names them (str, int, float, bool, list,
// dict), never as Go does.

// apiDocsHint ends every schema error, as MLflow's.
const apiDocsHint = " See the API docs for more information about request parameters."

type checkKind uint8

const (
	ckRequired checkKind = iota // present, not null, not ""
	ckString                    // a string
	ckInt                       // an integer, or a string holding one
	ckFloat                     // a number, or a string holding one ("NaN", "Infinity" too)
	ckBool                      // true or false
	ckArray                     // a list
	ckStrings                   // a list of strings
	ckRange                     // an integer in [min, max]
)

// check is one of handlers.py's assertions (_assert_required,
// _assert_string, _assert_intlike, …, or a range lambda).
type check struct {
	kind     checkKind
	min, max int64
	// msg is MLflow's own message for a failing range check; empty means
	// the generic "Invalid value … supplied" one.
	msg string
}

var (
	isRequired = check{kind: ckRequired}
	isString   = check{kind: ckString}
	isInt      = check{kind: ckInt}
	isFloat    = check{kind: ckFloat}
	isBool     = check{kind: ckBool}
	isArray    = check{kind: ckArray}
	isStrings  = check{kind: ckStrings}
)

// atMost is MLflow's lambda x: _assert_less_than_or_equal(int(x), n).
func atMost(n int64) check { return check{kind: ckRange, min: math.MinInt64, max: n} }

// within is a range check with MLflow's own message.
func within(lo, hi int64, msg string) check { return check{kind: ckRange, min: lo, max: hi, msg: msg} }

// param is one entry of an endpoint's schema. fields, when set, checks
// every element of a list of objects (or an object) in turn, with paths
// such as metrics[3].value.
type param struct {
	name   string
	checks []check
	fields []param
}

func p(name string, checks ...check) param { return param{name: name, checks: checks} }

// each is a list parameter whose elements are objects with fields.
func each(name string, fields ...param) param {
	return param{name: name, checks: []check{isArray}, fields: fields}
}

// obj is an object parameter with fields.
func obj(name string, fields ...param) param { return param{name: name, fields: fields} }

func (p param) required() bool {
	for _, c := range p.checks {
		if c.kind == ckRequired {
			return true
		}
	}
	return false
}

func missingValue(path string) error {
	return invalid("Missing value for required parameter '%s'.%s", path, apiDocsHint)
}

// invalidValue is MLflow's invalid_value(path, value, " Hint: Value was of
// type '…'.") with the API docs hint.
func invalidValue(path string, v any) error {
	return invalid("Invalid value %s for parameter '%s' supplied:  Hint: Value was of type '%s'.%s", pyJSON(v), path, pyType(v), apiDocsHint)
}

// pyJSON writes v as Python's json.dumps(v, sort_keys=True,
// separators=(",", ":")) does, near enough: compact, keys sorted.
func pyJSON(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return fmt.Sprint(v)
	}
	s := strings.TrimSuffix(b.String(), "\n")
	const limit = 250
	if len(s) > limit {
		s = s[:limit] + "…"
	}
	return s
}

// pyType names the Python type json.loads gives v.
func pyType(v any) string {
	switch x := v.(type) {
	case nil:
		return "NoneType"
	case string:
		return "str"
	case bool:
		return "bool"
	case json.Number:
		if strings.ContainsAny(string(x), ".eE") {
			return "float"
		}
		return "int"
	case float64:
		return "float"
	case []any:
		return "list"
	case map[string]any:
		return "dict"
	}
	return fmt.Sprintf("%T", v)
}

// intOf returns v as an integer as Python's int(x) would for the values
// MLflow's _assert_intlike accepts: an integral number or a string of
// digits.
func intOf(v any) (int64, bool) {
	switch x := v.(type) {
	case json.Number:
		if n, err := strconv.ParseInt(string(x), 10, 64); err == nil {
			return n, true
		}
		f, err := strconv.ParseFloat(string(x), 64)
		if err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<62 {
			return int64(f), true
		}
	case string:
		if n, err := strconv.ParseInt(strings.TrimSpace(x), 10, 64); err == nil {
			return n, true
		}
	}
	return 0, false
}

func floatOK(v any) bool {
	switch x := v.(type) {
	case json.Number:
		return true
	case string:
		switch strings.ToLower(strings.TrimSpace(x)) {
		case "nan", "inf", "-inf", "infinity", "-infinity", "+inf", "+infinity":
			return true
		}
		_, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return err == nil
	}
	return false
}

func (c check) apply(path string, v any) error {
	if c.kind == ckRequired {
		if v == nil || v == "" {
			return missingValue(path)
		}
		return nil
	}
	if v == nil {
		return nil // null is an absent field, as protobuf reads it
	}
	good := true
	switch c.kind {
	case ckString:
		_, good = v.(string)
	case ckInt:
		_, good = intOf(v)
	case ckFloat:
		good = floatOK(v)
	case ckBool:
		_, good = v.(bool)
	case ckArray:
		_, good = v.([]any)
	case ckStrings:
		list, _ := v.([]any)
		for _, e := range list {
			if _, ok := e.(string); !ok {
				good = false
			}
		}
	case ckRange:
		n, ok := intOf(v)
		if ok && (n < c.min || n > c.max) && c.msg != "" {
			return invalid("%s%s", c.msg, apiDocsHint)
		}
		good = ok && n >= c.min && n <= c.max
	}
	if !good {
		return invalidValue(path, v)
	}
	return nil
}

// validate checks o against schema, in order; prefix names the enclosing
// parameter ("metrics[2].").
func validate(o map[string]any, schema []param, prefix string) error {
	for _, p := range schema {
		v, present := o[p.name]
		if p.name == "run_id" && prefix == "" && v == nil {
			// The deprecated run_uuid stands in for run_id, as in MLflow.
			if u, ok := o["run_uuid"]; ok {
				v, present = u, true
			}
		}
		if !present && !p.required() {
			continue
		}
		path := prefix + p.name
		for _, c := range p.checks {
			if err := c.apply(path, v); err != nil {
				return err
			}
		}
		if len(p.fields) == 0 || v == nil {
			continue
		}
		switch x := v.(type) {
		case []any:
			for i, e := range x {
				eo, ok := e.(map[string]any)
				if !ok {
					return invalidValue(fmt.Sprintf("%s[%d]", path, i), e)
				}
				if err := validate(eo, p.fields, fmt.Sprintf("%s[%d].", path, i)); err != nil {
					return err
				}
			}
		case map[string]any:
			if err := validate(x, p.fields, path+"."); err != nil {
				return err
			}
		default:
			return invalidValue(path, v)
		}
	}
	return nil
}

// parseBody reads a JSON request body as MLflow does: empty is {}, and a
// body that is a JSON string holding JSON (what older clients send) is
// decoded twice. It returns the object and its JSON.
func parseBody(b []byte) (map[string]any, []byte, error) {
	if len(bytes.TrimSpace(b)) == 0 {
		return map[string]any{}, []byte("{}"), nil
	}
	v, err := decodeAny(b)
	if err != nil {
		return nil, nil, err
	}
	if s, isStr := v.(string); isStr {
		b = []byte(s)
		if v, err = decodeAny(b); err != nil {
			return nil, nil, err
		}
	}
	o, isObj := v.(map[string]any)
	if !isObj {
		return nil, nil, invalid("Invalid request body: MLflow's REST API takes a JSON object, got a JSON %s; send {\"parameter\": value, …}", jsonKind(v))
	}
	return o, b, nil
}

func decodeAny(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("data after the JSON value")
		}
	}
	if err != nil {
		var se *json.SyntaxError
		if errors.As(err, &se) {
			return nil, invalid("Malformed JSON in request body at byte %d: %v. Send a JSON object such as {\"run_id\": \"…\"}", se.Offset, se)
		}
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, invalid("Malformed JSON in request body: it ends early. Send a complete JSON object such as {\"run_id\": \"…\"}")
		}
		return nil, invalid("Malformed JSON in request body: %v. Send a JSON object such as {\"run_id\": \"…\"}", err)
	}
	return v, nil
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		return "number"
	case []any:
		return "array"
	}
	return "object"
}

// queryObject turns a GET request's query string into the object MLflow
// builds from it: parameters the schema lists as lists keep every value;
// others keep their first.
func queryObject(r *http.Request, schema []param) map[string]any {
	lists := map[string]bool{}
	for _, p := range schema {
		for _, c := range p.checks {
			if c.kind == ckArray || c.kind == ckStrings {
				lists[p.name] = true
			}
		}
	}
	o := map[string]any{}
	for k, vs := range r.URL.Query() {
		if lists[k] {
			l := make([]any, len(vs))
			for i, v := range vs {
				l[i] = v
			}
			o[k] = l
		} else if len(vs) > 0 {
			o[k] = vs[0]
		}
	}
	return o
}

// request decodes a request into v (a pointer to a struct of the
// endpoint's fields) after checking it against schema: a POST's JSON body,
// or a GET's query string. Unknown fields are ignored, as MLflow does.
func (s *Server) request(w http.ResponseWriter, r *http.Request, v any, schema ...param) error {
	var o map[string]any
	var raw []byte
	if r.Method == http.MethodGet {
		o = queryObject(r, schema)
		var err error
		if raw, err = json.Marshal(o); err != nil {
			return fmt.Errorf("encoding query: %w", err)
		}
	} else {
		if err := checkContentType(r); err != nil {
			return err
		}
		b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
		if err != nil {
			var mbe *http.MaxBytesError
			if errors.As(err, &mbe) {
				return err
			}
			return apiError{code: codeBadRequest, msg: "reading request body: " + err.Error(), err: err}
		}
		if o, raw, err = parseBody(b); err != nil {
			return err
		}
	}
	if err := validate(o, schema, ""); err != nil {
		return err
	}
	if v == nil {
		return nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return typeError(o, err)
	}
	return nil
}

// typeError turns what json.Unmarshal refused into MLflow's message,
// naming the parameter (not the Go type it was bound for).
func typeError(o map[string]any, err error) error {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) || te.Field == "" {
		return invalid("Invalid request body: %v", err)
	}
	// The decoder names an embedded struct (mlflowwire.Metric in
	// log-metric's request) in the path; MLflow's parameter names are
	// snake_case, never capitalised, so such a leading element is Go's.
	for head, rest, ok := strings.Cut(te.Field, "."); ok && head != "" && unicode.IsUpper(rune(head[0])); head, rest, ok = strings.Cut(rest, ".") {
		te.Field = rest
	}
	if v, ok := o[te.Field]; ok {
		return invalidValue(te.Field, v)
	}
	// A nested field: the decoder names the path without list indexes.
	if rv, perr := decodeAny([]byte(te.Value)); perr == nil {
		return invalidValue(te.Field, rv)
	}
	kind := map[string]string{"string": "str", "number": "float", "bool": "bool", "array": "list", "object": "dict"}[te.Value]
	if kind == "" {
		kind = te.Value
	}
	return invalid("Invalid value for parameter '%s' supplied:  Hint: Value was of type '%s'.%s", te.Field, kind, apiDocsHint)
}

// checkContentType refuses a JSON request sent as another media type, as
// MLflow's _validate_content_type does: a browser's form post (a cross-site
// request forgery) cannot send application/json. A request with no
// Content-Type at all is read as JSON (MLflow refuses it; see doc.go).
func checkContentType(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return nil
	}
	mt, _, _ := strings.Cut(ct, ";")
	if !strings.EqualFold(strings.TrimSpace(mt), "application/json") {
		return invalid("Bad Request. Content-Type must be one of ['application/json'].")
	}
	return nil
}
