package job

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Load reads the job file at path and returns it parsed, defaulted and
// validated, as [Parse] does.
func Load(path string) (*Spec, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loading job: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("loading job %s: %w", path, err)
	}
	s, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("loading job %s: %w", path, err)
	}
	return s, nil
}

// Parse decodes a YAML job, fills in the defaults ([Spec.ApplyDefaults]) and
// validates it ([Spec.Validate]). Every problem is reported at once, joined
// with [errors.Join]; each is a [*FieldError] (matching [ErrInvalid]) that
// names the line, the key and the fix. Unknown keys are errors that suggest
// the closest known key; wrong types name the expected type. Anchors, aliases
// and "<<" merge keys work; top-level keys starting with "x-" are ignored, so
// they can hold anchors (x-train: &train {lr: 0.1}).
func Parse(data []byte) (*Spec, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("%w: more than %d bytes; a job file is a few hundred bytes of settings", ErrTooLarge, MaxSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w; start from examples/fashion-mnist/job.yaml", ErrEmpty)
		}
		return nil, syntaxError(err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, syntaxError(err)
	default:
		return nil, &FieldError{Line: extra.Line, Msg: "a job file holds one YAML document; remove the second one (after \"---\") or split it into its own file"}
	}

	d := &decoder{p: problems{lines: map[string]int{}}, bad: map[string]bool{}}
	s := &Spec{}
	root := &doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return nil, fmt.Errorf("%w; start from examples/fashion-mnist/job.yaml", ErrEmpty)
		}
		root = root.Content[0]
	}
	if r := d.resolve("", root); r != nil && isNull(r) {
		return nil, fmt.Errorf("%w; start from examples/fashion-mnist/job.yaml", ErrEmpty)
	}
	d.spec(root, s)
	s.lines = d.p.lines
	s.ApplyDefaults()

	// Validation problems about a key that failed to decode would only
	// repeat that error ("rounds: missing" after "rounds: not an integer").
	v := s.validate()
	for _, e := range v.list {
		if !d.badPath(e.Path) {
			d.p.addAt(e.Line, e.Path, e.Msg)
		}
	}
	d.p.dropped += v.dropped
	if err := d.p.err(); err != nil {
		return nil, err
	}
	return s, nil
}

// syntaxError wraps a YAML syntax error in [ErrSyntax] as "line N: problem".
// yaml/v3 reports the parser's (not the scanner's) problems, those that start
// with "did not find expected" or "found undefined", one line too early: it
// prints a 0-based line there. This puts them on the line where the
// unclosed collection or bad node starts.
func syntaxError(err error) error {
	msg, ok := strings.CutPrefix(err.Error(), "yaml: ")
	if !ok {
		return fmt.Errorf("%w: %w", ErrSyntax, err)
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
		return fmt.Errorf("%w: %s", ErrSyntax, msg)
	}
	return fmt.Errorf("%w: line %d: %s", ErrSyntax, line, msg)
}

// decoder walks the YAML node tree into a Spec, recording each key's line
// and collecting every problem instead of stopping at the first.
type decoder struct {
	p problems
	// bad holds the paths whose value could not be decoded.
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

func (d *decoder) badPath(path string) bool {
	for b := range d.bad {
		if path == b || strings.HasPrefix(path, b+".") {
			return true
		}
	}
	return false
}

// fail records a problem with the value at path.
func (d *decoder) fail(path string, n *yaml.Node, format string, args ...any) {
	d.bad[path] = true
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	line := 0
	if n != nil {
		line = n.Line
	}
	if line == 0 {
		line = d.p.lineOf(path)
	}
	d.p.addAt(line, path, msg)
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

// keyed is one key/value pair of a mapping.
type keyed struct {
	key, val *yaml.Node
}

// mapping decodes a mapping node against its known fields: unknown,
// duplicate and non-scalar keys are problems; "<<" merge keys are honoured
// (explicit keys win, then the first merged source). Null values count as
// absent.
func (d *decoder) mapping(path string, n *yaml.Node, example string, fields []field) {
	n = d.resolve(path, n)
	if n == nil || isNull(n) {
		return
	}
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "expected a mapping of keys, such as %s, not %s", example, describe(n))
		return
	}
	pairs := d.pairs(path, n, 0)
	seen := map[string]int{}
	for _, kv := range pairs {
		k := kv.key
		if k.Kind != yaml.ScalarNode {
			d.fail(path, k, "keys must be plain words such as %q, not %s", fields[0].key, describe(k))
			continue
		}
		if first, dup := seen[k.Value]; dup {
			// Explicit keys come first; a merged key they already set
			// gives way silently, as YAML's merge says.
			if !kv.merged() {
				d.p.addAt(k.Line, join(path, k.Value), fmt.Sprintf("duplicate key %q%s (first at line %d); remove one", k.Value, in(path), first))
			}
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
			// Top-level "x-" keys are free for anchors to merge elsewhere,
			// as in Compose files.
			if path == "" && strings.HasPrefix(k.Value, "x-") {
				continue
			}
			d.unknown(path, k, fields)
			continue
		}
		p := join(path, k.Value)
		v := d.resolve(p, kv.val)
		if v == nil || isNull(v) {
			continue
		}
		d.p.lines[p] = k.Line
		f.dec(p, v)
	}
}

// merged marks pairs that came through a merge key: their key node is
// wrapped so that duplicates with explicit keys are not reported.
func (kv keyed) merged() bool { return kv.key.Tag == mergedTag }

const mergedTag = "!cohort/merged"

// pairs lists a mapping's pairs: explicit ones first, then those pulled in
// by "<<" merge keys.
func (d *decoder) pairs(path string, n *yaml.Node, depth int) []keyed {
	var explicit, merged []keyed
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!merge" {
			explicit = append(explicit, keyed{k, v})
			continue
		}
		v = d.resolve(path, v)
		if v == nil {
			continue
		}
		srcs := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			srcs = v.Content
		}
		for _, src := range srcs {
			src = d.resolve(path, src)
			switch {
			case src == nil:
			case src.Kind != yaml.MappingNode:
				d.fail(path, k, "<< merges mappings only, not %s; use << *anchor of a mapping", describe(src))
			case depth >= maxMergeDepth || d.merges >= maxMerges:
				if !d.mergeFailed {
					d.fail(path, k, "<< merges are nested too deeply; write the keys out")
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

func (d *decoder) unknown(path string, k *yaml.Node, fields []field) {
	known := make([]string, len(fields))
	for i, f := range fields {
		known[i] = f.key
	}
	msg := fmt.Sprintf("unknown key %q%s", k.Value, in(path))
	if c := closest(k.Value, known); c != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", c)
	} else {
		msg += "; known keys: " + strings.Join(known, ", ")
	}
	d.bad[join(path, k.Value)] = true
	d.p.addAt(k.Line, join(path, k.Value), msg)
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

// Scalars.

func (d *decoder) scalar(path string, n *yaml.Node, want string) bool {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, n, "expected %s, not %s", want, describe(n))
		return false
	}
	return true
}

func (d *decoder) str(path string, n *yaml.Node, out *string) {
	if !d.scalar(path, n, "a string") {
		return
	}
	*out = n.Value
}

func (d *decoder) int64(path string, n *yaml.Node, out *int64) bool {
	if !d.scalar(path, n, "an integer") {
		return false
	}
	if n.ShortTag() != "!!int" {
		if n.ShortTag() == "!!float" && strings.Trim(n.Value, "+-0123456789_") == "" {
			// yaml resolves digits beyond int64 as a float.
			d.fail(path, n, "%s does not fit in a 64-bit integer", describe(n))
		} else {
			d.fail(path, n, "%s is not an integer; write a whole number such as 10", describe(n))
		}
		return false
	}
	var v int64
	if err := n.Decode(&v); err != nil {
		d.fail(path, n, "%s does not fit in a 64-bit integer", describe(n))
		return false
	}
	*out = v
	return true
}

func (d *decoder) int(path string, n *yaml.Node, out *int) bool {
	var v int64
	if !d.int64(path, n, &v) {
		return false
	}
	if int64(int(v)) != v {
		d.fail(path, n, "%d is too large", v)
		return false
	}
	*out = int(v)
	return true
}

func (d *decoder) float(path string, n *yaml.Node, out *float64) bool {
	if !d.scalar(path, n, "a number") {
		return false
	}
	if t := n.ShortTag(); t != "!!float" && t != "!!int" {
		d.fail(path, n, "%s is not a number; write one such as 0.05", describe(n))
		return false
	}
	var v float64
	if err := n.Decode(&v); err != nil {
		d.fail(path, n, "%s is not a number; write one such as 0.05", describe(n))
		return false
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		d.fail(path, n, "%s is not a finite number; write one such as 0.05", describe(n))
		return false
	}
	*out = v
	return true
}

func (d *decoder) duration(path string, n *yaml.Node, out *time.Duration) {
	const want = "a duration with a unit such as \"90s\" or \"10m\""
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

// Lists and maps.

func (d *decoder) seq(path string, n *yaml.Node, example string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, n, "expected a list such as %s, not %s", example, describe(n))
		return nil
	}
	return n.Content
}

func (d *decoder) ints(path string, n *yaml.Node, example string, out *[]int) {
	items := d.seq(path, n, example)
	if items == nil && n.Kind != yaml.SequenceNode {
		return
	}
	vs := make([]int, 0, len(items))
	for i, it := range items {
		p := fmt.Sprintf("%s.%d", path, i)
		d.p.lines[p] = it.Line
		if it = d.resolve(p, it); it == nil {
			continue
		}
		var v int
		if d.int(p, it, &v) {
			vs = append(vs, v)
		}
	}
	*out = vs
}

func (d *decoder) strs(path string, n *yaml.Node, example string, out *[]string) {
	items := d.seq(path, n, example)
	if items == nil && n.Kind != yaml.SequenceNode {
		return
	}
	vs := make([]string, 0, len(items))
	for i, it := range items {
		p := fmt.Sprintf("%s.%d", path, i)
		d.p.lines[p] = it.Line
		if it = d.resolve(p, it); it == nil {
			continue
		}
		switch {
		case !d.scalar(p, it, "a string"):
		case isNull(it):
			vs = append(vs, "")
		default:
			vs = append(vs, it.Value)
		}
	}
	*out = vs
}

func (d *decoder) strMap(path string, n *yaml.Node, example string, out *map[string]string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, n, "expected a mapping such as %s, not %s", example, describe(n))
		return
	}
	m := map[string]string{}
	seen := map[string]int{}
	for _, kv := range d.pairs(path, n, 0) {
		if kv.key.Kind != yaml.ScalarNode {
			d.fail(path, kv.key, "keys must be plain names, not %s", describe(kv.key))
			continue
		}
		k := kv.key.Value
		if first, dup := seen[k]; dup {
			if !kv.merged() {
				d.p.addAt(kv.key.Line, join(path, k), fmt.Sprintf("duplicate key %q in %s (first at line %d); remove one", k, path, first))
			}
			continue
		}
		seen[k] = kv.key.Line
		p := join(path, k)
		v := d.resolve(p, kv.val)
		if v == nil {
			continue
		}
		if !d.scalar(p, v, "a string") {
			continue
		}
		if isNull(v) {
			m[k] = ""
		} else {
			m[k] = v.Value
		}
	}
	*out = m
}

// The job's schema.

func (d *decoder) spec(n *yaml.Node, s *Spec) {
	d.mapping("", n, "{name: my-job, rounds: 20, ...}", []field{
		{"name", func(p string, v *yaml.Node) { d.str(p, v, &s.Name) }},
		{"seed", func(p string, v *yaml.Node) { d.int64(p, v, &s.Seed) }},
		{"tracking", func(p string, v *yaml.Node) { d.tracking(p, v, &s.Tracking) }},
		{"data", func(p string, v *yaml.Node) { d.data(p, v, &s.Data) }},
		{"model", func(p string, v *yaml.Node) { d.model(p, v, &s.Model) }},
		{"sites", func(p string, v *yaml.Node) { d.sites(p, v, &s.Sites) }},
		{"rounds", func(p string, v *yaml.Node) { d.int(p, v, &s.Rounds) }},
		{"train", func(p string, v *yaml.Node) { d.train(p, v, &s.Train) }},
		{"arms", func(p string, v *yaml.Node) { d.arms(p, v, &s.Arms) }},
		{"eval", func(p string, v *yaml.Node) {
			d.mapping(p, v, "{every: 1, site: kit}", []field{
				{"every", func(p string, v *yaml.Node) { d.int(p, v, &s.Eval.Every) }},
				{"site", func(p string, v *yaml.Node) { d.str(p, v, &s.Eval.Site) }},
			})
		}},
		{"deadline", func(p string, v *yaml.Node) {
			d.mapping(p, v, "{round: 10m, retries: 0}", []field{
				{"round", func(p string, v *yaml.Node) { d.duration(p, v, &s.Deadline.Round) }},
				{"retries", func(p string, v *yaml.Node) { d.int(p, v, &s.Deadline.Retries) }},
			})
		}},
		{"energy", func(p string, v *yaml.Node) { d.energy(p, v, &s.Energy) }},
		{"register", func(p string, v *yaml.Node) { d.register(p, v, &s.Register) }},
	})
}

// register decodes register: a mapping {name, alias_best, best_metric} or
// the model's name alone (register: fmnist-classifier).
func (d *decoder) register(path string, n *yaml.Node, out **Register) {
	r := &Register{}
	*out = r
	if n.Kind == yaml.ScalarNode { // shorthand: register: NAME
		d.p.lines[path+".name"] = n.Line
		d.str(path+".name", n, &r.Name)
		return
	}
	d.mapping(path, n, "{name: fmnist-classifier, alias_best: champion}", []field{
		{"name", func(p string, v *yaml.Node) { d.str(p, v, &r.Name) }},
		{"alias_best", func(p string, v *yaml.Node) { d.str(p, v, &r.AliasBest) }},
		{"best_metric", func(p string, v *yaml.Node) { d.str(p, v, &r.BestMetric) }},
	})
}

func (d *decoder) tracking(path string, n *yaml.Node, t *Tracking) {
	d.mapping(path, n, `{uri: "sqlite:cohort.db", experiment: my-experiment}`, []field{
		{"uri", func(p string, v *yaml.Node) { d.str(p, v, &t.URI) }},
		{"experiment", func(p string, v *yaml.Node) { d.str(p, v, &t.Experiment) }},
	})
}

func (d *decoder) data(path string, n *yaml.Node, t *Data) {
	d.mapping(path, n, "{dataset: fashion-mnist, partition: {kind: iid}}", []field{
		{"dataset", func(p string, v *yaml.Node) { d.str(p, v, &t.Dataset) }},
		{"path", func(p string, v *yaml.Node) { d.str(p, v, &t.Path) }},
		{"partition", func(p string, v *yaml.Node) {
			pt := &t.Partition
			d.mapping(p, v, "{kind: dirichlet, alpha: 0.5}", []field{
				{"kind", func(p string, v *yaml.Node) { d.str(p, v, &pt.Kind) }},
				{"alpha", func(p string, v *yaml.Node) { d.float(p, v, &pt.Alpha) }},
				{"labels", func(p string, v *yaml.Node) { d.int(p, v, &pt.Labels) }},
				{"shards_per_site", func(p string, v *yaml.Node) { d.int(p, v, &pt.ShardsPerSite) }},
			})
		}},
		{"test_fraction", func(p string, v *yaml.Node) { d.float(p, v, &t.TestFraction) }},
		{"synthetic", func(p string, v *yaml.Node) {
			sy := &t.Synthetic
			d.mapping(p, v, "{alpha: 1, beta: 1}", []field{
				{"alpha", func(p string, v *yaml.Node) { d.float(p, v, &sy.Alpha) }},
				{"beta", func(p string, v *yaml.Node) { d.float(p, v, &sy.Beta) }},
				{"dim", func(p string, v *yaml.Node) { d.int(p, v, &sy.Dim) }},
				{"classes", func(p string, v *yaml.Node) { d.int(p, v, &sy.Classes) }},
				{"samples_per_site", func(p string, v *yaml.Node) { d.int(p, v, &sy.SamplesPerSite) }},
			})
		}},
	})
}

func (d *decoder) model(path string, n *yaml.Node, m *Model) {
	d.mapping(path, n, "{kind: mlp, hidden: [200]}", []field{
		{"kind", func(p string, v *yaml.Node) { d.str(p, v, &m.Kind) }},
		{"hidden", func(p string, v *yaml.Node) { d.ints(p, v, "[200]", &m.Hidden) }},
		{"conv", func(p string, v *yaml.Node) { d.ints(p, v, "[32, 64]", &m.Conv) }},
		{"command", func(p string, v *yaml.Node) { d.strs(p, v, `[python3, train.py]`, &m.Command) }},
		{"env", func(p string, v *yaml.Node) { d.strMap(p, v, "{CUDA_VISIBLE_DEVICES: \"0\"}", &m.Env) }},
		{"init", func(p string, v *yaml.Node) {
			m.Init = &ModelInit{}
			d.mapping(p, v, "{site: kit} or {weights: init.safetensors}", []field{
				{"site", func(p string, v *yaml.Node) { d.str(p, v, &m.Init.Site) }},
				{"weights", func(p string, v *yaml.Node) { d.str(p, v, &m.Init.Weights) }},
			})
		}},
		{"exec", func(p string, v *yaml.Node) {
			d.mapping(p, v, "{mode: persistent}", []field{
				{"mode", func(p string, v *yaml.Node) { d.str(p, v, &m.Exec.Mode) }},
			})
		}},
		{"params", func(p string, v *yaml.Node) { d.int64(p, v, &m.Params) }},
	})
}

func (d *decoder) sites(path string, n *yaml.Node, s *Sites) {
	d.mapping(path, n, "{count: 4, min_per_round: 3}", []field{
		{"count", func(p string, v *yaml.Node) { d.int(p, v, &s.Count) }},
		{"names", func(p string, v *yaml.Node) { d.strs(p, v, "[kit, unibo]", &s.Names) }},
		{"min_per_round", func(p string, v *yaml.Node) { d.int(p, v, &s.MinPerRound) }},
		{"fraction", func(p string, v *yaml.Node) { d.float(p, v, &s.Fraction) }},
		{"over_select", func(p string, v *yaml.Node) { d.float(p, v, &s.OverSelect) }},
		{"adversaries", func(p string, v *yaml.Node) { d.adversaries(p, v, &s.Adversaries) }},
	})
}

// adversaries decodes sites.adversaries: a list of {site, attacks}.
func (d *decoder) adversaries(path string, n *yaml.Node, out *[]Adversary) {
	const example = "[{site: site-4, attacks: [{kind: scale, factor: -1}]}]"
	items := d.seq(path, n, example)
	advs := make([]Adversary, len(items))
	for i, it := range items {
		p := fmt.Sprintf("%s.%d", path, i)
		d.p.lines[p] = it.Line
		if it = d.resolve(p, it); it == nil {
			continue
		}
		if isNull(it) {
			d.fail(p, it, "empty adversary; write {site: site-4, attacks: [{kind: scale, factor: -1}]}")
			continue
		}
		a := &advs[i]
		d.mapping(p, it, "{site: site-4, attacks: [{kind: scale, factor: -1}]}", []field{
			{"site", func(p string, v *yaml.Node) { d.str(p, v, &a.Site) }},
			{"attacks", func(p string, v *yaml.Node) { d.attacks(p, v, &a.Attacks) }},
		})
	}
	*out = advs
}

// attacks decodes an adversary's attacks. Each item is the canonical
// {kind: scale, factor: -1}, or a shorthand: a bare kind (sign_flip,
// label_flip) or a one-key mapping from the kind to its parameter
// ({scale: -1}, {noise: 0.5}, {claim_samples: 1099511627776}).
func (d *decoder) attacks(path string, n *yaml.Node, out *[]Attack) {
	items := d.seq(path, n, "[{kind: scale, factor: -1}]")
	if items == nil && n.Kind != yaml.SequenceNode {
		return
	}
	as := make([]Attack, len(items))
	for i, it := range items {
		p := fmt.Sprintf("%s.%d", path, i)
		d.p.lines[p] = it.Line
		if it = d.resolve(p, it); it == nil {
			continue
		}
		if isNull(it) {
			d.fail(p, it, "empty attack; write {kind: scale, factor: -1} or a kind such as sign_flip")
			continue
		}
		if it.Kind == yaml.ScalarNode { // shorthand: sign_flip
			d.p.lines[p+".kind"] = it.Line
			d.str(p+".kind", it, &as[i].Kind)
			continue
		}
		d.attack(p, it, &as[i])
	}
	*out = as
}

// attack decodes one attack written as a mapping, canonical or shorthand.
func (d *decoder) attack(p string, n *yaml.Node, at *Attack) {
	var short []string // the shorthand keys written
	param := func(kind, key string, dec func(string, *yaml.Node) bool) field {
		return field{kind, func(_ string, v *yaml.Node) {
			short = append(short, kind)
			at.Kind = kind
			d.p.lines[p+".kind"] = v.Line
			d.p.lines[p+"."+key] = v.Line
			if !dec(p+"."+key, v) {
				d.bad[p] = true
			}
		}}
	}
	bare := func(kind string) field {
		return field{kind, func(_ string, v *yaml.Node) {
			d.fail(p, v, "%s takes no parameter; write the kind alone, e.g. attacks: [%[1]s]", kind)
		}}
	}
	floatp := func(p string, v *yaml.Node) bool { return d.float(p, v, &at.Factor) }
	d.mapping(p, n, "{kind: scale, factor: -1} or {scale: -1}", []field{
		{"kind", func(p string, v *yaml.Node) { d.str(p, v, &at.Kind) }},
		{"factor", func(p string, v *yaml.Node) { d.float(p, v, &at.Factor) }},
		{"samples", func(p string, v *yaml.Node) { d.int64(p, v, &at.Samples) }},
		param(AttackScale, "factor", floatp),
		param(AttackNoise, "factor", floatp),
		param(AttackClaimSamples, "samples", func(p string, v *yaml.Node) bool { return d.int64(p, v, &at.Samples) }),
		bare(AttackSignFlip),
		bare(AttackLabelFlip),
	})
	switch {
	case len(short) > 1:
		d.fail(p, n, "holds %d attacks (%s); write one attack per list item", len(short), strings.Join(short, ", "))
	case len(short) == 1 && (hasKey(n, "kind") || hasKey(n, "factor") || hasKey(n, "samples")):
		d.fail(p, n, "mixes the shorthand {%s: ...} with kind, factor or samples; write either {kind: scale, factor: -1} or {scale: -1}", short[0])
	}
}

func (d *decoder) train(path string, n *yaml.Node, t *Train) {
	d.mapping(path, n, "{epochs: 1, batch_size: 32, lr: 0.05}", []field{
		{"epochs", func(p string, v *yaml.Node) { d.int(p, v, &t.Epochs) }},
		{"batch_size", func(p string, v *yaml.Node) { d.int(p, v, &t.BatchSize) }},
		{"lr", func(p string, v *yaml.Node) { d.float(p, v, &t.LR) }},
		{"momentum", func(p string, v *yaml.Node) { d.float(p, v, &t.Momentum) }},
		{"weight_decay", func(p string, v *yaml.Node) { d.float(p, v, &t.WeightDecay) }},
		{"lr_decay", func(p string, v *yaml.Node) { d.float(p, v, &t.LRDecay) }},
	})
}

func (d *decoder) trainOverride(path string, n *yaml.Node, t *TrainOverride) {
	intp := func(dst **int) func(string, *yaml.Node) {
		return func(p string, v *yaml.Node) {
			var x int
			if d.int(p, v, &x) {
				*dst = &x
			}
		}
	}
	floatp := func(dst **float64) func(string, *yaml.Node) {
		return func(p string, v *yaml.Node) {
			var x float64
			if d.float(p, v, &x) {
				*dst = &x
			}
		}
	}
	d.mapping(path, n, "{lr: 0.1}", []field{
		{"epochs", intp(&t.Epochs)},
		{"batch_size", intp(&t.BatchSize)},
		{"lr", floatp(&t.LR)},
		{"momentum", floatp(&t.Momentum)},
		{"weight_decay", floatp(&t.WeightDecay)},
	})
}

func (d *decoder) arms(path string, n *yaml.Node, out *[]Arm) {
	items := d.seq(path, n, "[{name: fedavg, strategy: {name: fedavg}}]")
	arms := make([]Arm, len(items))
	for i, it := range items {
		p := fmt.Sprintf("%s.%d", path, i)
		d.p.lines[p] = it.Line
		it = d.resolve(p, it)
		if it == nil {
			continue
		}
		if isNull(it) {
			d.fail(p, it, "empty arm; write {name: fedavg, strategy: {name: fedavg}} or {name: centralized, centralized: {}}")
			continue
		}
		a := &arms[i]
		d.mapping(p, it, "{name: fedavg, strategy: {name: fedavg}}", []field{
			{"name", func(p string, v *yaml.Node) { d.str(p, v, &a.Name) }},
			{"centralized", func(p string, v *yaml.Node) {
				a.Centralized = &Centralized{}
				d.mapping(p, v, "{epochs: 20, site: pooled}", []field{
					{"epochs", func(p string, v *yaml.Node) { d.int(p, v, &a.Centralized.Epochs) }},
					{"site", func(p string, v *yaml.Node) { d.str(p, v, &a.Centralized.Site) }},
				})
			}},
			{"strategy", func(p string, v *yaml.Node) {
				a.Strategy = &Strategy{}
				if v.Kind == yaml.ScalarNode { // shorthand: strategy: fedavg
					d.str(p+".name", v, &a.Strategy.Name)
					d.p.lines[p+".name"] = v.Line
					return
				}
				d.mapping(p, v, "{name: fedprox, mu: 0.01}", []field{
					{"name", func(p string, v *yaml.Node) { d.str(p, v, &a.Strategy.Name) }},
					{"mu", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.Mu) }},
					{"server_lr", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.ServerLR) }},
					{"beta", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.Beta) }},
					{"f", func(p string, v *yaml.Node) { d.int(p, v, &a.Strategy.F) }},
					{"m", func(p string, v *yaml.Node) { d.int(p, v, &a.Strategy.M) }},
					{"eta", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.ServerOpt.Eta) }},
					{"beta1", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.ServerOpt.Beta1) }},
					{"beta2", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.ServerOpt.Beta2) }},
					{"tau", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.ServerOpt.Tau) }},
					{"momentum", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.ServerOpt.Momentum) }},
					{"max_weight_fraction", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.MaxWeightFraction) }},
					{"clip", func(p string, v *yaml.Node) { d.clip(p, v, &a.Strategy.Clip) }},
					{"dp", func(p string, v *yaml.Node) {
						a.Strategy.DP = &DP{}
						d.mapping(p, v, "{clip: 1.0, noise_multiplier: 1.1}", []field{
							{"clip", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.DP.Clip) }},
							{"noise_multiplier", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.DP.NoiseMultiplier) }},
							{"delta", func(p string, v *yaml.Node) { d.float(p, v, &a.Strategy.DP.Delta) }},
						})
					}},
				})
			}},
			{"train", func(p string, v *yaml.Node) {
				a.Train = &TrainOverride{}
				d.trainOverride(p, v, a.Train)
			}},
		})
		// "centralized:" or "centralized: ~" (null) still picks the arm's kind.
		if a.Centralized == nil && hasKey(it, "centralized") {
			a.Centralized = &Centralized{}
		}
		if a.Strategy == nil && hasKey(it, "strategy") {
			a.Strategy = &Strategy{}
		}
	}
	*out = arms
}

// clip decodes a strategy's clip: a mapping {mode, norm, adaptive_factor}
// or the mode alone (clip: off).
func (d *decoder) clip(path string, n *yaml.Node, c *Clip) {
	if n.Kind == yaml.ScalarNode { // shorthand: clip: off
		d.p.lines[path+".mode"] = n.Line
		d.str(path+".mode", n, &c.Mode)
		return
	}
	d.mapping(path, n, "{mode: reject, norm: 0, adaptive_factor: 10}", []field{
		{"mode", func(p string, v *yaml.Node) { d.str(p, v, &c.Mode) }},
		{"norm", func(p string, v *yaml.Node) { d.float(p, v, &c.Norm) }},
		{"adaptive_factor", func(p string, v *yaml.Node) { d.float(p, v, &c.AdaptiveFactor) }},
	})
}

// hasKey reports whether mapping n has key k written out (with any value).
func hasKey(n *yaml.Node, k string) bool {
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

func (d *decoder) energy(path string, n *yaml.Node, e *Energy) {
	d.mapping(path, n, "{interval: 100ms, carbon_g_per_kwh: 380}", []field{
		{"interval", func(p string, v *yaml.Node) { d.duration(p, v, &e.Interval) }},
		{"carbon_g_per_kwh", func(p string, v *yaml.Node) { d.float(p, v, &e.CarbonGPerKWh) }},
		{"pue", func(p string, v *yaml.Node) { d.float(p, v, &e.PUE) }},
		{"cpu_watts_per_core", func(p string, v *yaml.Node) { d.float(p, v, &e.CPUWattsPerCore) }},
	})
}
