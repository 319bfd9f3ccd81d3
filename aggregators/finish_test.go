package aggregators

import (
	"errors"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/model"
)

// TestFinishMatchesResult checks that Finish, which writes the next model
// over the running sum where it can, returns exactly what Result does,
// and that the round refuses everything after it.
func TestFinishMatchesResult(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	global := randomWeights(r, 5, 40_003, 1)
	var updates []*model.Weights
	for range 5 {
		updates = append(updates, perturbed(r, global))
	}
	counts := []int64{10, 3000, 7, 500, 42}
	tests := []struct {
		name string
		s    Strategy
	}{
		{"fedavg", &FedAvg{}},
		{"fedavg server lr", &FedAvg{ServerLR: 0.7}},
		{"fedprox", &FedProx{Mu: 0.01}},
		{"fedavg weight cap", &FedAvg{MaxFraction: 0.3}},
		{"fedavg dp", &FedAvg{DP: &DP{Clip: 1, Noise: 0.5}}},
		{"fedadam", &FedOpt{Optimizer: OptAdam}},
	}
	for _, tt := range tests {
		rr, err := BeginRound(tt.s, global, 9, 2)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		rf, err := BeginRound(tt.s, global, 9, 2)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		f, ok := rf.(Finisher)
		if !ok {
			t.Errorf("%s: its round is not a Finisher", tt.name)
			continue
		}
		for k, u := range updates {
			if err := rr.Add(u, counts[k]); err != nil {
				t.Fatalf("%s: Add: %v", tt.name, err)
			}
			if err := rf.Add(u, counts[k]); err != nil {
				t.Fatalf("%s: Add: %v", tt.name, err)
			}
		}
		want, wantM, err := rr.Result()
		if err != nil {
			t.Fatalf("%s: Result: %v", tt.name, err)
		}
		var acc [][]float32
		if ar, ok := rf.(*avgRound); ok {
			acc = ar.acc
		}
		got, gotM, err := f.Finish()
		if err != nil {
			t.Fatalf("%s: Finish: %v", tt.name, err)
		}
		if !cmp.Equal(want, got) || !cmp.Equal(wantM, gotM) {
			t.Errorf("%s: Finish() differs from Result(): metrics %v, want %v", tt.name, gotM, wantM)
		}
		// Plain FedAvg and FedProx reuse the sum; the others cannot.
		inPlace := acc != nil && &got.Tensors[1].Data[0] == &acc[1][0]
		if wantInPlace := tt.name == "fedavg" || tt.name == "fedavg server lr" || tt.name == "fedprox"; inPlace != wantInPlace {
			t.Errorf("%s: Finish wrote the next model over the sum: %v, want %v", tt.name, inPlace, wantInPlace)
		}
		if err := rf.Add(updates[0], 1); !errors.Is(err, ErrFinished) {
			t.Errorf("%s: Add after Finish = %v, want ErrFinished", tt.name, err)
		}
		if _, _, err := rf.Result(); !errors.Is(err, ErrFinished) {
			t.Errorf("%s: Result after Finish = %v, want ErrFinished", tt.name, err)
		}
		if _, _, err := f.Finish(); !errors.Is(err, ErrFinished) {
			t.Errorf("%s: Finish after Finish = %v, want ErrFinished", tt.name, err)
		}
	}
}
