package job

import (
	"bufio"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// wants returns the "# want: ..." lines at the top of a testdata file.
func wants(t *testing.T, data []byte) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "#") {
			break
		}
		if w, ok := strings.CutPrefix(line, "# want: "); ok {
			out = append(out, w)
		}
	}
	return out
}

func TestParseTestdata(t *testing.T) {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var good, bad int
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			s, err := Load(f)
			switch {
			case strings.HasSuffix(f, ".good.yaml"):
				good++
				if err != nil {
					t.Fatalf("Parse(%s) = %v, want no error", f, err)
				}
				if err := s.Validate(); err != nil {
					t.Errorf("Parse(%s).Validate() = %v, want nil", f, err)
				}
			case strings.HasSuffix(f, ".bad.yaml"):
				bad++
				ws := wants(t, data)
				if len(ws) == 0 {
					t.Fatalf("%s has no \"# want: ...\" line", f)
				}
				if err == nil {
					t.Fatalf("Parse(%s) = nil error, want %q", f, ws)
				}
				if s != nil {
					t.Errorf("Parse(%s) returned a spec with error %v", f, err)
				}
				for _, w := range ws {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("Parse(%s) = %q, want it to contain %q", f, err, w)
					}
				}
				if !errors.Is(err, ErrInvalid) && !errors.Is(err, ErrSyntax) {
					t.Errorf("Parse(%s) = %v, want it to match ErrInvalid or ErrSyntax", f, err)
				}
			default:
				t.Fatalf("%s is neither .good.yaml nor .bad.yaml", f)
			}
		})
	}
	if good < 4 || bad < 40 {
		t.Errorf("found %d good and %d bad testdata files, want at least 4 and 40", good, bad)
	}
}

func TestParseDesignExample(t *testing.T) {
	s, err := Load("testdata/design.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Spec{
		Name:     "fmnist-fedavg-vs-fedprox",
		Seed:     42,
		Tracking: Tracking{URI: "sqlite:cohort.db", Experiment: "fashion-mnist"},
		Data: Data{
			Dataset:      DatasetFashionMNIST,
			Partition:    Partition{Kind: PartitionDirichlet, Alpha: 0.5},
			TestFraction: DefaultTestFraction,
		},
		Model:  Model{Kind: ModelMLP, Hidden: []int{200}},
		Sites:  Sites{Count: 4, Names: []string{"site-1", "site-2", "site-3", "site-4"}, MinPerRound: 3, Fraction: 1},
		Rounds: 20,
		Train:  Train{Epochs: 1, BatchSize: 32, LR: 0.05, LRDecay: 1},
		Arms: []Arm{
			{Name: "centralized", Centralized: &Centralized{Epochs: 20}},
			{Name: "fedavg", Strategy: &Strategy{Name: StrategyFedAvg, ServerLR: 1, MaxWeightFraction: 0.5, Clip: defaultClip}},
			{Name: "fedprox", Strategy: &Strategy{Name: StrategyFedProx, Mu: 0.01, ServerLR: 1, MaxWeightFraction: 0.5, Clip: defaultClip}},
		},
		Eval:     Eval{Every: 1},
		Deadline: Deadline{Round: 10 * time.Minute},
		Energy:   Energy{Interval: 100 * time.Millisecond, CarbonGPerKWh: 380, PUE: 1, CPUWattsPerCore: DefaultCPUWattsPerCore},
	}
	if diff := cmp.Diff(want, s, cmpopts.IgnoreUnexported(Spec{}), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Load(design.good.yaml) mismatch (-want +got):\n%s", diff)
	}
	for i, want := range []bool{false, true, true} {
		if got := s.Arms[i].Federated(); got != want {
			t.Errorf("Arms[%d].Federated() = %v, want %v", i, got, want)
		}
	}
}

func TestParseDefaults(t *testing.T) {
	s, err := Load("testdata/minimal.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := &Spec{
		Name:     "t",
		Tracking: Tracking{URI: DefaultTrackingURI, Experiment: "t"},
		Data:     Data{Dataset: DatasetFashionMNIST, Partition: Partition{Kind: PartitionIID}, TestFraction: 0.1},
		Model:    Model{Kind: ModelMLP, Hidden: []int{200}},
		Sites:    Sites{Count: 4, Names: []string{"site-1", "site-2", "site-3", "site-4"}, MinPerRound: 4, Fraction: 1},
		Rounds:   5,
		Train:    Train{Epochs: 1, BatchSize: 32, LR: 0.05, LRDecay: 1},
		Arms:     []Arm{{Name: "fedavg", Strategy: &Strategy{Name: StrategyFedAvg, ServerLR: 1, MaxWeightFraction: 0.5, Clip: defaultClip}}},
		Eval:     Eval{Every: 1},
		Deadline: Deadline{Round: 10 * time.Minute},
		Energy:   Energy{Interval: 100 * time.Millisecond, CarbonGPerKWh: 475, PUE: 1, CPUWattsPerCore: 10},
	}
	if diff := cmp.Diff(want, s, cmpopts.IgnoreUnexported(Spec{}), cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Load(minimal.good.yaml) mismatch (-want +got):\n%s", diff)
	}
}

// TestParseExplicitZeros checks that values written as zero are kept, not
// replaced by defaults, and that anchors, merge keys and overrides resolve.
func TestParseExplicitZeros(t *testing.T) {
	s, err := Load("testdata/anchors.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if s.Data.TestFraction != 0 {
		t.Errorf("Data.TestFraction = %g, want 0 (written as 0)", s.Data.TestFraction)
	}
	if got, want := s.Sites.PerRound(), 5; got != want {
		t.Errorf("Sites.PerRound() = %d, want %d", got, want)
	}
	job := Train{Epochs: 2, BatchSize: 64, LR: 0.1, Momentum: 0.9, WeightDecay: 0.0001, LRDecay: 1}
	tests := []struct {
		arm  int
		want Train
	}{
		{0, Train{Epochs: 2, BatchSize: 64, LR: 0.01, Momentum: 0.9, WeightDecay: 0.0001, LRDecay: 1}},
		{1, job},
		{2, Train{Epochs: 2, BatchSize: 64, LR: 0.2, Momentum: 0, WeightDecay: 0.0001, LRDecay: 1}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, s.ArmTrain(s.Arms[tt.arm])); diff != "" {
			t.Errorf("ArmTrain(arms[%d]) mismatch (-want +got):\n%s", tt.arm, diff)
		}
	}
	if got, want := s.Arms[0].Centralized.Epochs, 100; got != want {
		t.Errorf("arms[0].centralized.epochs = %d, want %d (rounds × epochs)", got, want)
	}
	if got := s.Arms[2].Strategy.Mu; got != 0 {
		t.Errorf("arms[2].strategy.mu = %g, want 0", got)
	}
	before := *s
	s.ApplyDefaults()
	if diff := cmp.Diff(&before, s, cmpopts.IgnoreUnexported(Spec{})); diff != "" {
		t.Errorf("ApplyDefaults on a parsed spec changed it (-before +after):\n%s", diff)
	}
}

func TestParseFileErrors(t *testing.T) {
	tests := []struct {
		name string
		data string
		is   error
		want string
	}{
		{"empty", "", ErrEmpty, "examples/fashion-mnist/job.yaml"},
		{"comments only", "# nothing here\n", ErrEmpty, "job file is empty"},
		{"null", "~\n", ErrEmpty, "job file is empty"},
		{"too large", strings.Repeat("#", MaxSize+1), ErrTooLarge, "more than 1048576 bytes"},
		{"syntax", "name: [unclosed\n", ErrSyntax, "not valid YAML"},
		{"scalar root", "hello\n", ErrInvalid, `line 1, column 1: expected a mapping of keys, such as {name: my-job, rounds: 20, ...}, not "hello"`},
		{"tab indent", "name: t\n\trounds: 2\n", ErrSyntax, "line 2: job file is not valid YAML: found a tab character that violates indentation"},
		// yaml/v3 reports these one line early; Parse corrects it.
		{"unclosed flow mapping", "name: t\ndata: {dataset: x\nmodel: {kind: mlp}\n", ErrSyntax, "line 2: job file is not valid YAML: did not find expected ',' or '}'"},
		{"unclosed flow sequence at the end", "arms: [1\n", ErrSyntax, "line 2: job file is not valid YAML: did not find expected ',' or ']'"},
		{"bad block mapping", "name: t\ntrain:\n  lr: 1\n - x\n", ErrSyntax, "line 4: job file is not valid YAML: did not find expected key"},
		{"unclosed quote", "name: t\nrounds: 'x\n", ErrSyntax, "line 2: job file is not valid YAML: found unexpected end of stream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.data))
			if !errors.Is(err, tt.is) {
				t.Errorf("Parse(%.20q) = %v, want %v", tt.data, err, tt.is)
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Parse(%.20q) = %v, want it to contain %q", tt.data, err, tt.want)
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "missing.yaml"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load(missing) = %v, want os.ErrNotExist", err)
	}
	f := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(f, []byte("name: t\nroundz: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(f)
	if err == nil || !strings.Contains(err.Error(), f+`:2:1: unknown key "roundz" at the top level (did you mean "rounds"?)`) {
		t.Errorf("Load(bad) = %v, want the file name and the line", err)
	}
}

// TestParseNoCascade checks that a key that failed to decode is not also
// reported as missing or invalid.
func TestParseNoCascade(t *testing.T) {
	data := "name: t\ndata: {dataset: fashion-mnist}\nmodel: {kind: mlp}\nsites: {count: x}\nrounds: ten\narms: 5\n"
	_, err := Parse([]byte(data))
	got := Problems(err)
	var lines []string
	for _, e := range got {
		lines = append(lines, e.Error())
	}
	want := []string{
		`line 4, column 16: sites.count: "x" is not an integer; write a whole number such as 10`,
		`line 5, column 9: rounds: "ten" is not an integer; write a whole number such as 10`,
		`line 6, column 7: arms: expected a list such as [{name: fedavg, strategy: {name: fedavg}}], not "5"`,
	}
	if diff := cmp.Diff(want, lines); diff != "" {
		t.Errorf("Parse problems mismatch (-want +got):\n%s", diff)
	}
}

func TestParseMergeAndAliases(t *testing.T) {
	data := `
defaults: &d {epochs: 3, lr: 0.2}
name: t
`
	// Unknown top-level keys stay errors even when they only hold anchors.
	if _, err := Parse([]byte(data)); err == nil || !strings.Contains(err.Error(), `line 2, column 1: unknown key "defaults"`) {
		t.Errorf("Parse(anchor holder) = %v, want unknown key \"defaults\"", err)
	}
	data = `
x-train: &t {epochs: 3, lr: 0.2}
name: t
data: {dataset: fashion-mnist}
model: {kind: mlp, hidden: &h [64, 32]}
sites: {count: 2}
rounds: 2
arms:
  - {name: a, strategy: fedavg, train: {<<: [*t, {batch_size: 8}], epochs: 1}}
`
	s, err := Parse([]byte(data))
	if err != nil {
		t.Fatal(err)
	}
	want := Train{Epochs: 1, BatchSize: 8, LR: 0.2, LRDecay: 1}
	if diff := cmp.Diff(want, s.ArmTrain(s.Arms[0])); diff != "" {
		t.Errorf("ArmTrain with merge keys mismatch (-want +got):\n%s", diff)
	}
}

func TestParseNestedMergeBomb(t *testing.T) {
	// Each level merges the previous one ten times: without a bound this
	// would expand to 10^8 keys.
	var b strings.Builder
	b.WriteString("a0: &a0 {lr: 1}\n")
	for i := 1; i <= 8; i++ {
		prev := "*a" + string(rune('0'+i-1))
		b.WriteString("a" + string(rune('0'+i)) + ": &a" + string(rune('0'+i)) + " {<<: [")
		for j := range 10 {
			if j > 0 {
				b.WriteString(", ")
			}
			b.WriteString(prev)
		}
		b.WriteString("]}\n")
	}
	b.WriteString("train: *a8\n")
	_, err := Parse([]byte(b.String()))
	if want := "train: << merges are nested too deeply; write the keys out"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("Parse(merge bomb) = %v, want it to contain %q", err, want)
	}
}

func TestStrategyShorthand(t *testing.T) {
	s, err := Parse([]byte("name: t\ndata: {dataset: fashion-mnist}\nmodel: {kind: logreg}\nsites: {count: 2}\nrounds: 1\narms: [{strategy: fedprox}, {centralized: }]\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Arm{
		{Name: "fedprox", Strategy: &Strategy{Name: StrategyFedProx, ServerLR: 1, MaxWeightFraction: 1, Clip: defaultClip}}, // 2 sites: no cap
		{Name: "centralized", Centralized: &Centralized{Epochs: 1}},
	}
	if diff := cmp.Diff(want, s.Arms); diff != "" {
		t.Errorf("arms mismatch (-want +got):\n%s", diff)
	}
}

func TestClosest(t *testing.T) {
	keys := []string{"epochs", "batch_size", "lr", "momentum", "weight_decay"}
	tests := []struct {
		word, want string
	}{
		{"epocs", "epochs"},
		{"epoch", "epochs"},
		{"Epochs", "epochs"},
		{"batchSize", "batch_size"},
		{"batch-size", "batch_size"},
		{"bach_size", "batch_size"},
		{"learning_rate", "lr"},
		{"learningRate", "lr"},
		{"weightdecay", "weight_decay"},
		{"momentun", "momentum"},
		{"colour", ""},
		{"x", ""},
		{strings.Repeat("e", 1000), ""},
	}
	for _, tt := range tests {
		if got := closest(tt.word, keys); got != tt.want {
			t.Errorf("closest(%.20q) = %q, want %q", tt.word, got, tt.want)
		}
	}
}

func TestPerRound(t *testing.T) {
	tests := []struct {
		s    Sites
		want int
	}{
		{Sites{Count: 4, Fraction: 1}, 4},
		{Sites{Count: 4, Fraction: 0.5}, 2},
		{Sites{Count: 4, Fraction: 0.3}, 2},
		{Sites{Count: 10, Fraction: 0.1}, 1},
		{Sites{Count: 100, Fraction: 0.01}, 1},
		{Sites{Count: 30, Fraction: 0.33}, 10},
		{Sites{Count: 4, Fraction: 0.0001}, 1},
		{Sites{Count: 4, Fraction: 0}, 4},
		{Sites{Count: 4, Fraction: 2}, 4},
		{Sites{Count: 0, Fraction: 1}, 0},
	}
	for _, tt := range tests {
		if got := tt.s.PerRound(); got != tt.want {
			t.Errorf("%+v.PerRound() = %d, want %d", tt.s, got, tt.want)
		}
	}
}

func TestExamples(t *testing.T) {
	var jobs int
	err := filepath.WalkDir("../examples", func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		// examples/ also holds coordinator and site configs; a job has
		// at least one of the job's own top-level keys.
		if !looksLikeJob(data) {
			return nil
		}
		jobs++
		if _, err := Parse(data); err != nil {
			t.Errorf("Parse(%s) = %v, want no error", path, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if jobs < 3 {
		t.Errorf("found %d job files under ../examples, want at least the 3 Fashion-MNIST ones", jobs)
	}
	q, err := Load("../examples/fashion-mnist/quick.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// The centralized arm defaults to rounds × epochs passes over the data.
	if got, want := q.Arms[0].Centralized.Epochs, q.Rounds*q.Train.Epochs; got != want {
		t.Errorf("quick.yaml centralized epochs = %d, want rounds × epochs = %d", got, want)
	}
}

// TestRobustExample checks the study of examples/robust: the attacked job
// and its clean twin compare the same arms, and only the first has the
// adversary.
func TestRobustExample(t *testing.T) {
	attacked, err := Load("../examples/robust/job.yaml")
	if err != nil {
		t.Fatal(err)
	}
	clean, err := Load("../examples/robust/clean.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []Adversary{{Site: "site-4", Attacks: []Attack{
		{Kind: AttackClaimSamples, Samples: 1 << 40}, {Kind: AttackScale, Factor: -1},
	}}}
	if diff := cmp.Diff(want, attacked.Sites.Adversaries); diff != "" {
		t.Errorf("job.yaml adversaries (-want +got):\n%s", diff)
	}
	if len(clean.Sites.Adversaries) != 0 {
		t.Errorf("clean.yaml adversaries = %v, want none", clean.Sites.Adversaries)
	}
	if diff := cmp.Diff(attacked.Arms, clean.Arms); diff != "" {
		t.Errorf("the two jobs' arms differ (-job.yaml +clean.yaml):\n%s", diff)
	}
	if got, want := attacked.Arms[0].Strategy, (&Strategy{Name: StrategyFedAvg, ServerLR: 1, MaxWeightFraction: 1, Clip: Clip{Mode: ClipOff, AdaptiveFactor: DefaultAdaptiveFactor}}); !cmp.Equal(got, want) {
		t.Errorf("fedavg_unprotected = %+v, want %+v", got, want)
	}
	if got := attacked.Arms[1].Strategy; got.MaxWeightFraction != DefaultMaxWeightFraction || got.Clip != defaultClip {
		t.Errorf("fedavg = %+v, want the default cap and screening", got)
	}
}

func looksLikeJob(data []byte) bool {
	for _, k := range []string{"rounds:", "arms:", "model:", "train:"} {
		if bytes.HasPrefix(data, []byte(k)) || bytes.Contains(data, []byte("\n"+k)) {
			return true
		}
	}
	return false
}

func TestSetInitWeights(t *testing.T) {
	src, err := os.ReadFile("testdata/exec-init-weights.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	out, err := SetInitWeights(src, WeightsRefPrefix+strings.Repeat("ab", 32))
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(SetInitWeights(...)) = %v\n%s", err, out)
	}
	if got, want := s.Model.Init.Weights, "sha256:"+strings.Repeat("ab", 32); got != want {
		t.Errorf("model.init.weights = %q, want %q", got, want)
	}
	if _, err := SetInitWeights([]byte("name: x\nmodel: {kind: mlp}\n"), "sha256:00"); err == nil || !strings.Contains(err.Error(), "no init key") {
		t.Errorf("SetInitWeights without model.init = %v, want an error naming init", err)
	}
}

func TestRobustStrategyDefaults(t *testing.T) {
	s, err := Load("testdata/robust.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []Strategy
	for _, a := range s.Arms {
		got = append(got, *a.Strategy)
	}
	want := []Strategy{
		{Name: StrategyMedian, ServerLR: 1},
		{Name: StrategyTrimmedMean, ServerLR: 1, Beta: DefaultBeta},
		{Name: StrategyTrimmedMean, ServerLR: 0.5}, // beta: 0 written: no trimming
		{Name: StrategyKrum, ServerLR: 1, F: DefaultF},
		{Name: StrategyKrum, ServerLR: 1}, // f: 0 written
		{Name: StrategyMultiKrum, ServerLR: 1, F: 1, M: 3},
	}
	for i := range want {
		want[i].MaxWeightFraction, want[i].Clip = DefaultMaxWeightFraction, defaultClip
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("robust.good.yaml strategies (-want +got):\n%s", diff)
	}
}

// defaultClip is a strategy's norm screening when the job leaves it out.
var defaultClip = Clip{Mode: ClipReject, AdaptiveFactor: DefaultAdaptiveFactor}

func TestServerOptDefaults(t *testing.T) {
	s, err := Load("testdata/serveropt.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var got []ServerOpt
	for _, a := range s.Arms {
		got = append(got, a.Strategy.ServerOpt)
	}
	want := []ServerOpt{
		{Eta: 0.01, Beta1: 0.9, Beta2: 0.99, Tau: 1e-3},
		{Eta: 0.03, Beta1: 0, Beta2: 0.999, Tau: 0.01}, // beta1: 0 written: no first moment
		{Eta: 0.1, Tau: 1e-3},                          // fedadagrad: no betas
		{Momentum: 0.9},                                // fedavgm steps by server_lr
		{Momentum: 0},                                  // momentum: 0 written
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("serveropt.good.yaml server optimizers (-want +got):\n%s", diff)
	}
	if got, want := s.Arms[3].Strategy.ServerLR, 0.5; got != want {
		t.Errorf("fedavgm server_lr = %g, want %g", got, want)
	}
}

func TestInfluenceDefaults(t *testing.T) {
	s, err := Load("testdata/influence.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	type influence struct {
		MaxWeightFraction float64
		Clip              Clip
		DP                *DP
	}
	var got []influence
	for _, a := range s.Arms {
		got = append(got, influence{a.Strategy.MaxWeightFraction, a.Strategy.Clip, a.Strategy.DP})
	}
	want := []influence{
		{0.5, defaultClip, nil},
		{1, Clip{Mode: ClipOff, AdaptiveFactor: DefaultAdaptiveFactor}, nil}, // clip: off
		{0.5, Clip{Mode: ClipClip, AdaptiveFactor: DefaultAdaptiveFactor}, nil},
		{0.5, Clip{Mode: ClipReject, Norm: 5}, nil}, // adaptive_factor: 0 written: absolute bound only
		{0.3, Clip{Mode: ClipReject, AdaptiveFactor: 3}, nil},
		{0.5, Clip{Mode: ClipClip, AdaptiveFactor: DefaultAdaptiveFactor}, &DP{Clip: 1, NoiseMultiplier: 1.1, Delta: DefaultDPDelta}},
		{0.5, defaultClip, &DP{Clip: 0.5, Delta: 1e-6}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("influence.good.yaml (-want +got):\n%s", diff)
	}

	two, err := Load("testdata/two-sites.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if got := two.Arms[0].Strategy.MaxWeightFraction; got != 1 {
		t.Errorf("two sites: max_weight_fraction = %g, want 1 (no cap by default under 3 sites)", got)
	}
}

func TestAdversaries(t *testing.T) {
	s, err := Load("testdata/adversaries.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := []Adversary{
		{Site: "mallory", Attacks: []Attack{{Kind: AttackClaimSamples, Samples: 1 << 40}, {Kind: AttackScale, Factor: -1}}},
		{Site: "eve", Attacks: []Attack{
			{Kind: AttackLabelFlip}, {Kind: AttackSignFlip}, {Kind: AttackNoise, Factor: 0.5},
			{Kind: AttackScale, Factor: 3}, {Kind: AttackClaimSamples, Samples: 100000},
		}},
		{Site: "inria", Attacks: []Attack{{Kind: AttackNoise, Factor: 0.01}, {Kind: AttackLabelFlip}, {Kind: AttackSignFlip}}},
	}
	if diff := cmp.Diff(want, s.Sites.Adversaries); diff != "" {
		t.Errorf("adversaries.good.yaml (-want +got):\n%s", diff)
	}
}

// TestSimulatedSites: sites given by count alone are simulated (named
// site-1 … site-N by the defaults); listed names are not, even when they
// read site-1 … site-N, and a Spec built in Go is judged the same way.
func TestSimulatedSites(t *testing.T) {
	const head = "name: x\ndata: {dataset: fashion-mnist}\nmodel: {kind: mlp}\nrounds: 1\narms: [{name: fedavg, strategy: fedavg}]\n"
	for _, tt := range []struct {
		sites string
		want  bool
	}{
		{"sites: {count: 3}", true},
		{"sites: {count: 3, min_per_round: 2}", true},
		{"sites: {names: [kit, unibo]}", false},
		{"sites: {names: [site-1, site-2]}", false},
		{"sites: {count: 2, names: [kit, unibo]}", false},
	} {
		s, err := Parse([]byte(head + tt.sites + "\n"))
		if err != nil {
			t.Fatalf("Parse(%s): %v", tt.sites, err)
		}
		if got := s.SimulatedSites(); got != tt.want {
			t.Errorf("Parse(%s).SimulatedSites() = %v, want %v (names %v)", tt.sites, got, tt.want, s.Sites.Names)
		}
		s.ApplyDefaults()
		if got := s.SimulatedSites(); got != tt.want {
			t.Errorf("after ApplyDefaults again, %s: SimulatedSites() = %v, want %v", tt.sites, got, tt.want)
		}
	}
	for _, tt := range []struct {
		sites Sites
		want  bool
	}{
		{Sites{Count: 2}, true},
		{Sites{Names: []string{"kit"}}, false},
	} {
		s := &Spec{Sites: tt.sites}
		s.ApplyDefaults()
		if got := s.SimulatedSites(); got != tt.want {
			t.Errorf("Spec{Sites: %+v}.ApplyDefaults().SimulatedSites() = %v, want %v", tt.sites, got, tt.want)
		}
	}
}
