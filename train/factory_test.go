package train

import (
	"strings"
	"testing"
)

func TestFactory(t *testing.T) {
	f := &Factory{}
	mlp := Config{Kind: "mlp", Hidden: []int{8}, InputShape: []int{4}, Classes: 3}
	a, err := f.Trainer(mlp)
	if err != nil {
		t.Fatal(err)
	}
	// An equal config, built apart (non-nil empty slices print as nil
	// ones), gets the same trainer; another config another one.
	b, err := f.Trainer(Config{Kind: "mlp", Hidden: []int{8}, Conv: []int{}, InputShape: []int{4}, Classes: 3})
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Error("Trainer(equal config) built a second trainer; want the first shared")
	}
	c, err := f.Trainer(Config{Kind: "mlp", Hidden: []int{16}, InputShape: []int{4}, Classes: 3})
	if err != nil {
		t.Fatal(err)
	}
	if c == a {
		t.Error("Trainer(hidden 16) = the hidden-8 trainer; want its own")
	}
	if err := f.Close(); err != nil {
		t.Errorf("Close() = %v", err)
	}
}

func TestFactoryRefuses(t *testing.T) {
	tests := []struct {
		name string
		f    *Factory
		cfg  Config
		want string
	}{
		{"exec refused", &Factory{ExecRefused: "this site does not run job commands"}, Config{Kind: ExecKind, Command: []string{"python3", "t.py"}},
			`the job's model runs the command ["python3" "t.py"]: this site does not run job commands`},
		{"unknown kind", &Factory{}, Config{Kind: "resnet", InputShape: []int{4}, Classes: 3}, "resnet"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := tt.f.Trainer(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Trainer(%+v) = %v, want an error containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}
