package deploy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// readFile reads a project or config file, bounded by [MaxFileSize].
func readFile(what, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", what, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("loading %s %s: %w", what, path, err)
	}
	return data, nil
}

// decoder walks a YAML node tree, recording each key's line and collecting
// every problem instead of stopping at the first. It is strict: unknown and
// duplicate keys and wrong types are problems.
type decoder struct {
	p problems
	// bad holds the paths whose value could not be decoded, so that
	// validation does not repeat the problem.
	bad map[string]bool
}

const maxAliasChain = 100

// document decodes data's single YAML document and returns its root node,
// or nil and the error that ends parsing (syntax, empty, too large).
// example names a file to start from, for the empty case.
func (d *decoder) document(data []byte, example string) (*yaml.Node, error) {
	file := d.p.file
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: %w: more than %d bytes", file, ErrTooLarge, MaxFileSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %w; %s", file, ErrEmpty, example)
		}
		return nil, syntaxError(file, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(file, err)
	default:
		return nil, &FieldError{File: file, Line: extra.Line, Msg: "a file holds one YAML document; remove the second one (after \"---\")"}
	}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, fmt.Errorf("%s: %w; %s", file, ErrEmpty, example)
		}
		root = root.Content[0]
	}
	if r := d.resolve("", root); r == nil || isNull(r) {
		if err := d.p.err(); err != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w; %s", file, ErrEmpty, example)
	}
	return root, nil
}

// syntaxError wraps a YAML syntax error in [ErrSyntax] as "file:line:
// problem", moving yaml/v3's parser errors (reported one line early) to
// their line.
func syntaxError(file string, err error) error {
	msg, ok := strings.CutPrefix(err.Error(), "yaml: ")
	if !ok {
		return fmt.Errorf("%s: %w: %w", file, ErrSyntax, err)
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
	if line == 0 {
		return fmt.Errorf("%s: %w: %s", file, ErrSyntax, msg)
	}
	return fmt.Errorf("%s:%d: %w: %s", file, line, ErrSyntax, msg)
}

// fail records a problem with the value at path.
func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) {
	d.bad[path] = true
	line := 0
	if n != nil {
		line = n.Line
	}
	if line == 0 {
		line = d.p.lineOf(path)
	}
	d.p.addAt(line, path, format, args...)
}

func (d *decoder) badPath(path string) bool {
	for b := range d.bad {
		if path == b || strings.HasPrefix(path, b+".") {
			return true
		}
	}
	return false
}

// check records a validation problem unless its key already failed to
// decode.
func (d *decoder) check(path, format string, args ...any) {
	if d.badPath(path) {
		return
	}
	d.p.add(path, format, args...)
}

// resolve follows aliases; it returns nil (after recording a problem) when
// the chain is broken or too long.
func (d *decoder) resolve(path string, n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode; i++ {
		if i >= maxAliasChain || n.Alias == nil {
			d.fail(path, n, "alias *%s cannot be resolved; define its anchor &%[1]s first", n.Value)
			return nil
		}
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// field decodes the value of one known key.
type field struct {
	key string
	dec func(path string, v *yaml.Node)
}

// mapping decodes a mapping node against its known fields. Null values
// count as absent.
func (d *decoder) mapping(path string, n *yaml.Node, example string, fields []field) {
	n = d.resolve(path, n)
	if n == nil || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "expected a mapping of keys, such as %s, not %s", example, describe(n))
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.fail(path, k, "keys must be plain words such as %q, not %s", fields[0].key, describe(k))
			continue
		}
		if k.ShortTag() == "!!merge" {
			d.fail(path, k, "merge keys (<<) are not supported here; write the keys out")
			continue
		}
		p := join(path, k.Value)
		if first, dup := seen[k.Value]; dup {
			d.p.addAt(k.Line, p, "duplicate key %q%s (first at line %d); remove one", k.Value, in(path), first)
			continue
		}
		seen[k.Value] = k.Line
		var f *field
		for i := range fields {
			if fields[i].key == k.Value {
				f = &fields[i]
				break
			}
		}
		if f == nil {
			d.unknown(path, k, fields)
			continue
		}
		v := d.resolve(p, val)
		if v == nil || isNull(v) {
			continue
		}
		d.p.lines[p] = k.Line
		f.dec(p, v)
	}
}

// in names the mapping a key is in, for messages.
func in(path string) string {
	if path == "" {
		return " at the top level"
	}
	return " in " + path
}

func (d *decoder) unknown(path string, k *yaml.Node, fields []field) {
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.key
	}
	p := join(path, k.Value)
	d.bad[p] = true
	if c := closest(k.Value, known); c != "" {
		d.p.addAt(k.Line, p, "unknown key %q%s (did you mean %q?)", k.Value, in(path), c)
		return
	}
	d.p.addAt(k.Line, p, "unknown key %q%s; known keys: %s", k.Value, in(path), strings.Join(known, ", "))
}

// describe names a node's kind for messages.
func describe(n *yaml.Node) string {
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

func (d *decoder) scalar(path string, n *yaml.Node, want string) bool {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n, "expected %s, not %s", want, describe(n))
		return false
	}
	return true
}

func (d *decoder) str(path string, n *yaml.Node, out *string) {
	if d.scalar(path, n, "a string") {
		*out = n.Value
	}
}

func (d *decoder) bool(path string, n *yaml.Node, out *bool) {
	if !d.scalar(path, n, "true or false") {
		return
	}
	if n.ShortTag() != "!!bool" {
		d.fail(path, n, "%s is not true or false", describe(n))
		return
	}
	var v bool
	if err := n.Decode(&v); err != nil {
		d.fail(path, n, "%s is not true or false", describe(n))
		return
	}
	*out = v
}

func (d *decoder) int(path string, n *yaml.Node, out *int) bool {
	if !d.scalar(path, n, "an integer") {
		return false
	}
	if n.ShortTag() != "!!int" {
		d.fail(path, n, "%s is not an integer; write a whole number such as 0", describe(n))
		return false
	}
	var v int
	if err := n.Decode(&v); err != nil {
		d.fail(path, n, "%s does not fit in an integer", describe(n))
		return false
	}
	*out = v
	return true
}

func (d *decoder) duration(path string, n *yaml.Node, out *time.Duration) {
	const want = "a duration with a unit such as \"90s\", \"10m\" or \"8760h\""
	if !d.scalar(path, n, want) {
		return
	}
	v, err := time.ParseDuration(n.Value)
	if err != nil {
		d.fail(path, n, "%s is not %s", describe(n), want)
		return
	}
	*out = v
}

// list decodes a sequence, calling item for each element with its path.
func (d *decoder) list(path string, n *yaml.Node, example string, item func(path string, v *yaml.Node)) bool {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n, "expected a list, such as %s, not %s", example, describe(n))
		return false
	}
	for i, e := range n.Content {
		p := join(path, strconv.Itoa(i))
		e = d.resolve(p, e)
		if e == nil {
			continue
		}
		if e.Line > 0 {
			d.p.lines[p] = e.Line
		}
		item(p, e)
	}
	return true
}

func (d *decoder) strList(path string, n *yaml.Node, example string, out *[]string) {
	list := []string{}
	if d.list(path, n, example, func(p string, v *yaml.Node) {
		var s string
		d.str(p, v, &s)
		list = append(list, s)
	}) {
		*out = list
	}
}

func (d *decoder) intList(path string, n *yaml.Node, example string, out *[]int) {
	list := []int{}
	if d.list(path, n, example, func(p string, v *yaml.Node) {
		var x int
		if d.int(p, v, &x) {
			list = append(list, x)
		}
	}) {
		*out = list
	}
}

// strMap decodes a mapping of free-form keys to strings.
func (d *decoder) strMap(path string, n *yaml.Node, example string, out *map[string]string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "expected a mapping, such as %s, not %s", example, describe(n))
		return
	}
	m := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Value == "" {
			d.fail(path, k, "keys must be names such as fashion-mnist, not %s", describe(k))
			continue
		}
		p := join(path, k.Value)
		if _, dup := m[k.Value]; dup {
			d.p.addAt(k.Line, p, "duplicate key %q%s; remove one", k.Value, in(path))
			continue
		}
		d.p.lines[p] = k.Line
		v = d.resolve(p, v)
		if v == nil {
			continue
		}
		var s string
		d.str(p, v, &s)
		m[k.Value] = s
	}
	*out = m
}
