package job

import (
	"math"
	"strings"
	"testing"
)

func TestRoundLR(t *testing.T) {
	tests := []struct {
		decay float64
		round int
		want  float64
	}{
		{1, 5, 0.1},
		{0.5, 1, 0.1},
		{0.5, 3, 0.025},
		{0.9, 21, 0.1 * math.Pow(0.9, 20)},
	}
	for _, tt := range tests {
		tr := Train{LR: 0.1, LRDecay: tt.decay}
		if got := tr.RoundLR(tt.round); math.Abs(got-tt.want) > 1e-15 {
			t.Errorf("Train{LR: 0.1, LRDecay: %v}.RoundLR(%d) = %v, want %v", tt.decay, tt.round, got, tt.want)
		}
	}
}

func TestLRDecayValidation(t *testing.T) {
	const base = "name: x\nrounds: 2\ndata: {dataset: fashion-mnist}\nmodel: {kind: mlp}\nsites: {count: 2}\narms: [{strategy: fedavg}]\n"
	for _, tt := range []struct {
		train, want string
	}{
		{"train: {lr_decay: 1.5}\n", "train.lr_decay: 1.5 must be above 0 and at most 1"},
		{"train: {lr_decay: 0}\n", "train.lr_decay: 0 must be above 0"},
		{"train: {lr_decay: 0.9}\n", ""},
	} {
		spec, err := Parse([]byte(base + tt.train))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Parse(%q) = %v", tt.train, err)
		case tt.want == "" && spec.Train.LRDecay != 0.9:
			t.Errorf("Parse(%q): lr_decay = %v, want 0.9", tt.train, spec.Train.LRDecay)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("Parse(%q) = %v, want an error with %q", tt.train, err, tt.want)
		}
	}
}
