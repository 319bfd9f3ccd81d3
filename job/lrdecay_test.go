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

// TestEpochLR: a centralized arm decays per round-equivalent, as the
// issue's example has it: 5 rounds × 2 epochs at 0.5 end at LR/16, not
// LR/512.
func TestEpochLR(t *testing.T) {
	tr := Train{LR: 1, LRDecay: 0.5, Epochs: 2}
	for _, tt := range []struct {
		epoch int
		want  float64
	}{
		{1, 1}, {2, 1}, {3, 0.5}, {4, 0.5}, {9, 1.0 / 16}, {10, 1.0 / 16},
	} {
		if got := tr.EpochLR(tt.epoch); got != tt.want {
			t.Errorf("Train{LR: 1, LRDecay: 0.5, Epochs: 2}.EpochLR(%d) = %v, want %v", tt.epoch, got, tt.want)
		}
	}
	// With one epoch a round, epochs and rounds decay alike.
	one := Train{LR: 0.1, LRDecay: 0.9, Epochs: 1}
	for e := 1; e <= 20; e++ {
		if got, want := one.EpochLR(e), one.RoundLR(e); got != want {
			t.Errorf("EpochLR(%d) = %v, want RoundLR(%d) = %v", e, got, e, want)
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
