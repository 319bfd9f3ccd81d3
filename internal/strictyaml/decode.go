package strictyaml

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Options says how strict a [Decoder] is and how it words its errors.
type Options struct {
	// File names the file in every error ("job.yaml"), "" when unknown.
	File string
	// Invalid is the sentinel every problem found in the file matches
	// (unknown key, wrong type, impossible value).
	Invalid error
	// Syntax is the sentinel a file that is not well-formed YAML matches;
	// its text starts the message ("job file is not valid YAML: ...").
	Syntax error
	// Empty is the sentinel a file without a document matches.
	Empty error
	// TooLarge is the sentinel a file larger than MaxSize matches.
	TooLarge error
	// MaxSize is the largest file decoded, in bytes.
	MaxSize int
	// MergeKeys allows YAML's "<<" merge keys; without it they are
	// problems.
	MergeKeys bool
	// FreePrefix, when set, makes top-level keys that start with it free
	// (as "x-" in Compose files, to hold anchors): they are not decoded.
	FreePrefix string
	// Synonym maps a [Normalize]d word people write out of habit to the
	// key they meant, for "did you mean" hints; nil knows none.
	Synonym func(string) string
	// DurationHint completes "a duration with a unit such as ..."; the
	// default is `"90s" or "10m"`.
	DurationHint string
}

// Decoder walks a YAML node tree strictly (unknown and duplicate keys and
// wrong types are problems), recording the position of each key and
// collecting every problem instead of stopping at the first. It is for one
// file and one goroutine.
type Decoder struct {
	// Problems holds what the decoder found and the position of every key.
	*Problems
	opts Options
	// bad holds the paths whose value could not be decoded, so that
	// validation does not repeat the problem.
	bad map[string]bool
	// merges counts keys pulled in through "<<" merge keys, bounded so that
	// nested merges of aliases cannot blow up.
	merges      int
	mergeFailed bool
}

const (
	maxMerges     = 10_000
	maxAliasChain = 100
	maxMergeDepth = 16
)

// NewDecoder returns a Decoder for one file.
func NewDecoder(opts Options) *Decoder {
	if opts.DurationHint == "" {
		opts.DurationHint = `"90s" or "10m"`
	}
	return &Decoder{Problems: NewProblems(opts.File, opts.Invalid), opts: opts, bad: map[string]bool{}}
}

// Document decodes data's single YAML document and returns its root node,
// or nil and the error that ends decoding: too large, not YAML, more than
// one document, or empty (a null document counts as empty). emptyHint
// follows the empty error, naming a file to start from.
func (d *Decoder) Document(data []byte, emptyHint string) (*yaml.Node, error) {
	o := d.opts
	if o.MaxSize > 0 && len(data) > o.MaxSize {
		return nil, d.wrap(fmt.Errorf("%w: more than %d bytes", o.TooLarge, o.MaxSize))
	}
	empty := func() error { return d.wrap(fmt.Errorf("%w; %s", o.Empty, emptyHint)) }
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, empty()
		}
		return nil, d.SyntaxError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, d.SyntaxError(err)
	default:
		return nil, &Error{File: o.File, Line: extra.Line, Column: extra.Column, Kind: o.Invalid,
			Msg: "a file holds one YAML document; remove the second one (after \"---\") or split it into its own file"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, empty()
		}
		root = root.Content[0]
	}
	if r := d.Resolve("", root); r == nil || IsNull(r) {
		if err := d.Err(); err != nil {
			return nil, err
		}
		return nil, empty()
	}
	return root, nil
}

// wrap prefixes err with the file's name, when known.
func (d *Decoder) wrap(err error) error {
	if d.opts.File == "" {
		return err
	}
	return fmt.Errorf("%s: %w", d.opts.File, err)
}

// SyntaxError turns a YAML syntax error into an [*Error] matching
// Options.Syntax, at the line it names. yaml/v3 reports the parser's (not
// the scanner's) problems, those that start with "did not find expected" or
// "found undefined", one line too early: it prints a 0-based line there.
// This puts them on the line where the unclosed collection or bad node
// starts.
func (d *Decoder) SyntaxError(err error) error {
	msg, ok := strings.CutPrefix(err.Error(), "yaml: ")
	if !ok {
		return d.wrap(fmt.Errorf("%w: %w", d.opts.Syntax, err))
	}
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if n, after, ok := strings.Cut(rest, ": "); ok {
			if v, err := strconv.Atoi(n); err == nil {
				line, msg = v, after
			}
		}
	}
	if strings.HasPrefix(msg, "did not find expected") || strings.HasPrefix(msg, "found undefined") {
		line++
	}
	return &Error{File: d.opts.File, Line: line, Kind: d.opts.Syntax, Msg: d.opts.Syntax.Error() + ": " + msg}
}

// PosOfNode returns n's position.
func PosOfNode(n *yaml.Node) Pos {
	if n == nil {
		return Pos{}
	}
	return Pos{n.Line, n.Column}
}

// SetPos records that path is present in the file, at n.
func (d *Decoder) SetPos(path string, n *yaml.Node) {
	if n != nil && n.Line > 0 {
		d.Keys[path] = PosOfNode(n)
	}
}

// Fail records a problem with the value at path (n, or path's position when
// n is nil): "path: " + the formatted text. Validation then leaves path
// alone ([Decoder.Bad]).
func (d *Decoder) Fail(path string, n *yaml.Node, format string, args ...any) {
	d.bad[path] = true
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	at := PosOfNode(n)
	if at.Line == 0 {
		at = d.PosOf(path)
	}
	d.AddAt(at, path, msg)
}

// MarkBad records that path's value could not be decoded, without a
// message (one was recorded elsewhere).
func (d *Decoder) MarkBad(path string) { d.bad[path] = true }

// Bad reports whether path, or a key above it, failed to decode: a
// validation problem about it would only repeat that error ("rounds:
// missing" after "rounds: not an integer").
func (d *Decoder) Bad(path string) bool {
	for b := range d.bad {
		if path == b || strings.HasPrefix(path, b+".") {
			return true
		}
	}
	return false
}

// Check records a validation problem about path unless its key already
// failed to decode.
func (d *Decoder) Check(path, format string, args ...any) {
	if d.Bad(path) {
		return
	}
	d.Add(path, format, args...)
}

// Resolve follows aliases; it returns nil (after recording a problem) when
// the chain is broken or too long.
func (d *Decoder) Resolve(path string, n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i >= maxAliasChain || n.Alias == nil {
			d.Fail(path, n, "alias *%s cannot be resolved; define its anchor &%[1]s first", n.Value)
			return nil
		}
		n = n.Alias
	}
	return n
}

// IsNull reports whether n is YAML's null (~, null, or nothing).
func IsNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// Join returns the dotted path of key under path.
func Join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// Field is one known key of a mapping and the function that decodes its
// value (never null: null counts as absent).
type Field struct {
	Key string
	Dec func(path string, v *yaml.Node)
}

// keyed is one key/value pair of a mapping.
type keyed struct {
	key, val *yaml.Node
}

// merged marks pairs that came through a merge key: their key node is
// copied with this tag so that duplicates with explicit keys are not
// reported.
func (kv keyed) merged() bool { return kv.key.Tag == mergedTag }

const mergedTag = "!cohort/merged"

// Mapping decodes a mapping node against its known fields: unknown,
// duplicate and non-scalar keys are problems (an unknown key's message
// suggests the closest known one); "<<" merge keys are honoured when
// [Options.MergeKeys] allows them (explicit keys win, then the first merged
// source). Null values count as absent. example shows a valid mapping.
func (d *Decoder) Mapping(path string, n *yaml.Node, example string, fields []Field) {
	n = d.Resolve(path, n)
	if n == nil || IsNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.Fail(path, n, "expected a mapping of keys, such as %s, not %s", example, Describe(n))
		return
	}
	seen := map[string]int{}
	for _, kv := range d.pairs(path, n, 0) {
		k := kv.key
		if k.Kind != yaml.ScalarNode {
			d.Fail(path, k, "keys must be plain words such as %q, not %s", fields[0].Key, Describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			// Explicit keys come first; a merged key they already set
			// gives way silently, as YAML's merge says.
			if !kv.merged() {
				d.AddAt(PosOfNode(k), Join(path, k.Value), fmt.Sprintf("duplicate key %q%s (first at line %d); remove one", k.Value, in(path), first))
			}
			continue
		}
		seen[k.Value] = k.Line
		var f *Field
		for i := range fields {
			if fields[i].Key == k.Value {
				f = &fields[i]
				break
			}
		}
		if f == nil {
			if path == "" && d.opts.FreePrefix != "" && strings.HasPrefix(k.Value, d.opts.FreePrefix) {
				continue
			}
			d.unknown(path, k, fields)
			continue
		}
		p := Join(path, k.Value)
		v := d.Resolve(p, kv.val)
		if v == nil || IsNull(v) {
			continue
		}
		d.SetPos(p, k)
		f.Dec(p, v)
	}
}

// pairs lists a mapping's pairs: explicit ones first, then those pulled in
// by "<<" merge keys (or a problem, when merges are not allowed).
func (d *Decoder) pairs(path string, n *yaml.Node, depth int) []keyed {
	var explicit, merged []keyed
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!merge" {
			explicit = append(explicit, keyed{k, v})
			continue
		}
		if !d.opts.MergeKeys {
			d.Fail(path, k, "merge keys (<<) are not supported here; write the keys out")
			continue
		}
		v = d.Resolve(path, v)
		if v == nil {
			continue
		}
		srcs := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			srcs = v.Content
		}
		for _, src := range srcs {
			src = d.Resolve(path, src)
			switch {
			case src == nil:
			case src.Kind != yaml.MappingNode:
				d.Fail(path, k, "<< merges mappings only, not %s; use << *anchor of a mapping", Describe(src))
			case depth >= maxMergeDepth || d.merges >= maxMerges:
				if !d.mergeFailed {
					d.Fail(path, k, "<< merges are nested too deeply; write the keys out")
				}
				d.mergeFailed = true
				return explicit
			default:
				for _, kv := range d.pairs(path, src, depth+1) {
					d.merges++
					mk := *kv.key
					mk.Tag = mergedTag
					merged = append(merged, keyed{&mk, kv.val})
				}
			}
		}
	}
	return append(explicit, merged...)
}

// in names the mapping a key is in, for messages.
func in(path string) string {
	if path == "" {
		return " at the top level"
	}
	return " in " + path
}

func (d *Decoder) unknown(path string, k *yaml.Node, fields []Field) {
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.Key
	}
	msg := fmt.Sprintf("unknown key %q%s", k.Value, in(path))
	if c := Closest(k.Value, known, d.opts.Synonym); c != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", c)
	} else {
		msg += "; known keys: " + strings.Join(known, ", ")
	}
	p := Join(path, k.Value)
	d.bad[p] = true
	d.AddAt(PosOfNode(k), p, msg)
}

// Describe names a node for messages: "a mapping", "a list" or the quoted
// (shortened) scalar.
func Describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:37] + "..."
		}
		return strconv.Quote(v)
	}
	return "this"
}

// HasKey reports whether mapping n has key k written out (with any value).
func HasKey(n *yaml.Node, k string) bool {
	if n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if c := n.Content[i]; c.Kind == yaml.ScalarNode && c.Value == k {
			return true
		}
	}
	return false
}

// Scalar reports whether n is a scalar, recording "expected want" when it
// is not.
func (d *Decoder) Scalar(path string, n *yaml.Node, want string) bool {
	if n.Kind != yaml.ScalarNode {
		d.Fail(path, n, "expected %s, not %s", want, Describe(n))
		return false
	}
	return true
}

// Str decodes a string.
func (d *Decoder) Str(path string, n *yaml.Node, out *string) {
	if d.Scalar(path, n, "a string") {
		*out = n.Value
	}
}

// Bool decodes true or false.
func (d *Decoder) Bool(path string, n *yaml.Node, out *bool) {
	if !d.Scalar(path, n, "true or false") {
		return
	}
	var v bool
	if n.ShortTag() != "!!bool" || n.Decode(&v) != nil {
		d.Fail(path, n, "%s is not true or false", Describe(n))
		return
	}
	*out = v
}

// Int64 decodes a whole number, reporting whether it did.
func (d *Decoder) Int64(path string, n *yaml.Node, out *int64) bool {
	if !d.Scalar(path, n, "an integer") {
		return false
	}
	if n.ShortTag() != "!!int" {
		if n.ShortTag() == "!!float" && strings.Trim(n.Value, "+-0123456789_") == "" {
			// yaml resolves digits beyond int64 as a float.
			d.Fail(path, n, "%s does not fit in a 64-bit integer", Describe(n))
		} else {
			d.Fail(path, n, "%s is not an integer; write a whole number such as 10", Describe(n))
		}
		return false
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		d.Fail(path, n, "%s does not fit in a 64-bit integer", Describe(n))
		return false
	}
	*out = v
	return true
}

// Int decodes a whole number that fits an int, reporting whether it did.
func (d *Decoder) Int(path string, n *yaml.Node, out *int) bool {
	var v int64
	if !d.Int64(path, n, &v) {
		return false
	}
	if int64(int(v)) != v {
		d.Fail(path, n, "%d is too large", v)
		return false
	}
	*out = int(v)
	return true
}

// Float decodes a finite number, reporting whether it did.
func (d *Decoder) Float(path string, n *yaml.Node, out *float64) bool {
	if !d.Scalar(path, n, "a number") {
		return false
	}
	if t := n.ShortTag(); t != "!!float" && t != "!!int" {
		d.Fail(path, n, "%s is not a number; write one such as 0.05", Describe(n))
		return false
	}
	var v float64
	if err := n.Decode(&v); err != nil {
		d.Fail(path, n, "%s is not a number; write one such as 0.05", Describe(n))
		return false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		d.Fail(path, n, "%s is not a finite number; write one such as 0.05", Describe(n))
		return false
	}
	*out = v
	return true
}

// Duration decodes a Go duration with its unit ("90s", "10m").
func (d *Decoder) Duration(path string, n *yaml.Node, out *time.Duration) {
	want := "a duration with a unit such as " + d.opts.DurationHint
	if !d.Scalar(path, n, want) {
		return
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		d.Fail(path, n, "%s is not %s", Describe(n), want)
		return
	}
	*out = v
}

// List decodes a sequence, calling item for each element (aliases
// resolved) with its path ("path.0", "path.1", …); it reports whether n
// was a list.
func (d *Decoder) List(path string, n *yaml.Node, example string, item func(path string, v *yaml.Node)) bool {
	if n.Kind != yaml.SequenceNode {
		d.Fail(path, n, "expected a list such as %s, not %s", example, Describe(n))
		return false
	}
	for i, e := range n.Content {
		p := Join(path, strconv.Itoa(i))
		d.SetPos(p, e)
		if e = d.Resolve(p, e); e == nil {
			continue
		}
		item(p, e)
	}
	return true
}

// Ints decodes a list of whole numbers.
func (d *Decoder) Ints(path string, n *yaml.Node, example string, out *[]int) {
	vs := []int{}
	if d.List(path, n, example, func(p string, v *yaml.Node) {
		var x int
		if d.Int(p, v, &x) {
			vs = append(vs, x)
		}
	}) {
		*out = vs
	}
}

// Strs decodes a list of strings; a null item is "".
func (d *Decoder) Strs(path string, n *yaml.Node, example string, out *[]string) {
	vs := []string{}
	if d.List(path, n, example, func(p string, v *yaml.Node) {
		switch {
		case !d.Scalar(p, v, "a string"):
		case IsNull(v):
			vs = append(vs, "")
		default:
			vs = append(vs, v.Value)
		}
	}) {
		*out = vs
	}
}

// StrMap decodes a mapping of free-form keys (such as keyExample) to
// strings; a null value is "".
func (d *Decoder) StrMap(path string, n *yaml.Node, example, keyExample string, out *map[string]string) {
	if n.Kind != yaml.MappingNode {
		d.Fail(path, n, "expected a mapping such as %s, not %s", example, Describe(n))
		return
	}
	m := map[string]string{}
	seen := map[string]int{}
	for _, kv := range d.pairs(path, n, 0) {
		if kv.key.Kind != yaml.ScalarNode || kv.key.Value == "" {
			d.Fail(path, kv.key, "keys must be names such as %s, not %s", keyExample, Describe(kv.key))
			continue
		}
		k := kv.key.Value
		p := Join(path, k)
		if first, dup := seen[k]; dup {
			if !kv.merged() {
				d.AddAt(PosOfNode(kv.key), p, fmt.Sprintf("duplicate key %q in %s (first at line %d); remove one", k, path, first))
			}
			continue
		}
		seen[k] = kv.key.Line
		d.SetPos(p, kv.key)
		v := d.Resolve(p, kv.val)
		if v == nil || !d.Scalar(p, v, "a string") {
			continue
		}
		if IsNull(v) {
			m[k] = ""
		} else {
			m[k] = v.Value
		}
	}
	*out = m
}
