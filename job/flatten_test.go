package job

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestFlatten(t *testing.T) {
	s, err := Load("testdata/design.good.yaml")
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"name":                                 "fmnist-fedavg-vs-fedprox",
		"seed":                                 "42",
		"rounds":                               "20",
		"tracking.uri":                         "sqlite:cohort.db",
		"tracking.experiment":                  "fashion-mnist",
		"data.dataset":                         "fashion-mnist",
		"data.path":                            "",
		"data.test_fraction":                   "0.1",
		"data.partition.kind":                  "dirichlet",
		"data.partition.alpha":                 "0.5",
		"model.kind":                           "mlp",
		"model.hidden":                         "[200]",
		"sites.count":                          "4",
		"sites.names":                          `["site-1","site-2","site-3","site-4"]`,
		"sites.min_per_round":                  "3",
		"sites.fraction":                       "1",
		"sites.over_select":                    "0",
		"deadline.retries":                     "0",
		"train.epochs":                         "1",
		"train.batch_size":                     "32",
		"train.lr":                             "0.05",
		"train.momentum":                       "0",
		"train.weight_decay":                   "0",
		"train.lr_decay":                       "1",
		"arms.0.name":                          "centralized",
		"arms.0.centralized.epochs":            "20",
		"arms.1.name":                          "fedavg",
		"arms.1.strategy.name":                 "fedavg",
		"arms.1.strategy.server_lr":            "1",
		"arms.1.strategy.max_weight_fraction":  "0.5",
		"arms.1.strategy.clip.mode":            "reject",
		"arms.1.strategy.clip.norm":            "0",
		"arms.1.strategy.clip.adaptive_factor": "10",
		"arms.2.name":                          "fedprox",
		"arms.2.strategy.name":                 "fedprox",
		"arms.2.strategy.mu":                   "0.01",
		"arms.2.strategy.server_lr":            "1",
		"arms.2.strategy.max_weight_fraction":  "0.5",
		"arms.2.strategy.clip.mode":            "reject",
		"arms.2.strategy.clip.norm":            "0",
		"arms.2.strategy.clip.adaptive_factor": "10",
		"eval.every":                           "1",
		"deadline.round":                       "10m0s",
		"energy.interval":                      "100ms",
		"energy.carbon_g_per_kwh":              "380",
		"energy.pue":                           "1",
		"energy.cpu_watts_per_core":            "10",
	}
	if diff := cmp.Diff(want, s.Flatten()); diff != "" {
		t.Errorf("Flatten() mismatch (-want +got):\n%s", diff)
	}
}

func TestFlattenKinds(t *testing.T) {
	tests := []struct {
		file string
		want map[string]string // a subset of the flattened keys
		gone []string          // keys that must not appear
	}{
		{"testdata/exec.good.yaml", map[string]string{
			"model.command":                  `["python3","examples/pytorch/train.py","--amp"]`,
			"model.env":                      `["CUDA_VISIBLE_DEVICES","OMP_NUM_THREADS"]`,
			"data.partition.shards_per_site": "2",
			"sites.names":                    `["kit","unibo","inria"]`,
			"tracking.uri":                   "https://mlflow.example.org:5000",
			"arms.0.centralized.epochs":      "10",
			"arms.1.strategy.server_lr":      "0.5",
			"deadline.round":                 "1h30m0s",
			"energy.cpu_watts_per_core":      "0",
			"model.exec.mode":                "per-task",
		}, []string{"model.hidden", "arms.1.strategy.mu", "data.synthetic.alpha"}},
		{"testdata/exec-deployed.good.yaml", map[string]string{
			"model.init.site":           "kit",
			"eval.site":                 "inria",
			"arms.0.centralized.site":   "pooled",
			"arms.0.centralized.epochs": "2",
		}, []string{"model.init.weights"}},
		{"testdata/exec-init-weights.good.yaml", map[string]string{
			"model.init.weights": "init.safetensors",
		}, []string{"model.init.site", "eval.site"}},
		{"testdata/exec-persistent.good.yaml", map[string]string{
			"model.exec.mode": "persistent",
		}, nil},
		{"testdata/synthetic.good.yaml", map[string]string{
			"data.synthetic.alpha":            "1",
			"data.synthetic.dim":              "60",
			"data.synthetic.classes":          "10",
			"data.synthetic.samples_per_site": "200",
			"arms.1.strategy.mu":              "1",
			"eval.every":                      "10",
		}, []string{"data.partition.kind", "data.path", "model.hidden", "model.params"}},
		{"testdata/transfer.good.yaml", map[string]string{
			"model.kind":   "transfer",
			"model.params": "1000",
		}, []string{"model.hidden", "model.conv", "model.command"}},
		{"testdata/robust.good.yaml", map[string]string{
			"arms.0.strategy.name":      "median",
			"arms.1.strategy.beta":      "0.1",
			"arms.2.strategy.beta":      "0",
			"arms.2.strategy.server_lr": "0.5",
			"arms.3.strategy.f":         "1",
			"arms.4.strategy.f":         "0",
			"arms.5.strategy.f":         "1",
			"arms.5.strategy.m":         "3",
		}, []string{"arms.0.strategy.beta", "arms.0.strategy.f", "arms.1.strategy.f", "arms.3.strategy.m", "arms.3.strategy.beta", "arms.0.strategy.mu"}},
		{"testdata/serveropt.good.yaml", map[string]string{
			"arms.0.strategy.eta":      "0.01",
			"arms.0.strategy.beta1":    "0.9",
			"arms.0.strategy.beta2":    "0.99",
			"arms.0.strategy.tau":      "0.001",
			"arms.1.strategy.beta1":    "0",
			"arms.2.strategy.eta":      "0.1",
			"arms.3.strategy.momentum": "0.9",
			"arms.4.strategy.momentum": "0",
		}, []string{"arms.0.strategy.momentum", "arms.2.strategy.beta1", "arms.3.strategy.eta", "arms.3.strategy.tau"}},
		{"testdata/influence.good.yaml", map[string]string{
			"arms.0.strategy.max_weight_fraction":  "0.5",
			"arms.0.strategy.clip.mode":            "reject",
			"arms.0.strategy.clip.adaptive_factor": "10",
			"arms.1.strategy.max_weight_fraction":  "1",
			"arms.1.strategy.clip.mode":            "off",
			"arms.3.strategy.clip.norm":            "5",
			"arms.3.strategy.clip.adaptive_factor": "0",
			"arms.5.strategy.dp.clip":              "1",
			"arms.5.strategy.dp.noise_multiplier":  "1.1",
			"arms.5.strategy.dp.delta":             "1e-05",
		}, []string{"arms.1.strategy.clip.norm", "arms.1.strategy.clip.adaptive_factor", "arms.0.strategy.dp.clip", "arms.0.strategy.eta"}},
		{"testdata/adversaries.good.yaml", map[string]string{
			"sites.adversaries.0.site":              "mallory",
			"sites.adversaries.0.attacks.0.kind":    "claim_samples",
			"sites.adversaries.0.attacks.0.samples": "1099511627776",
			"sites.adversaries.0.attacks.1.kind":    "scale",
			"sites.adversaries.0.attacks.1.factor":  "-1",
			"sites.adversaries.1.attacks.0.kind":    "label_flip",
			"sites.adversaries.1.attacks.2.factor":  "0.5",
		}, []string{"sites.adversaries.0.attacks.0.factor", "sites.adversaries.1.attacks.0.factor", "sites.adversaries.1.attacks.1.samples"}},
		{"testdata/register.good.yaml", map[string]string{
			"register.name":        "fmnist-classifier",
			"register.alias_best":  "champion",
			"register.best_metric": "accuracy_per_kj",
		}, nil},
		{"testdata/register-shorthand.good.yaml", map[string]string{
			"register.name":        "fmnist-classifier",
			"register.best_metric": "test_accuracy",
		}, []string{"register.alias_best"}},
		{"testdata/anchors.good.yaml", map[string]string{
			"arms.0.train.lr":       "0.01",
			"arms.0.train.momentum": "0.9",
			"arms.2.train.momentum": "0",
			"arms.2.strategy.mu":    "0",
			"model.conv":            "[16,32]",
			"data.partition.labels": "2",
			"data.test_fraction":    "0",
		}, []string{"arms.1.train.lr", "model.hidden"}},
	}
	for _, tt := range tests {
		s, err := Load(tt.file)
		if err != nil {
			t.Fatal(err)
		}
		got := s.Flatten()
		for k, want := range tt.want {
			if got[k] != want {
				t.Errorf("Flatten(%s)[%q] = %q, want %q", tt.file, k, got[k], want)
			}
		}
		for _, k := range tt.gone {
			if v, ok := got[k]; ok {
				t.Errorf("Flatten(%s)[%q] = %q, want no such key", tt.file, k, v)
			}
		}
	}
}

func TestFlattenRedacts(t *testing.T) {
	s := goSpec()
	s.Tracking.URI = "https://alice:s3cret@mlflow.example.org"
	s.Model = Model{Kind: ModelExec, Command: []string{"run"}, Env: map[string]string{"HF_TOKEN": "hf_abc"}}
	f := s.Flatten()
	if got, want := f["tracking.uri"], "https://alice:xxxxx@mlflow.example.org"; got != want {
		t.Errorf("Flatten()[tracking.uri] = %q, want %q", got, want)
	}
	if got, want := f["model.env"], `["HF_TOKEN"]`; got != want {
		t.Errorf("Flatten()[model.env] = %q, want %q", got, want)
	}
}
