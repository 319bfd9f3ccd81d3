package job

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/cohortfl/cohort/internal/strictyaml"
	"go.yaml.in/yaml/v3"
)

// Load reads the job file at path and returns it parsed, defaulted and
// validated, as [ParseFile] does; its errors name path.
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
	// The errors name the file themselves ("job.yaml:14:3: ...").
	return ParseFile(path, data)
}

// Parse decodes a YAML job, fills in the defaults ([Spec.ApplyDefaults]) and
// validates it ([Spec.Validate]), as [ParseFile] does for a job without a
// file name: its errors say "line L, column C: ...".
func Parse(data []byte) (*Spec, error) {
	return ParseFile("", data)
}

// ParseFile decodes the YAML job read from the file named name (used in
// messages only; "" when there is none), fills in the defaults
// ([Spec.ApplyDefaults]) and validates it ([Spec.Validate]). Every problem is
// reported at once, joined with [errors.Join]; each is a [*FieldError]
// (matching [ErrInvalid]) that names the file, line and column, the key and
// the fix: "job.yaml:14:3: unknown key ...". Unknown keys are errors that
// suggest the closest known key; wrong types name the expected type.
// Anchors, aliases and "<<" merge keys work; top-level keys starting with
// "x-" are ignored, so they can hold anchors (x-train: &train {lr: 0.1}).
func ParseFile(name string, data []byte) (*Spec, error) {
	d := &decoder{strictyaml.NewDecoder(strictyaml.Options{
		File:       name,
		Invalid:    ErrInvalid,
		Syntax:     ErrSyntax,
		Empty:      ErrEmpty,
		TooLarge:   ErrTooLarge,
		MaxSize:    MaxSize,
		MergeKeys:  true,
		FreePrefix: "x-",
		Synonym:    synonym,
	})}
	root, err := d.Document(data, "start from examples/fashion-mnist/job.yaml")
	if err != nil {
		if errors.Is(err, ErrTooLarge) {
			err = fmt.Errorf("%w; a job file is a few hundred bytes of settings", err)
		}
		return nil, err
	}
	s := &Spec{}
	d.spec(root, s)
	s.file = name
	s.lines = d.Keys
	s.ApplyDefaults()

	// Validation problems about a key that failed to decode would only
	// repeat that error ("rounds: missing" after "rounds: not an integer").
	v := s.validate()
	for _, e := range v.List() {
		if !d.Bad(e.Path) {
			d.AddAt(strictyaml.Pos{Line: e.Line, Column: e.Column}, e.Path, e.Msg)
		}
	}
	d.Drop(v.Dropped())
	if err := d.Err(); err != nil {
		return nil, err
	}
	return s, nil
}

// decoder walks the YAML node tree into a Spec with the strict decoder,
// recording each key's position and collecting every problem instead of
// stopping at the first.
type decoder struct {
	*strictyaml.Decoder
}

// field decodes the value of one known key.
type field struct {
	key string
	dec func(path string, v *yaml.Node)
}

// mapping decodes a mapping node against its known fields
// ([strictyaml.Decoder.Mapping]).
func (d *decoder) mapping(path string, n *yaml.Node, example string, fields []field) {
	fs := make([]strictyaml.Field, len(fields))
	for i, f := range fields {
		fs[i] = strictyaml.Field{Key: f.key, Dec: f.dec}
	}
	d.Mapping(path, n, example, fs)
}

// seq returns the items of list n, or nil after recording a problem when n
// is not a list.
func (d *decoder) seq(path string, n *yaml.Node, example string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		d.Fail(path, n, "expected a list such as %s, not %s", example, strictyaml.Describe(n))
		return nil
	}
	return n.Content
}

// The job's schema.

func (d *decoder) spec(n *yaml.Node, s *Spec) {
	d.mapping("", n, "{name: my-job, rounds: 20, ...}", []field{
		{"name", func(p string, v *yaml.Node) { d.Str(p, v, &s.Name) }},
		{"seed", func(p string, v *yaml.Node) { d.Int64(p, v, &s.Seed) }},
		{"tracking", func(p string, v *yaml.Node) { d.tracking(p, v, &s.Tracking) }},
		{"data", func(p string, v *yaml.Node) { d.data(p, v, &s.Data) }},
		{"model", func(p string, v *yaml.Node) { d.model(p, v, &s.Model) }},
		{"sites", func(p string, v *yaml.Node) { d.sites(p, v, &s.Sites) }},
		{"rounds", func(p string, v *yaml.Node) { d.Int(p, v, &s.Rounds) }},
		{"train", func(p string, v *yaml.Node) { d.train(p, v, &s.Train) }},
		{"arms", func(p string, v *yaml.Node) { d.arms(p, v, &s.Arms) }},
		{"eval", func(p string, v *yaml.Node) {
			d.mapping(p, v, "{every: 1, site: kit}", []field{
				{"every", func(p string, v *yaml.Node) { d.Int(p, v, &s.Eval.Every) }},
				{"site", func(p string, v *yaml.Node) { d.Str(p, v, &s.Eval.Site) }},
			})
		}},
		{"deadline", func(p string, v *yaml.Node) {
			d.mapping(p, v, "{round: 10m, retries: 0}", []field{
				{"round", func(p string, v *yaml.Node) { d.Duration(p, v, &s.Deadline.Round) }},
				{"retries", func(p string, v *yaml.Node) { d.Int(p, v, &s.Deadline.Retries) }},
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
		d.SetPos(path+".name", n)
		d.Str(path+".name", n, &r.Name)
		return
	}
	d.mapping(path, n, "{name: fmnist-classifier, alias_best: champion}", []field{
		{"name", func(p string, v *yaml.Node) { d.Str(p, v, &r.Name) }},
		{"alias_best", func(p string, v *yaml.Node) { d.Str(p, v, &r.AliasBest) }},
		{"best_metric", func(p string, v *yaml.Node) { d.Str(p, v, &r.BestMetric) }},
	})
}

func (d *decoder) tracking(path string, n *yaml.Node, t *Tracking) {
	d.mapping(path, n, `{uri: "sqlite:cohort.db", experiment: my-experiment}`, []field{
		{"uri", func(p string, v *yaml.Node) { d.Str(p, v, &t.URI) }},
		{"experiment", func(p string, v *yaml.Node) { d.Str(p, v, &t.Experiment) }},
	})
}

func (d *decoder) data(path string, n *yaml.Node, t *Data) {
	d.mapping(path, n, "{dataset: fashion-mnist, partition: {kind: iid}}", []field{
		{"dataset", func(p string, v *yaml.Node) { d.Str(p, v, &t.Dataset) }},
		{"path", func(p string, v *yaml.Node) { d.Str(p, v, &t.Path) }},
		{"partition", func(p string, v *yaml.Node) {
			pt := &t.Partition
			d.mapping(p, v, "{kind: dirichlet, alpha: 0.5}", []field{
				{"kind", func(p string, v *yaml.Node) { d.Str(p, v, &pt.Kind) }},
				{"alpha", func(p string, v *yaml.Node) { d.Float(p, v, &pt.Alpha) }},
				{"labels", func(p string, v *yaml.Node) { d.Int(p, v, &pt.Labels) }},
				{"shards_per_site", func(p string, v *yaml.Node) { d.Int(p, v, &pt.ShardsPerSite) }},
			})
		}},
		{"test_fraction", func(p string, v *yaml.Node) { d.Float(p, v, &t.TestFraction) }},
		{"synthetic", func(p string, v *yaml.Node) {
			sy := &t.Synthetic
			d.mapping(p, v, "{alpha: 1, beta: 1}", []field{
				{"alpha", func(p string, v *yaml.Node) { d.Float(p, v, &sy.Alpha) }},
				{"beta", func(p string, v *yaml.Node) { d.Float(p, v, &sy.Beta) }},
				{"dim", func(p string, v *yaml.Node) { d.Int(p, v, &sy.Dim) }},
				{"classes", func(p string, v *yaml.Node) { d.Int(p, v, &sy.Classes) }},
				{"samples_per_site", func(p string, v *yaml.Node) { d.Int(p, v, &sy.SamplesPerSite) }},
			})
		}},
	})
}

func (d *decoder) model(path string, n *yaml.Node, m *Model) {
	d.mapping(path, n, "{kind: mlp, hidden: [200]}", []field{
		{"kind", func(p string, v *yaml.Node) { d.Str(p, v, &m.Kind) }},
		{"hidden", func(p string, v *yaml.Node) { d.Ints(p, v, "[200]", &m.Hidden) }},
		{"conv", func(p string, v *yaml.Node) { d.Ints(p, v, "[32, 64]", &m.Conv) }},
		{"command", func(p string, v *yaml.Node) { d.Strs(p, v, `[python3, train.py]`, &m.Command) }},
		{"env", func(p string, v *yaml.Node) {
			d.StrMap(p, v, "{CUDA_VISIBLE_DEVICES: \"0\"}", "CUDA_VISIBLE_DEVICES", &m.Env)
		}},
		{"init", func(p string, v *yaml.Node) {
			m.Init = &ModelInit{}
			d.mapping(p, v, "{site: kit} or {weights: init.safetensors}", []field{
				{"site", func(p string, v *yaml.Node) { d.Str(p, v, &m.Init.Site) }},
				{"weights", func(p string, v *yaml.Node) { d.Str(p, v, &m.Init.Weights) }},
			})
		}},
		{"exec", func(p string, v *yaml.Node) {
			d.mapping(p, v, "{mode: persistent}", []field{
				{"mode", func(p string, v *yaml.Node) { d.Str(p, v, &m.Exec.Mode) }},
			})
		}},
		{"params", func(p string, v *yaml.Node) { d.Int64(p, v, &m.Params) }},
	})
}

func (d *decoder) sites(path string, n *yaml.Node, s *Sites) {
	d.mapping(path, n, "{count: 4, min_per_round: 3}", []field{
		{"count", func(p string, v *yaml.Node) { d.Int(p, v, &s.Count) }},
		{"names", func(p string, v *yaml.Node) { d.Strs(p, v, "[kit, unibo]", &s.Names) }},
		{"min_per_round", func(p string, v *yaml.Node) { d.Int(p, v, &s.MinPerRound) }},
		{"fraction", func(p string, v *yaml.Node) { d.Float(p, v, &s.Fraction) }},
		{"over_select", func(p string, v *yaml.Node) { d.Float(p, v, &s.OverSelect) }},
		{"adversaries", func(p string, v *yaml.Node) { d.adversaries(p, v, &s.Adversaries) }},
		{"virtual", func(p string, v *yaml.Node) { d.Int64(p, v, &s.Virtual) }},
		{"per_round", func(p string, v *yaml.Node) { d.Int(p, v, &s.ClientsPerRound) }},
		{"workers", func(p string, v *yaml.Node) { d.Int(p, v, &s.Workers) }},
		{"samples_per_client", func(p string, v *yaml.Node) { d.Int(p, v, &s.SamplesPerClient) }},
	})
}

// adversaries decodes sites.adversaries: a list of {site, attacks}.
func (d *decoder) adversaries(path string, n *yaml.Node, out *[]Adversary) {
	const example = "[{site: site-4, attacks: [{kind: scale, factor: -1}]}]"
	items := d.seq(path, n, example)
	advs := make([]Adversary, len(items))
	for i, it := range items {
		p := fmt.Sprintf("%s.%d", path, i)
		d.SetPos(p, it)
		if it = d.Resolve(p, it); it == nil {
			continue
		}
		if strictyaml.IsNull(it) {
			d.Fail(p, it, "empty adversary; write {site: site-4, attacks: [{kind: scale, factor: -1}]}")
			continue
		}
		a := &advs[i]
		d.mapping(p, it, "{site: site-4, attacks: [{kind: scale, factor: -1}]}", []field{
			{"site", func(p string, v *yaml.Node) { d.Str(p, v, &a.Site) }},
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
		d.SetPos(p, it)
		if it = d.Resolve(p, it); it == nil {
			continue
		}
		if strictyaml.IsNull(it) {
			d.Fail(p, it, "empty attack; write {kind: scale, factor: -1} or a kind such as sign_flip")
			continue
		}
		if it.Kind == yaml.ScalarNode { // shorthand: sign_flip
			d.SetPos(p+".kind", it)
			d.Str(p+".kind", it, &as[i].Kind)
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
			d.SetPos(p+".kind", v)
			d.SetPos(p+"."+key, v)
			if !dec(p+"."+key, v) {
				d.MarkBad(p)
			}
		}}
	}
	bare := func(kind string) field {
		return field{kind, func(_ string, v *yaml.Node) {
			d.Fail(p, v, "%s takes no parameter; write the kind alone, e.g. attacks: [%[1]s]", kind)
		}}
	}
	floatp := func(p string, v *yaml.Node) bool { return d.Float(p, v, &at.Factor) }
	d.mapping(p, n, "{kind: scale, factor: -1} or {scale: -1}", []field{
		{"kind", func(p string, v *yaml.Node) { d.Str(p, v, &at.Kind) }},
		{"factor", func(p string, v *yaml.Node) { d.Float(p, v, &at.Factor) }},
		{"samples", func(p string, v *yaml.Node) { d.Int64(p, v, &at.Samples) }},
		param(AttackScale, "factor", floatp),
		param(AttackNoise, "factor", floatp),
		param(AttackClaimSamples, "samples", func(p string, v *yaml.Node) bool { return d.Int64(p, v, &at.Samples) }),
		bare(AttackSignFlip),
		bare(AttackLabelFlip),
	})
	switch {
	case len(short) > 1:
		d.Fail(p, n, "holds %d attacks (%s); write one attack per list item", len(short), strings.Join(short, ", "))
	case len(short) == 1 && (strictyaml.HasKey(n, "kind") || strictyaml.HasKey(n, "factor") || strictyaml.HasKey(n, "samples")):
		d.Fail(p, n, "mixes the shorthand {%s: ...} with kind, factor or samples; write either {kind: scale, factor: -1} or {scale: -1}", short[0])
	}
}

func (d *decoder) train(path string, n *yaml.Node, t *Train) {
	d.mapping(path, n, "{epochs: 1, batch_size: 32, lr: 0.05}", []field{
		{"epochs", func(p string, v *yaml.Node) { d.Int(p, v, &t.Epochs) }},
		{"batch_size", func(p string, v *yaml.Node) { d.Int(p, v, &t.BatchSize) }},
		{"lr", func(p string, v *yaml.Node) { d.Float(p, v, &t.LR) }},
		{"momentum", func(p string, v *yaml.Node) { d.Float(p, v, &t.Momentum) }},
		{"weight_decay", func(p string, v *yaml.Node) { d.Float(p, v, &t.WeightDecay) }},
		{"lr_decay", func(p string, v *yaml.Node) { d.Float(p, v, &t.LRDecay) }},
	})
}

func (d *decoder) trainOverride(path string, n *yaml.Node, t *TrainOverride) {
	intp := func(dst **int) func(string, *yaml.Node) {
		return func(p string, v *yaml.Node) {
			var x int
			if d.Int(p, v, &x) {
				*dst = &x
			}
		}
	}
	floatp := func(dst **float64) func(string, *yaml.Node) {
		return func(p string, v *yaml.Node) {
			var x float64
			if d.Float(p, v, &x) {
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
		d.SetPos(p, it)
		it = d.Resolve(p, it)
		if it == nil {
			continue
		}
		if strictyaml.IsNull(it) {
			d.Fail(p, it, "empty arm; write {name: fedavg, strategy: {name: fedavg}} or {name: centralized, centralized: {}}")
			continue
		}
		a := &arms[i]
		d.mapping(p, it, "{name: fedavg, strategy: {name: fedavg}}", []field{
			{"name", func(p string, v *yaml.Node) { d.Str(p, v, &a.Name) }},
			{"centralized", func(p string, v *yaml.Node) {
				a.Centralized = &Centralized{}
				d.mapping(p, v, "{epochs: 20, site: pooled}", []field{
					{"epochs", func(p string, v *yaml.Node) { d.Int(p, v, &a.Centralized.Epochs) }},
					{"site", func(p string, v *yaml.Node) { d.Str(p, v, &a.Centralized.Site) }},
				})
			}},
			{"strategy", func(p string, v *yaml.Node) {
				a.Strategy = &Strategy{}
				if v.Kind == yaml.ScalarNode { // shorthand: strategy: fedavg
					d.Str(p+".name", v, &a.Strategy.Name)
					d.SetPos(p+".name", v)
					return
				}
				d.mapping(p, v, "{name: fedprox, mu: 0.01}", []field{
					{"name", func(p string, v *yaml.Node) { d.Str(p, v, &a.Strategy.Name) }},
					{"mu", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.Mu) }},
					{"server_lr", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.ServerLR) }},
					{"beta", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.Beta) }},
					{"f", func(p string, v *yaml.Node) { d.Int(p, v, &a.Strategy.F) }},
					{"m", func(p string, v *yaml.Node) { d.Int(p, v, &a.Strategy.M) }},
					{"eta", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.ServerOpt.Eta) }},
					{"beta1", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.ServerOpt.Beta1) }},
					{"beta2", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.ServerOpt.Beta2) }},
					{"tau", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.ServerOpt.Tau) }},
					{"momentum", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.ServerOpt.Momentum) }},
					{"max_weight_fraction", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.MaxWeightFraction) }},
					{"clip", func(p string, v *yaml.Node) { d.clip(p, v, &a.Strategy.Clip) }},
					{"dp", func(p string, v *yaml.Node) {
						a.Strategy.DP = &DP{}
						d.mapping(p, v, "{clip: 1.0, noise_multiplier: 1.1}", []field{
							{"clip", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.DP.Clip) }},
							{"noise_multiplier", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.DP.NoiseMultiplier) }},
							{"delta", func(p string, v *yaml.Node) { d.Float(p, v, &a.Strategy.DP.Delta) }},
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
		if a.Centralized == nil && strictyaml.HasKey(it, "centralized") {
			a.Centralized = &Centralized{}
		}
		if a.Strategy == nil && strictyaml.HasKey(it, "strategy") {
			a.Strategy = &Strategy{}
		}
	}
	*out = arms
}

// clip decodes a strategy's clip: a mapping {mode, norm, adaptive_factor}
// or the mode alone (clip: off).
func (d *decoder) clip(path string, n *yaml.Node, c *Clip) {
	if n.Kind == yaml.ScalarNode { // shorthand: clip: off
		d.SetPos(path+".mode", n)
		d.Str(path+".mode", n, &c.Mode)
		return
	}
	d.mapping(path, n, "{mode: reject, norm: 0, adaptive_factor: 10}", []field{
		{"mode", func(p string, v *yaml.Node) { d.Str(p, v, &c.Mode) }},
		{"norm", func(p string, v *yaml.Node) { d.Float(p, v, &c.Norm) }},
		{"adaptive_factor", func(p string, v *yaml.Node) { d.Float(p, v, &c.AdaptiveFactor) }},
	})
}

func (d *decoder) energy(path string, n *yaml.Node, e *Energy) {
	d.mapping(path, n, "{interval: 100ms, carbon_g_per_kwh: 380}", []field{
		{"interval", func(p string, v *yaml.Node) { d.Duration(p, v, &e.Interval) }},
		{"carbon_g_per_kwh", func(p string, v *yaml.Node) { d.Float(p, v, &e.CarbonGPerKWh) }},
		{"pue", func(p string, v *yaml.Node) { d.Float(p, v, &e.PUE) }},
		{"cpu_watts_per_core", func(p string, v *yaml.Node) { d.Float(p, v, &e.CPUWattsPerCore) }},
	})
}
