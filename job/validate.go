package job

import (
	"fmt"
	"math"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/cohortfl/cohort/internal/strictyaml"
)

// knownX list the accepted values of each enumerated setting, in the order
// messages show them.
func knownDatasets() []string { return []string{DatasetFashionMNIST, DatasetSynthetic} }
func knownPartitions() []string {
	return []string{PartitionIID, PartitionDirichlet, PartitionLabels, PartitionShards}
}
func knownModels() []string {
	return []string{ModelLogReg, ModelMLP, ModelCNN, ModelExec, ModelTransfer}
}

// MaxTransferParams bounds a transfer model's model.params: 2^36 float32
// parameters are 256 GiB. A coordinator refuses less than that when the
// model times the sites exceeds its max_model_bytes.
const MaxTransferParams = 1 << 36

func knownStrategies() []string {
	return []string{StrategyFedAvg, StrategyFedProx, StrategyMedian, StrategyTrimmedMean, StrategyKrum, StrategyMultiKrum,
		StrategyFedAdam, StrategyFedYogi, StrategyFedAdagrad, StrategyFedAvgM}
}
func knownClipModes() []string { return []string{ClipReject, ClipClip, ClipOff} }
func knownAttacks() []string {
	return []string{AttackScale, AttackSignFlip, AttackNoise, AttackClaimSamples, AttackLabelFlip}
}

// fashionMNISTClasses is Fashion-MNIST's number of classes.
const fashionMNISTClasses = 10

// armName is what an arm's name may look like: it names a tracking run and
// appears in metric keys and file names.
var armName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`)

// siteName is what a site's name may look like: it is a certificate CN, a
// run name and a path component.
var siteName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Validate reports every problem in s, joined with [errors.Join]; each is a
// [*FieldError] naming the key path (and its line, when s came from a file)
// and the fix. It expects defaults applied ([Spec.ApplyDefaults]); it does not
// change s.
func (s *Spec) Validate() error {
	return s.validate().Err()
}

func (s *Spec) validate() *problems {
	p := newProblems(s.file, s.lines)

	switch {
	case strings.TrimSpace(s.Name) == "":
		p.Add("name", "missing; name the job, e.g. name: fmnist-fedavg-vs-fedprox")
	case len(s.Name) > MaxNameLen:
		p.Add("name", "%d characters, %q…, is longer than %d; shorten the job's name (it names the tracking experiment and the plot's file)", len(s.Name), s.Name[:40], MaxNameLen)
	case hasControl(s.Name):
		p.Add("name", "%q holds control characters; use printable text", s.Name)
	}
	s.validateTracking(p)
	s.validateData(p)
	s.validateModel(p)
	s.validateSites(p)
	s.validateAdversaries(p)

	switch {
	case s.Rounds <= 0:
		if _, ok := s.lines["rounds"]; !ok && s.Rounds == 0 {
			p.Add("rounds", "missing; set the number of federated rounds, e.g. rounds: 20")
		} else {
			p.Add("rounds", "%d must be at least 1", s.Rounds)
		}
	case s.Rounds > MaxRounds:
		p.Add("rounds", "%d is more than %d; lower it", s.Rounds, MaxRounds)
	}

	validateTrain(p, "train", s.Train)
	s.validateArms(p)

	if e := s.Eval.Every; e < 1 || e > MaxRounds {
		p.Add("eval.every", "%d must be between 1 and %d (rounds between evaluations of the global model)", e, MaxRounds)
	}
	if s.Eval.Site != "" {
		validSite(p, "eval.site", s.Eval.Site)
	}
	if d := s.Deadline.Round; d <= 0 {
		p.Add("deadline.round", "%s must be positive; set how long a round waits for its sites, e.g. 10m", d)
	}
	if r := s.Deadline.Retries; r < 0 || r > 100 {
		p.Add("deadline.retries", "%d must be between 0 and 100 (times a round short of min_per_round is run again before the job fails)", r)
	}
	s.validateRegister(p)
	en := s.Energy
	if en.Interval < MinEnergyInterval {
		p.Add("energy.interval", "%s is shorter than %s, faster than the power readings refresh; use 100ms (the default) or more", en.Interval, MinEnergyInterval)
	}
	if en.CarbonGPerKWh < 0 {
		p.Add("energy.carbon_g_per_kwh", "%g must not be negative; set your grid's intensity in gCO2/kWh (0 for fully renewable)", en.CarbonGPerKWh)
	}
	if !(en.PUE >= 1) {
		p.Add("energy.pue", "%g must be at least 1 (1 is no facility overhead; data centres run 1.1-1.6)", en.PUE)
	}
	if en.CPUWattsPerCore < 0 {
		p.Add("energy.cpu_watts_per_core", "%g must not be negative; use your CPU's TDP / cores, or 0 to turn the estimate off", en.CPUWattsPerCore)
	}
	return p
}

// validateRegister checks register: names as MLflow's registry takes them
// (no path separators, no control characters, at most 256 characters).
func (s *Spec) validateRegister(p *problems) {
	r := s.Register
	if r == nil {
		return
	}
	registryName(p, "register.name", r.Name, "registered model", true)
	registryName(p, "register.alias_best", r.AliasBest, "alias", false)
	if a := strings.ToLower(r.AliasBest); a == "latest" || strings.HasPrefix(a, "v") && isDigits(a[1:]) {
		p.Add("register.alias_best", "%q is reserved by MLflow (latest and v<number> name versions); choose another alias, e.g. champion", r.AliasBest)
	}
	enum(p, "register.best_metric", r.BestMetric, "metric to pick the best arm by", BestMetrics())
}

// MaxRegistryNameLength bounds a registered model's name and an alias.
const MaxRegistryNameLength = 256

func registryName(p *problems, path, v, what string, needed bool) {
	switch {
	case v == "":
		if needed {
			p.Add(path, "missing; name the %s, e.g. fmnist-classifier", what)
		}
	case len(v) > MaxRegistryNameLength:
		p.Add(path, "is %d characters; a %s's name takes at most %d", len(v), what, MaxRegistryNameLength)
	case hasControl(v) || strings.ContainsAny(v, `/\:@`) || strings.Contains(v, ".."):
		p.Add(path, "%q holds a path separator, ':', '@', '..' or a control character, which models:/ URIs cannot carry; use letters, digits, '-', '_' and '.'", v)
	case strings.TrimSpace(v) != v:
		p.Add(path, "%q starts or ends with spaces; remove them", v)
	}
}

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r < '0' || r > '9' {
			return false
		}
	}
	return true
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, unicode.IsControl)
}

// enum checks that val is one of known; it reports a missing or unknown
// value (with the closest known one) and returns whether val is known.
func enum(p *problems, path, val, what string, known []string) bool {
	for _, k := range known {
		if val == k {
			return true
		}
	}
	list := strings.Join(known, ", ")
	if val == "" {
		p.Add(path, "missing; set the %s, one of %s", what, list)
		return false
	}
	msg := fmt.Sprintf("%q is not a known %s; use one of %s", val, what, list)
	if c := closest(val, known); c != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", c)
	}
	p.Add(path, "%s", msg)
	return false
}

func (s *Spec) validateTracking(p *problems) {
	uri := s.Tracking.URI
	scheme, rest, ok := strings.Cut(uri, ":")
	switch {
	case uri == "":
		p.Add("tracking.uri", "empty; use %q or the http(s):// address of an MLflow server", DefaultTrackingURI)
	case !ok:
		p.Add("tracking.uri", "%q has no scheme; write \"sqlite:%s\" for the embedded store or http(s)://HOST for an MLflow server", uri, uri)
	case strings.EqualFold(scheme, "sqlite"):
		if strings.TrimSpace(strings.TrimPrefix(rest, "//")) == "" {
			p.Add("tracking.uri", "%q names no database file; write e.g. %q", uri, DefaultTrackingURI)
		}
	case strings.EqualFold(scheme, "http"), strings.EqualFold(scheme, "https"):
		u, err := url.Parse(uri)
		if err != nil || u.Host == "" {
			p.Add("tracking.uri", "%q is not an http(s)://HOST[:PORT] address of an MLflow server", redactURI(uri))
		}
	default:
		p.Add("tracking.uri", "scheme %q is not supported; use sqlite:FILE for the embedded store or http(s)://HOST for an MLflow server", scheme)
	}
	if s.Tracking.Experiment == "" && strings.TrimSpace(s.Name) != "" {
		p.Add("tracking.experiment", "empty; name the experiment or leave the key out to use the job's name")
	}
}

// classes returns the number of classes of the job's dataset, or 0 if it is
// not known.
func (d Data) classes() int {
	switch d.Dataset {
	case DatasetFashionMNIST:
		return fashionMNISTClasses
	case DatasetSynthetic:
		return d.Synthetic.Classes
	}
	return 0
}

func (s *Spec) validateData(p *problems) {
	d := s.Data
	enum(p, "data.dataset", d.Dataset, "dataset", knownDatasets())
	synthetic := d.Dataset == DatasetSynthetic
	if !(d.TestFraction >= 0 && d.TestFraction < 1) {
		p.Add("data.test_fraction", "%g must be at least 0 and below 1 (the share of each site's data held out for testing)", d.TestFraction)
	}

	pt := d.Partition
	if synthetic {
		// Virtual clients draw theirs from one generated pool (sites.virtual).
		if pt.Kind != PartitionIID && pt.Kind != "" && s.Sites.Virtual == 0 {
			p.Add("data.partition.kind", "synthetic data is generated per site, not partitioned; remove data.partition")
		}
		if d.Path != "" {
			p.Add("data.path", "synthetic data is generated, not loaded; remove data.path")
		}
		sy := d.Synthetic
		if !(sy.Alpha >= 0) {
			p.Add("data.synthetic.alpha", "%g must not be negative (the FedProx paper uses 0, 0.5 and 1)", sy.Alpha)
		}
		if !(sy.Beta >= 0) {
			p.Add("data.synthetic.beta", "%g must not be negative (the FedProx paper uses 0, 0.5 and 1)", sy.Beta)
		}
		if sy.Dim < 1 || sy.Dim > MaxLayerWidth {
			p.Add("data.synthetic.dim", "%d must be between 1 and %d features (the paper uses 60)", sy.Dim, MaxLayerWidth)
		}
		if sy.Classes < 2 || sy.Classes > MaxLayerWidth {
			p.Add("data.synthetic.classes", "%d must be between 2 and %d (the paper uses 10)", sy.Classes, MaxLayerWidth)
		}
		if sy.SamplesPerSite < 0 {
			p.Add("data.synthetic.samples_per_site", "%d must not be negative; 0 draws each site's count from the paper's power law", sy.SamplesPerSite)
		}
	} else if d.Synthetic != (Synthetic{}) {
		p.Add("data.synthetic", "only used by dataset synthetic; remove it or set data.dataset: synthetic")
	}

	if synthetic || !enum(p, "data.partition.kind", pt.Kind, "partition kind", knownPartitions()) {
		return
	}
	if pt.Kind == PartitionDirichlet {
		if _, set := s.lines["data.partition.alpha"]; !set && pt.Alpha == 0 {
			p.Add("data.partition.alpha", "missing for kind dirichlet; set the concentration, e.g. alpha: 0.5 (0.1 is very skewed, 100 nearly IID)")
		} else if !(pt.Alpha > 0) {
			p.Add("data.partition.alpha", "%g must be above 0; 0.1 is very skewed, 0.5 moderately, 100 nearly IID", pt.Alpha)
		}
	} else if pt.Alpha != 0 {
		p.Add("data.partition.alpha", "only used by kind dirichlet; remove it or set data.partition.kind: dirichlet")
	}
	if pt.Kind == PartitionLabels {
		if _, set := s.lines["data.partition.labels"]; !set && pt.Labels == 0 {
			p.Add("data.partition.labels", "missing for kind labels; set how many classes each site holds, e.g. labels: 2")
		} else if c := d.classes(); c > 0 && (pt.Labels < 1 || pt.Labels > c) {
			p.Add("data.partition.labels", "%d must be between 1 and %d, the dataset's classes (classes per site)", pt.Labels, c)
		}
	} else if pt.Labels != 0 {
		p.Add("data.partition.labels", "only used by kind labels; remove it or set data.partition.kind: labels")
	}
	if pt.Kind == PartitionShards {
		if pt.ShardsPerSite < 1 || pt.ShardsPerSite > MaxLayerWidth {
			p.Add("data.partition.shards_per_site", "%d must be at least 1 (McMahan et al. use 2)", pt.ShardsPerSite)
		}
	} else if pt.ShardsPerSite != 0 {
		p.Add("data.partition.shards_per_site", "only used by kind shards; remove it or set data.partition.kind: shards")
	}
}

func (s *Spec) validateModel(p *problems) {
	m := s.Model
	enum(p, "model.kind", m.Kind, "model kind", knownModels())
	layers := func(key string, ws []int, example string) {
		if len(ws) == 0 {
			p.Add(key, "empty; list the sizes, e.g. %s", example)
		}
		for i, w := range ws {
			if w < 1 || w > MaxLayerWidth {
				p.Add(fmt.Sprintf("%s.%d", key, i), "%d must be between 1 and %d", w, MaxLayerWidth)
			}
		}
	}
	switch {
	case m.Kind == ModelMLP:
		layers("model.hidden", m.Hidden, "hidden: [200] (or use kind: logreg for none)")
	case len(m.Hidden) > 0:
		p.Add("model.hidden", "only used by kind mlp; remove it or set model.kind: mlp")
	}
	switch {
	case m.Kind == ModelCNN:
		layers("model.conv", m.Conv, "conv: [32, 64]")
	case len(m.Conv) > 0:
		p.Add("model.conv", "only used by kind cnn; remove it or set model.kind: cnn")
	}
	_, paramsSet := s.lines["model.params"]
	switch {
	case m.Kind == ModelTransfer && m.Params == 0 && !paramsSet:
		p.Add("model.params", "missing; a transfer model needs its number of float32 parameters, e.g. params: 25000000 (100 MB)")
	case m.Kind == ModelTransfer && (m.Params < 1 || m.Params > MaxTransferParams):
		p.Add("model.params", "%d must be between 1 and %d (256 GiB of float32s)", m.Params, int64(MaxTransferParams))
	case m.Kind == ModelTransfer && s.Eval.Site != "":
		p.Add("eval.site", "a transfer model has no accuracy to evaluate (its sites do not train); remove eval.site")
	case m.Kind != ModelTransfer && (m.Params != 0 || paramsSet):
		p.Add("model.params", "only used by kind transfer; remove it or set model.kind: transfer")
	}
	if m.Kind == ModelExec {
		switch {
		case len(m.Command) == 0:
			p.Add("model.command", "missing; an exec model needs the trainer's command, e.g. command: [python3, train.py]")
		case strings.TrimSpace(m.Command[0]) == "":
			p.Add("model.command.0", "empty program name; put the program first, e.g. [python3, train.py]")
		}
		switch m.Exec.Mode {
		case "", ExecPerTask, ExecPersistent: // "": not defaulted, per-task
		default:
			p.Add("model.exec.mode", "%q is not a mode; use %s (one process per task, the default) or %s (one process per site and arm, serving task after task)", m.Exec.Mode, ExecPerTask, ExecPersistent)
		}
		for k, v := range m.Env {
			if k == "" || strings.ContainsAny(k, "=\x00") {
				p.Add("model.env", "%q is not a valid variable name; use letters, digits and '_'", k)
			}
			if strings.ContainsRune(v, 0) {
				p.Add("model.env."+k, "the value holds a NUL byte; remove it")
			}
		}
		if in := m.Init; in != nil {
			switch {
			case in.Site == "" && in.Weights == "":
				p.Add("model.init", "empty; write init: {site: NAME} (an init task on that site builds the weights) or init: {weights: FILE.safetensors}")
			case in.Site != "" && in.Weights != "":
				p.Add("model.init", "has both site and weights; keep one: init: {site: NAME} or init: {weights: FILE.safetensors}")
			case in.Site != "":
				validSite(p, "model.init.site", in.Site)
			case strings.ContainsRune(in.Weights, 0):
				p.Add("model.init.weights", "the path holds a NUL byte; remove it")
			}
		}
	} else {
		if len(m.Command) > 0 {
			p.Add("model.command", "only used by kind exec; remove it or set model.kind: exec")
		}
		if m.Init != nil {
			p.Add("model.init", "only used by kind exec (built-in models are initialised from the job's seed); remove it or set model.kind: exec")
		}
		if len(m.Env) > 0 {
			p.Add("model.env", "only used by kind exec; remove it or set model.kind: exec")
		}
		if m.Exec != (ExecSettings{}) {
			p.Add("model.exec", "only used by kind exec; remove it or set model.kind: exec")
		}
	}
}

func (s *Spec) validateSites(p *problems) {
	st := s.Sites
	if st.Virtual != 0 || s.written("sites.virtual") {
		s.validateVirtual(p)
		return
	}
	for _, k := range []string{"per_round", "workers", "samples_per_client"} {
		if s.written("sites." + k) {
			p.Add("sites."+k, "only used with sites.virtual (a simulation of virtual clients); remove it or set sites.virtual")
		}
	}
	_, countSet := s.lines["sites.count"]
	_, namesSet := s.lines["sites.names"]
	switch {
	case namesSet && len(st.Names) == 0:
		p.Add("sites.names", "empty; list the sites' names or remove the key")
		return
	case st.Count == 0 && len(st.Names) == 0 && !countSet:
		p.Add("sites.count", "missing; set the number of sites (sites: {count: 4}) or list them (sites: {names: [kit, unibo]})")
		return
	case st.Count < 1:
		p.Add("sites.count", "%d must be at least 1", st.Count)
		return
	case len(st.Names) > MaxSites:
		p.Add("sites.names", "%d sites are more than %d, the most a coordinator is sized for; split the federation into several jobs", len(st.Names), MaxSites)
		return
	case st.Count > MaxSites:
		p.Add("sites.count", "%d is more than %d, the most a coordinator is sized for; lower it", st.Count, MaxSites)
		return
	case len(st.Names) > 0 && len(st.Names) != st.Count:
		p.Add("sites.count", "%d does not match the %d sites in sites.names; remove sites.count or make them agree", st.Count, len(st.Names))
	}
	seen := map[string]int{}
	for i, n := range st.Names {
		path := "sites.names." + strconv.Itoa(i)
		if first, dup := seen[n]; dup {
			p.Add(path, "%q is listed twice (also sites.names.%d); site names must be unique", n, first)
			continue
		}
		seen[n] = i
		if !siteName.MatchString(n) {
			p.Add(path, "%q is not a valid site name; use letters, digits, '.', '_' and '-' (it is the site's certificate name)", n)
		}
	}
	if !(st.Fraction > 0 && st.Fraction <= 1) {
		p.Add("sites.fraction", "%g must be above 0 and at most 1 (the share of sites selected each round)", st.Fraction)
		return
	}
	if !(st.OverSelect >= 0 && st.OverSelect <= 10) {
		p.Add("sites.over_select", "%g must be between 0 and 10 (the extra share of sites selected per round; 0.25 selects a quarter more)", st.OverSelect)
	}
	per := st.PerRound()
	switch {
	case st.MinPerRound < 1:
		p.Add("sites.min_per_round", "%d must be at least 1", st.MinPerRound)
	case st.MinPerRound > st.Count:
		p.Add("sites.min_per_round", "%d is more than sites.count (%d); lower it or add sites", st.MinPerRound, st.Count)
	case st.MinPerRound > per:
		p.Add("sites.min_per_round", "%d is more than the %d sites selected per round (sites.fraction %g of %d); lower it or raise sites.fraction", st.MinPerRound, per, st.Fraction, st.Count)
	}
}

// validateTrain checks training settings under prefix ("train").
func validateTrain(p *problems, prefix string, t Train) {
	if t.Epochs < 1 || t.Epochs > MaxRounds {
		p.Add(prefix+".epochs", "%d must be between 1 and %d (local epochs per round)", t.Epochs, MaxRounds)
	}
	if t.BatchSize < 1 {
		p.Add(prefix+".batch_size", "%d must be at least 1, e.g. batch_size: 32", t.BatchSize)
	}
	if !(t.LR > 0) {
		p.Add(prefix+".lr", "%g must be above 0, e.g. lr: 0.05", t.LR)
	}
	if !(t.Momentum >= 0 && t.Momentum < 1) {
		p.Add(prefix+".momentum", "%g must be at least 0 and below 1, e.g. momentum: 0.9", t.Momentum)
	}
	if !(t.WeightDecay >= 0) {
		p.Add(prefix+".weight_decay", "%g must not be negative, e.g. weight_decay: 0.0001", t.WeightDecay)
	}
	if !(t.LRDecay > 0 && t.LRDecay <= 1) {
		p.Add(prefix+".lr_decay", "%g must be above 0 and at most 1 (1: no decay), e.g. lr_decay: 0.9", t.LRDecay)
	}
}

// validateRobust checks the robust strategies' parameters at sp: each
// only for the strategies that take it, and in range.
func (s *Spec) validateRobust(p *problems, sp string, st *Strategy) {
	written := func(key string, nonzero bool) bool {
		_, ok := s.lines[sp+"."+key]
		return ok || nonzero
	}
	krum := st.Name == StrategyKrum || st.Name == StrategyMultiKrum
	switch {
	case st.Name != StrategyTrimmedMean && written("beta", st.Beta != 0):
		p.Add(sp+".beta", "only used by trimmed_mean; remove it or set name: trimmed_mean")
	case st.Name == StrategyTrimmedMean && !(st.Beta >= 0 && st.Beta < 0.5):
		p.Add(sp+".beta", "%g must be at least 0 and below 0.5 (the fraction of values trimmed at each end), e.g. beta: 0.1", st.Beta)
	}
	switch quorum := s.Sites.MinPerRound; {
	case !krum && written("f", st.F != 0):
		p.Add(sp+".f", "only used by krum and multi_krum; remove it or set name: krum")
	case krum && st.F < 0:
		p.Add(sp+".f", "%d must not be negative (how many Byzantine sites %s tolerates), e.g. f: 1", st.F, st.Name)
	case krum && quorum > 0 && quorum < 2*st.F+3:
		p.Add(sp+".f", "%s with f: %d needs at least 2f + 3 = %d updates a round, but a round may commit with sites.min_per_round = %d; lower f or raise sites.min_per_round", st.Name, st.F, 2*st.F+3, quorum)
	}
	switch quorum := s.Sites.MinPerRound; {
	case st.Name != StrategyMultiKrum && written("m", st.M != 0):
		p.Add(sp+".m", "only used by multi_krum; remove it or set name: multi_krum")
	case st.Name == StrategyMultiKrum && st.M < 0:
		p.Add(sp+".m", "%d must not be negative (how many best-scored updates are averaged; 0 means n − f)", st.M)
	case st.Name == StrategyMultiKrum && quorum > 0 && st.M > quorum:
		p.Add(sp+".m", "%d is more than the %d updates a round may commit with (sites.min_per_round); lower m, or 0 for n − f", st.M, quorum)
	}
}

func (s *Spec) validateArms(p *problems) {
	if len(s.Arms) == 0 {
		p.Add("arms", "missing; list the arms to compare, e.g. [{name: centralized, centralized: {}}, {name: fedavg, strategy: {name: fedavg}}]")
		return
	}
	names := map[string]int{}
	for i, a := range s.Arms {
		path := "arms." + strconv.Itoa(i)
		switch {
		case a.Centralized != nil && a.Strategy != nil:
			p.Add(path, "has both centralized and strategy; an arm is one or the other, split it into two arms")
		case a.Centralized == nil && a.Strategy == nil:
			p.Add(path, "needs centralized: {} or strategy: {name: fedavg}")
		}

		switch first, dup := names[a.Name]; {
		case a.Name == "":
			p.Add(path+".name", "missing; name the arm, e.g. name: fedavg")
		case dup:
			p.Add(path+".name", "%q is also the name of arms.%d; arm names must be unique", a.Name, first)
		case !armName.MatchString(a.Name):
			p.Add(path+".name", "%q is not a simple name; use up to 64 letters, digits, '_' and '-', starting with a letter", a.Name)
		}
		if _, dup := names[a.Name]; !dup {
			names[a.Name] = i
		}

		if c := a.Centralized; c != nil && s.Rounds > 0 {
			if c.Epochs < 1 || c.Epochs > MaxRounds {
				p.Add(path+".centralized.epochs", "%d must be between 1 and %d (epochs over the pooled data)", c.Epochs, MaxRounds)
			}
		}
		if c := a.Centralized; c != nil && c.Site != "" {
			validSite(p, path+".centralized.site", c.Site)
		}
		if st := a.Strategy; st != nil {
			sp := path + ".strategy"
			if enum(p, sp+".name", st.Name, "strategy", knownStrategies()) && st.Name != StrategyFedProx && st.Mu != 0 {
				p.Add(sp+".mu", "only used by fedprox; remove it or set name: fedprox")
			}
			if !(st.Mu >= 0) {
				p.Add(sp+".mu", "%g must not be negative (FedProx's proximal term; the paper uses 0.001-1)", st.Mu)
			}
			if !(st.ServerLR > 0) {
				p.Add(sp+".server_lr", "%g must be above 0 (1 applies the averaged update as is)", st.ServerLR)
			}
			s.validateRobust(p, sp, st)
			s.validateServerOpt(p, sp, st)
			s.validateInfluence(p, sp, st)
		}
		if o := a.Train; o != nil {
			t := s.ArmTrain(a)
			tp := path + ".train"
			sub := newProblems(p.File, p.Keys)
			validateTrain(sub, tp, t)
			// Report only what the override itself set; the job's own
			// train settings are reported under train.
			for _, e := range sub.List() {
				if (strings.HasSuffix(e.Path, ".epochs") && o.Epochs != nil) ||
					(strings.HasSuffix(e.Path, ".batch_size") && o.BatchSize != nil) ||
					(strings.HasSuffix(e.Path, ".lr") && o.LR != nil) ||
					(strings.HasSuffix(e.Path, ".momentum") && o.Momentum != nil) ||
					(strings.HasSuffix(e.Path, ".weight_decay") && o.WeightDecay != nil) {
					p.AddAt(strictyaml.Pos{Line: e.Line, Column: e.Column}, e.Path, e.Msg)
				}
			}
		}
	}
}

// validateServerOpt checks the adaptive server optimizers' parameters at
// sp: each only for the strategies that take it, and in range.
func (s *Spec) validateServerOpt(p *problems, sp string, st *Strategy) {
	written := func(key string, nonzero bool) bool {
		_, ok := s.lines[sp+"."+key]
		return ok || nonzero
	}
	o := st.ServerOpt
	adam := st.Name == StrategyFedAdam || st.Name == StrategyFedYogi
	switch {
	case !adaptive(st.Name) && written("eta", o.Eta != 0):
		hint := ""
		if st.Name == StrategyFedAvgM {
			hint = " (fedavgm's step is server_lr)"
		}
		p.Add(sp+".eta", "only used by fedadam, fedyogi and fedadagrad%s; remove it or set name: fedadam", hint)
	case adaptive(st.Name) && (!(o.Eta > 0) || math.IsInf(o.Eta, 0)):
		p.Add(sp+".eta", "%g must be above 0 (the server learning rate η), e.g. eta: 0.01", o.Eta)
	}
	for _, b := range []struct {
		key string
		v   float64
	}{{"beta1", o.Beta1}, {"beta2", o.Beta2}} {
		switch {
		case !adam && written(b.key, b.v != 0):
			p.Add(sp+"."+b.key, "only used by fedadam and fedyogi; remove it or set name: fedadam")
		case adam && !(b.v >= 0 && b.v < 1):
			p.Add(sp+"."+b.key, "%g must be at least 0 and below 1 (a moment's decay), e.g. %s: 0.9", b.v, b.key)
		}
	}
	switch {
	case !adaptive(st.Name) && written("tau", o.Tau != 0):
		p.Add(sp+".tau", "only used by fedadam, fedyogi and fedadagrad; remove it or set name: fedadam")
	case adaptive(st.Name) && (!(o.Tau > 0) || math.IsInf(o.Tau, 0)):
		p.Add(sp+".tau", "%g must be above 0 (the adaptivity τ that keeps the step finite), e.g. tau: 0.001", o.Tau)
	}
	switch {
	case st.Name != StrategyFedAvgM && written("momentum", o.Momentum != 0):
		p.Add(sp+".momentum", "only used by fedavgm (server momentum; a site's SGD momentum is train.momentum); remove it or set name: fedavgm")
	case st.Name == StrategyFedAvgM && !(o.Momentum >= 0 && o.Momentum < 1):
		p.Add(sp+".momentum", "%g must be at least 0 and below 1 (the server momentum β), e.g. momentum: 0.9", o.Momentum)
	}
	if adaptive(st.Name) && written("server_lr", st.ServerLR != DefaultServerLR) {
		p.Add(sp+".server_lr", "%s's server learning rate is eta; remove server_lr and set eta", st.Name)
	}
}

// validateInfluence checks how far one update can move the strategy at sp:
// the weight cap, the norm screening and DP-FedAvg's clip and noise.
func (s *Spec) validateInfluence(p *problems, sp string, st *Strategy) {
	if f := st.MaxWeightFraction; !(f > 0 && f <= 1) {
		p.Add(sp+".max_weight_fraction", "%g must be above 0 and at most 1 (the largest share of a round's weight one site's update may get; 1 switches the cap off), e.g. max_weight_fraction: 0.5", f)
	}
	c := st.Clip
	if enum(p, sp+".clip.mode", c.Mode, "clip mode", knownClipModes()) {
		_, normSet := s.lines[sp+".clip.norm"]
		_, factorSet := s.lines[sp+".clip.adaptive_factor"]
		switch {
		case c.Mode == ClipOff && (normSet || c.Norm != 0):
			p.Add(sp+".clip.norm", "clip mode off screens nothing; remove norm or set mode: reject")
		case c.Mode == ClipOff && factorSet:
			p.Add(sp+".clip.adaptive_factor", "clip mode off screens nothing; remove adaptive_factor or set mode: reject")
		case c.Mode != ClipOff && c.Norm == 0 && c.AdaptiveFactor == 0:
			p.Add(sp+".clip", "mode %s with norm 0 and adaptive_factor 0 bounds nothing; set a norm, an adaptive_factor (10 is the default) or mode: off", c.Mode)
		}
	}
	if !(c.Norm >= 0) || math.IsInf(c.Norm, 0) {
		p.Add(sp+".clip.norm", "%g must be a finite number, at least 0 (an absolute bound on an update's delta norm; 0: none)", c.Norm)
	}
	if f := c.AdaptiveFactor; !(f == 0 || f >= 1) || math.IsInf(f, 0) {
		p.Add(sp+".clip.adaptive_factor", "%g must be 0 (no adaptive bound) or at least 1: a factor below 1 would reject the round's median update itself, e.g. adaptive_factor: 10", f)
	}

	dp := st.DP
	if dp == nil {
		return
	}
	if st.Name != StrategyFedAvg {
		p.Add(sp+".dp", "dp needs strategy fedavg (DP-FedAvg); remove dp or set name: fedavg")
	}
	if _, set := s.lines[sp+".dp.clip"]; !set && dp.Clip == 0 {
		p.Add(sp+".dp.clip", "missing; set the L2 bound S on each update's delta, e.g. clip: 1.0")
	} else if !(dp.Clip > 0) || math.IsInf(dp.Clip, 0) {
		p.Add(sp+".dp.clip", "%g must be a finite number above 0 (the L2 bound S on each update's delta), e.g. clip: 1.0", dp.Clip)
	}
	if !(dp.NoiseMultiplier >= 0) || math.IsInf(dp.NoiseMultiplier, 0) {
		p.Add(sp+".dp.noise_multiplier", "%g must be a finite number, at least 0 (σ: the noise's standard deviation over S), e.g. noise_multiplier: 1.1", dp.NoiseMultiplier)
	}
	if !(dp.Delta > 0 && dp.Delta < 1) {
		p.Add(sp+".dp.delta", "%g must be above 0 and below 1 (the δ of the (ε, δ) guarantee; well below 1/samples), e.g. delta: 1e-5", dp.Delta)
	}
}

// validateAdversaries checks sites.adversaries: each names one of the
// job's sites, once, with at least one well-formed attack.
func (s *Spec) validateAdversaries(p *problems) {
	if len(s.Sites.Adversaries) == 0 {
		return
	}
	central := map[string]int{}
	for i, a := range s.Arms {
		if a.Centralized != nil && a.Centralized.Site != "" {
			central[a.Centralized.Site] = i
		}
	}
	seen := map[string]int{}
	for i, adv := range s.Sites.Adversaries {
		ap := "sites.adversaries." + strconv.Itoa(i)
		first, dup := seen[adv.Site]
		switch {
		case adv.Site == "":
			p.Add(ap+".site", "missing; name the attacking site, one of %s", siteList(s.Sites.Names))
		case dup:
			p.Add(ap+".site", "%q is also sites.adversaries.%d; list each attacking site once, with all its attacks", adv.Site, first)
		case len(s.Sites.Names) > 0 && !slices.Contains(s.Sites.Names, adv.Site):
			p.Add(ap+".site", "%q is not one of the job's sites; name one of %s", adv.Site, siteList(s.Sites.Names))
		}
		if _, ok := seen[adv.Site]; !ok && adv.Site != "" {
			seen[adv.Site] = i
		}
		if arm, ok := central[adv.Site]; ok && adv.Site != "" {
			p.Add(ap+".site", "%q trains the centralized arm arms.%d, the baseline; make another site the adversary or train that arm elsewhere", adv.Site, arm)
		}
		if len(adv.Attacks) == 0 {
			p.Add(ap+".attacks", "missing; list at least one attack, e.g. attacks: [{kind: scale, factor: -1}]")
			continue
		}
		kinds := map[string]int{}
		for j, at := range adv.Attacks {
			s.validateAttack(p, ap+".attacks."+strconv.Itoa(j), at)
			if k, ok := kinds[at.Kind]; ok && at.Kind != "" {
				p.Add(ap+".attacks."+strconv.Itoa(j), "%s is also attacks.%d; list each kind once", at.Kind, k)
			} else {
				kinds[at.Kind] = j
			}
		}
	}
}

// validateAttack checks one attack at path: its kind and the parameter
// that kind takes.
func (s *Spec) validateAttack(p *problems, path string, at Attack) {
	if !enum(p, path+".kind", at.Kind, "attack kind", knownAttacks()) {
		return
	}
	_, factorSet := s.lines[path+".factor"]
	_, samplesSet := s.lines[path+".samples"]
	switch at.Kind {
	case AttackScale:
		switch {
		case !factorSet && at.Factor == 0:
			p.Add(path+".factor", "missing; set the multiplier of the update's delta, e.g. {kind: scale, factor: -1}")
		case at.Factor == 0 || math.IsNaN(at.Factor) || math.IsInf(at.Factor, 0):
			p.Add(path+".factor", "%g must be a finite number other than 0 (0 would send the global model back unchanged), e.g. factor: -1", at.Factor)
		}
	case AttackNoise:
		switch {
		case !factorSet && at.Factor == 0:
			p.Add(path+".factor", "missing; set the noise's standard deviation, e.g. {kind: noise, factor: 0.5}")
		case !(at.Factor > 0) || math.IsInf(at.Factor, 0):
			p.Add(path+".factor", "%g must be a finite number above 0 (the noise's standard deviation), e.g. factor: 0.5", at.Factor)
		}
	default:
		if factorSet || at.Factor != 0 {
			p.Add(path+".factor", "only used by attacks scale and noise; remove it")
		}
	}
	switch {
	case at.Kind == AttackClaimSamples && !samplesSet && at.Samples == 0:
		p.Add(path+".samples", "missing; set the sample count the site claims, e.g. {kind: claim_samples, samples: 1099511627776}")
	case at.Kind == AttackClaimSamples && at.Samples < 1:
		p.Add(path+".samples", "%d must be at least 1 (the sample count the site claims)", at.Samples)
	case at.Kind != AttackClaimSamples && (samplesSet || at.Samples != 0):
		p.Add(path+".samples", "only used by attack claim_samples; remove it")
	}
}

// siteList names a job's sites for messages, the first few of them.
func siteList(names []string) string {
	const most = 5
	if len(names) == 0 {
		return "the job's sites"
	}
	if len(names) <= most {
		return strings.Join(names, ", ")
	}
	return strings.Join(names[:most], ", ") + fmt.Sprintf(" … (%d sites)", len(names))
}

// validSite reports a site name under key that could not be a site's
// certificate name.
func validSite(p *problems, key, name string) {
	if !siteName.MatchString(name) {
		p.Add(key, "%q is not a valid site name; use letters, digits, '.', '_' and '-' (the site's certificate name)", name)
	}
}

// written reports whether the job file wrote the key at path.
func (s *Spec) written(path string) bool {
	_, ok := s.lines[path]
	return ok
}

// validateVirtual checks the sites of a simulation of virtual clients
// (sites.virtual).
func (s *Spec) validateVirtual(p *problems) {
	st := s.Sites
	switch {
	case st.Virtual < 1:
		p.Add("sites.virtual", "%d must be at least 1 (the number of virtual clients)", st.Virtual)
	case st.Virtual > MaxVirtualClients:
		p.Add("sites.virtual", "%d is more than %d virtual clients; lower it", st.Virtual, int64(MaxVirtualClients))
	}
	switch {
	case !s.written("sites.per_round"):
		p.Add("sites.per_round", "missing; set how many virtual clients train each round, e.g. per_round: 1000")
	case st.ClientsPerRound < 1:
		p.Add("sites.per_round", "%d must be at least 1", st.ClientsPerRound)
	case st.ClientsPerRound > MaxClientsPerRound:
		p.Add("sites.per_round", "%d is more than %d clients a round; lower it", st.ClientsPerRound, MaxClientsPerRound)
	case st.Virtual >= 1 && int64(st.ClientsPerRound) > st.Virtual:
		p.Add("sites.per_round", "%d is more than the %d virtual clients (sites.virtual); lower it", st.ClientsPerRound, st.Virtual)
	}
	switch {
	case st.Workers < 1:
		p.Add("sites.workers", "%d must be at least 1 (the worker sites that train the virtual clients)", st.Workers)
	case st.Workers > MaxSites:
		p.Add("sites.workers", "%d is more than %d workers; lower it", st.Workers, MaxSites)
	case st.ClientsPerRound >= 1 && st.Workers > st.ClientsPerRound:
		p.Add("sites.workers", "%d workers are more than the %d clients a round (sites.per_round); lower it, as a worker without clients idles", st.Workers, st.ClientsPerRound)
	}
	if st.SamplesPerClient < 0 {
		p.Add("sites.samples_per_client", "%d must be at least 1, or 0 to draw client sizes from a lognormal", st.SamplesPerClient)
	}
	for _, k := range []string{"count", "names", "fraction", "over_select", "adversaries"} {
		if s.written("sites." + k) {
			p.Add("sites."+k, "not used with sites.virtual: the sites are the workers worker-1 … worker-N (sites.workers) and sites.per_round clients are sampled each round; remove it")
		}
	}
	switch {
	case st.MinPerRound < 1:
		p.Add("sites.min_per_round", "%d must be at least 1", st.MinPerRound)
	case st.Workers >= 1 && st.MinPerRound > st.Workers:
		p.Add("sites.min_per_round", "%d is more than the %d workers (sites.workers); lower it: with virtual clients the quorum counts workers", st.MinPerRound, st.Workers)
	}
	switch k := s.Data.Partition.Kind; k {
	case "", PartitionIID, PartitionDirichlet:
	default:
		p.Add("data.partition.kind", "%q is not drawn for virtual clients; use iid or dirichlet (each client's class mix drawn from Dirichlet(alpha))", k)
	}
}
