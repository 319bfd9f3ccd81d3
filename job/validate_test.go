package job

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/internal/strictyaml"
	"github.com/google/go-cmp/cmp"
)

// goSpec is a valid job built in Go, without a file.
func goSpec() *Spec {
	s := &Spec{
		Name:   "built-in-go",
		Data:   Data{Dataset: DatasetFashionMNIST},
		Model:  Model{Kind: ModelMLP},
		Sites:  Sites{Count: 3},
		Rounds: 4,
		Arms: []Arm{
			{Centralized: &Centralized{}},
			{Strategy: &Strategy{Name: StrategyFedAvg}},
		},
	}
	s.ApplyDefaults()
	return s
}

func TestApplyDefaultsInGo(t *testing.T) {
	s := goSpec()
	if err := s.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	if got, want := s.Arms[0].Name, "centralized"; got != want {
		t.Errorf("Arms[0].Name = %q, want %q", got, want)
	}
	if got, want := s.Arms[0].Centralized.Epochs, 4; got != want {
		t.Errorf("Arms[0].Centralized.Epochs = %d, want %d", got, want)
	}
	if diff := cmp.Diff([]string{"site-1", "site-2", "site-3"}, s.Sites.Names); diff != "" {
		t.Errorf("Sites.Names mismatch (-want +got):\n%s", diff)
	}
	if got, want := s.Tracking.Experiment, s.Name; got != want {
		t.Errorf("Tracking.Experiment = %q, want %q", got, want)
	}
}

// TestValidateInGo checks problems in specs built in Go: no line is known,
// so messages start with the key path.
func TestValidateInGo(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Spec)
		want   []string
	}{
		{"valid", func(*Spec) {}, nil},
		{"no name", func(s *Spec) { s.Name = " " }, []string{"name: missing; name the job, e.g. name: fmnist-fedavg-vs-fedprox"}},
		{"name with newline", func(s *Spec) { s.Name = "a\nb" }, []string{`name: "a\nb" holds control characters; use printable text`}},
		{"min per round", func(s *Spec) { s.Sites.MinPerRound = 5 }, []string{"sites.min_per_round: 5 is more than sites.count (3); lower it or add sites"}},
		{"too many sites", func(s *Spec) { s.Sites.Count = MaxSites + 1; s.Sites.Names = nil }, []string{"sites.count: 10001 is more than 10000, the most a coordinator is sized for; lower it"}},
		{"100k sites", func(s *Spec) { s.Sites.Count = 100_000; s.Sites.Names = nil }, []string{"sites.count: 100000 is more than 10000, the most a coordinator is sized for; lower it"}},
		{"too many site names", func(s *Spec) {
			s.Sites.Names = make([]string, MaxSites+1)
			for i := range s.Sites.Names {
				s.Sites.Names[i] = "s" + strconv.Itoa(i)
			}
			s.Sites.Count = len(s.Sites.Names)
		}, []string{"sites.names: 10001 sites are more than 10000, the most a coordinator is sized for; split the federation into several jobs"}},
		{"name at the limit", func(s *Spec) { s.Name = strings.Repeat("n", MaxNameLen) }, nil},
		{"name past the limit", func(s *Spec) { s.Name = strings.Repeat("n", MaxNameLen+1) }, []string{`name: 201 characters, "` + strings.Repeat("n", 40) + `"…, is longer than 200; shorten the job's name (it names the tracking experiment and the plot's file)`}},
		{"100k-character name", func(s *Spec) { s.Name = strings.Repeat("x", 100_000) }, []string{`name: 100000 characters, "` + strings.Repeat("x", 40) + `"…, is longer than 200; shorten the job's name (it names the tracking experiment and the plot's file)`}},
		{"both arm kinds", func(s *Spec) { s.Arms[1].Centralized = &Centralized{Epochs: 1} }, []string{"arms.1: has both centralized and strategy; an arm is one or the other, split it into two arms"}},
		{"nan lr", func(s *Spec) { s.Train.LR = nan() }, []string{"train.lr: NaN must be above 0, e.g. lr: 0.05"}},
		{"nan mu", func(s *Spec) { s.Arms[1].Strategy.Name, s.Arms[1].Strategy.Mu = StrategyFedProx, nan() }, []string{"arms.1.strategy.mu: NaN must not be negative (FedProx's proximal term; the paper uses 0.001-1)"}},
		{"env on mlp", func(s *Spec) { s.Model.Env = map[string]string{"A": "1"} }, []string{"model.env: only used by kind exec; remove it or set model.kind: exec"}},
		{"exec env", func(s *Spec) {
			s.Model = Model{Kind: ModelExec, Command: []string{""}, Env: map[string]string{"A=B": "1"}}
		}, []string{
			`model.command.0: empty program name; put the program first, e.g. [python3, train.py]`,
			`model.env: "A=B" is not a valid variable name; use letters, digits and '_'`,
		}},
		{"override momentum", func(s *Spec) { m := 1.5; s.Arms[1].Train = &TrainOverride{Momentum: &m} }, []string{"arms.1.train.momentum: 1.5 must be at least 0 and below 1, e.g. momentum: 0.9"}},
		{"several", func(s *Spec) { s.Rounds = 0; s.Energy.PUE = 0 }, []string{
			"rounds: missing; set the number of federated rounds, e.g. rounds: 20",
			"energy.pue: 0 must be at least 1 (1 is no facility overhead; data centres run 1.1-1.6)",
		}},
		{"synthetic", func(s *Spec) {
			s.Data = Data{Dataset: DatasetSynthetic, Path: "/x", Partition: Partition{Kind: PartitionIID}, Synthetic: Synthetic{Alpha: -1, Dim: 60, Classes: 1}}
		}, []string{
			"data.path: synthetic data is generated, not loaded; remove data.path",
			"data.synthetic.alpha: -1 must not be negative (the FedProx paper uses 0, 0.5 and 1)",
			"data.synthetic.classes: 1 must be between 2 and 1048576 (the paper uses 10)",
		}},
		{"infinite clip norm", func(s *Spec) { s.Arms[1].Strategy.Clip.Norm = math.Inf(1) }, []string{
			"arms.1.strategy.clip.norm: +Inf must be a finite number, at least 0 (an absolute bound on an update's delta norm; 0: none)",
		}},
		{"nan max weight", func(s *Spec) { s.Arms[1].Strategy.MaxWeightFraction = nan() }, []string{
			"arms.1.strategy.max_weight_fraction: NaN must be above 0 and at most 1 (the largest share of a round's weight one site's update may get; 1 switches the cap off), e.g. max_weight_fraction: 0.5",
		}},
		{"eta on fedavg", func(s *Spec) { s.Arms[1].Strategy.ServerOpt.Eta = 0.1 }, []string{
			"arms.1.strategy.eta: only used by fedadam, fedyogi and fedadagrad; remove it or set name: fedadam",
		}},
		{"dp", func(s *Spec) { s.Arms[1].Strategy.DP = &DP{Clip: math.Inf(1), NoiseMultiplier: nan()} }, []string{
			"arms.1.strategy.dp.clip: +Inf must be a finite number above 0 (the L2 bound S on each update's delta), e.g. clip: 1.0",
			"arms.1.strategy.dp.noise_multiplier: NaN must be a finite number, at least 0 (σ: the noise's standard deviation over S), e.g. noise_multiplier: 1.1",
			"arms.1.strategy.dp.delta: 0 must be above 0 and below 1 (the δ of the (ε, δ) guarantee; well below 1/samples), e.g. delta: 1e-5",
		}},
		{"adversaries", func(s *Spec) {
			s.Sites.Adversaries = []Adversary{
				{Site: "site-3", Attacks: []Attack{{Kind: AttackScale, Factor: math.Inf(-1)}, {Kind: AttackNoise, Factor: nan()}}},
				{Site: "site-9", Attacks: []Attack{{Kind: AttackClaimSamples, Samples: -1}}},
				{Site: "site-1"},
			}
		}, []string{
			"sites.adversaries.0.attacks.0.factor: -Inf must be a finite number other than 0 (0 would send the global model back unchanged), e.g. factor: -1",
			"sites.adversaries.0.attacks.1.factor: NaN must be a finite number above 0 (the noise's standard deviation), e.g. factor: 0.5",
			`sites.adversaries.1.site: "site-9" is not one of the job's sites; name one of site-1, site-2, site-3`,
			"sites.adversaries.1.attacks.0.samples: -1 must be at least 1 (the sample count the site claims)",
			"sites.adversaries.2.attacks: missing; list at least one attack, e.g. attacks: [{kind: scale, factor: -1}]",
		}},
		{"redacted uri", func(s *Spec) { s.Tracking.URI = "http://u:secret@/x" }, []string{
			`tracking.uri: "http://u:xxxxx@/x" is not an http(s)://HOST[:PORT] address of an MLflow server`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := goSpec()
			tt.change(s)
			err := s.Validate()
			var got []string
			for _, e := range Problems(err) {
				if e.Line != 0 {
					t.Errorf("problem %q has line %d, want 0 for a spec built in Go", e, e.Line)
				}
				got = append(got, e.Error())
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() problems mismatch (-want +got):\n%s", diff)
			}
			if (err != nil) != (len(tt.want) > 0) || (err != nil && !errors.Is(err, ErrInvalid)) {
				t.Errorf("Validate() = %v, want an ErrInvalid error iff problems are expected", err)
			}
		})
	}
}

func TestProblemsBounded(t *testing.T) {
	s := goSpec()
	s.Model.Hidden = make([]int, 500) // 500 zero-width layers
	err := s.Validate()
	ps := Problems(err)
	if got, want := len(ps), strictyaml.MaxProblems+1; got != want {
		t.Fatalf("len(Problems) = %d, want %d", got, want)
	}
	if last := ps[len(ps)-1].Error(); !strings.Contains(last, "and 400 more problems") {
		t.Errorf("last problem = %q, want it to count the rest", last)
	}
}
