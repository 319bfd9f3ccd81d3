package aggregators

import (
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cohortfl/cohort/model"
)

// capRound runs a fedavg round with max_weight_fraction f over updates
// with sample counts n and returns the result, its metrics and the
// applied weights.
func capRound(t *testing.T, f float64, updates []*model.Weights, n []int64) ([]float32, map[string]float64, []float64) {
	t.Helper()
	s, err := New("fedavg", map[string]float64{"max_weight_fraction": f})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Begin(weights(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	for i, u := range updates {
		if err := r.Add(u, n[i]); err != nil {
			t.Fatal(err)
		}
		if held, most := len(r.(*avgRound).held), int(math.Floor(1/f)); held > most {
			t.Fatalf("after %d updates the round holds %d copies, want at most ⌊1/f⌋ = %d", i+1, held, most)
		}
	}
	next, m, err := r.Result()
	if err != nil {
		t.Fatal(err)
	}
	return flat(next), m, r.(WeightReporter).Weights()
}

func TestMaxWeightFractionKnownNumbers(t *testing.T) {
	near := cmpopts.EquateApprox(0, 1e-6)
	tests := []struct {
		name    string
		f       float64
		updates []*model.Weights
		n       []int64
		want    []float32
		weights []float64
		capped  float64
		unmet   float64
	}{
		// T' = 1 + 1 + c with c = 0.5·T': c = 2, T' = 4; the attacker gets
		// exactly half: ((2, 4) + (4, 8) + 2·(100, 100))/4 = (51.5, 53).
		{"attacker capped to half", 0.5, []*model.Weights{weights(2, 4), weights(4, 8), weights(100, 100)}, []int64{1, 1, 1 << 40},
			[]float32{51.5, 53}, []float64{0.25, 0.25, 0.5}, 1, 0},
		{"attacker first", 0.5, []*model.Weights{weights(100, 100), weights(2, 4), weights(4, 8)}, []int64{1 << 40, 1, 1},
			[]float32{51.5, 53}, []float64{0.5, 0.25, 0.25}, 1, 0},
		{"attacker in the middle", 0.5, []*model.Weights{weights(2, 4), weights(100, 100), weights(4, 8)}, []int64{1, 1 << 40, 1},
			[]float32{51.5, 53}, []float64{0.25, 0.5, 0.25}, 1, 0},
		// f = 1/3 of three updates: the cap is met only with equal
		// weights (c = 1: 100 and 10 are capped to the smallest, 1):
		// ((3, 0) + (6, 3) + (0, 9))/3 = (3, 4).
		{"f = 1/3, three updates", 1.0 / 3, []*model.Weights{weights(3, 0), weights(6, 3), weights(0, 9)}, []int64{1, 10, 100},
			[]float32{3, 4}, []float64{1.0 / 3, 1.0 / 3, 1.0 / 3}, 2, 0},
		// Within the cap nothing changes: (1·0 + 2·3 + 2·(−6))/5 = −1.2,
		// (10 + 40 + 60)/5 = 22; the largest weight is 2/5 ≤ 0.5.
		{"under the cap", 0.5, []*model.Weights{weights(0, 10), weights(3, 20), weights(-6, 30)}, []int64{1, 2, 2},
			[]float32{-1.2, 22}, []float64{0.2, 0.4, 0.4}, 0, 0},
		// f = 0.4 over 1000, 500 and 1 samples: capping 1000 alone (to
		// 0.4·(501 + c) → c = 334) would leave 500 above 0.4 of the total,
		// so both are capped: c = 0.4·(1 + 2c) → c = 2, T' = 5; weights
		// 0.4, 0.4, 0.2: 0.4·(10, 0) + 0.4·(0, 10) + 0.2·(0, 0) = (4, 4).
		{"a second capped update", 0.4, []*model.Weights{weights(10, 0), weights(0, 10), weights(0, 0)}, []int64{1000, 500, 1},
			[]float32{4, 4}, []float64{0.4, 0.4, 0.2}, 2, 0},
		// Two updates cannot meet f = 0.4 (each would need ≤ 40%): equal
		// weights, and the metric says so.
		{"unattainable", 0.4, []*model.Weights{weights(2, 0), weights(4, 8)}, []int64{1, 3},
			[]float32{3, 4}, []float64{0.5, 0.5}, 1, 1},
		{"one update is itself", 0.5, []*model.Weights{weights(0.1, -7)}, []int64{1 << 40},
			[]float32{0.1, -7}, []float64{1}, 0, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, m, w := capRound(t, tt.f, tt.updates, tt.n)
			if !cmp.Equal(got, tt.want, near) {
				t.Errorf("Result() = %v, want %v", got, tt.want)
			}
			if !cmp.Equal(w, tt.weights, near) {
				t.Errorf("Weights() = %v, want %v", w, tt.weights)
			}
			if want := slices.Max(tt.weights); !cmp.Equal(m["max_weight_fraction"], want, near) {
				t.Errorf("max_weight_fraction = %v, want %v", m["max_weight_fraction"], want)
			}
			if m["capped"] != tt.capped || m["cap_unmet"] != tt.unmet {
				t.Errorf("capped, cap_unmet = %v, %v, want %v, %v", m["capped"], m["cap_unmet"], tt.capped, tt.unmet)
			}
		})
	}
}

// TestMaxWeightFractionOrderIndependent: the attacker's position in the
// order of Add changes nothing, bit for bit here (every weight a power of
// two), and within a few ulps on arbitrary values.
func TestMaxWeightFractionOrderIndependent(t *testing.T) {
	honest := []*model.Weights{weights(2, 4), weights(4, 8), weights(1, -3)}
	attacker := weights(100, -100)
	var first []float32
	for pos := range 4 {
		us := slices.Insert(slices.Clone(honest), pos, attacker)
		n := slices.Insert([]int64{2, 2, 4}, pos, 1<<40)
		got, _, _ := capRound(t, 0.5, us, n)
		if pos == 0 {
			first = got
			// (2·(2, 4) + 2·(4, 8) + 4·(1, −3) + 8·(100, −100))/16.
			if want := []float32{(4 + 8 + 4 + 800) / 16.0, (8 + 16 - 12 - 800) / 16.0}; !cmp.Equal(got, want) {
				t.Errorf("attacker first: %v, want %v", got, want)
			}
		} else if !cmp.Equal(got, first) {
			t.Errorf("attacker at %d: %v, attacker first: %v", pos, got, first)
		}
	}
	r := rand.New(rand.NewPCG(7, 8))
	var us []*model.Weights
	var n []int64
	for range 6 {
		us = append(us, weights(float32(r.NormFloat64()), float32(r.NormFloat64())))
		n = append(n, 1+r.Int64N(1000))
	}
	us, n = append(us, weights(50, 50)), append(n, 1<<30)
	want, _, _ := capRound(t, 0.3, us, n)
	for range 5 {
		p := r.Perm(len(us))
		pu, pn := make([]*model.Weights, len(us)), make([]int64, len(us))
		for i, k := range p {
			pu[i], pn[i] = us[k], n[k]
		}
		got, _, _ := capRound(t, 0.3, pu, pn)
		if !cmp.Equal(got, want, cmp.Comparer(func(a, b float32) bool { return ulps(a, b) <= 4 })) {
			t.Errorf("order %v: %v, want %v within 4 ulps", p, got, want)
		}
	}
}

func ulps(a, b float32) float64 {
	u := math.Nextafter32(max(abs32(a), abs32(b)), float32(math.Inf(1))) - max(abs32(a), abs32(b))
	return math.Abs(float64(a-b)) / float64(u)
}

func abs32(x float32) float32 { return float32(math.Abs(float64(x))) }

// TestMaxWeightFractionMatchesWaterFilling compares the streaming cap
// with the cap level found by bisection over all the weights at once, and
// the result with the float64 weighted mean under those weights.
func TestMaxWeightFractionMatchesWaterFilling(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for trial := range 200 {
		f := []float64{0.1, 0.25, 0.3, 0.5, 0.7}[trial%5]
		count := 1 + r.IntN(15)
		var us []*model.Weights
		var n []int64
		for range count {
			us = append(us, weights(float32(r.NormFloat64()), float32(r.NormFloat64())))
			n = append(n, int64(math.Exp(r.Float64()*20))+1) // heavy-tailed counts
		}
		got, m, w := capRound(t, f, us, n)
		// Reference: weights relative to the first, as the round applies
		// them, and c with c = f·Σ min(a, c) by bisection.
		a := make([]float64, count)
		for i := range n {
			a[i] = float64(float32(float64(n[i]) / float64(n[0])))
		}
		want := make([]float64, count)
		if float64(count)*f < 1 {
			for i := range want {
				want[i] = 1 / float64(count)
			}
		} else {
			lo, hi := 0.0, slices.Max(a)
			for range 200 {
				c := (lo + hi) / 2
				var s float64
				for _, x := range a {
					s += min(x, c)
				}
				if c < f*s {
					lo = c
				} else {
					hi = c
				}
			}
			var total float64
			for _, x := range a {
				total += min(x, hi)
			}
			for i, x := range a {
				want[i] = min(x, hi) / total
			}
		}
		if !cmp.Equal(w, want, cmpopts.EquateApprox(1e-9, 1e-12)) {
			t.Fatalf("f %v, counts %v: Weights() = %v, water-filling gives %v", f, n, w, want)
		}
		if count >= int(math.Ceil(1/f-1e-9)) && m["max_weight_fraction"] > f*(1+1e-9) {
			t.Errorf("f %v, counts %v: max_weight_fraction %v above the cap", f, n, m["max_weight_fraction"])
		}
		for j := range got {
			var mean float64
			for i, u := range us {
				mean += want[i] * float64(flat(u)[j])
			}
			if math.Abs(float64(got[j])-mean) > 1e-5 {
				t.Fatalf("f %v, counts %v: Result()[%d] = %v, want %v", f, n, j, got[j], mean)
			}
		}
	}
}

func TestMaxWeightFractionAddAfterResultAndBadUpdates(t *testing.T) {
	s := &FedAvg{MaxFraction: 0.5}
	r, err := s.Begin(weights(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Add(weights(100, 100), 1<<40) // held: one update cannot meet the cap
	a, m, _ := r.Result()
	if !cmp.Equal(flat(a), []float32{100, 100}) || m["cap_unmet"] != 1 {
		t.Errorf("one update: %v, %v; want [100 100] and cap_unmet 1", flat(a), m)
	}
	b, _, _ := r.Result()
	if !cmp.Equal(a, b) {
		t.Errorf("two Results differ: %v, %v", flat(a), flat(b))
	}
	// A bad update leaves the held copies and the sum as they were.
	if err := r.Add(weights(float32(math.NaN()), 0), 1); !errors.Is(err, ErrBadUpdate) {
		t.Errorf("Add(NaN) = %v, want ErrBadUpdate", err)
	}
	if err := r.Add(weights(1e35, 0), 1<<50); !errors.Is(err, ErrBadUpdate) {
		t.Errorf("Add(overflowing) = %v, want ErrBadUpdate", err)
	}
	if held := len(r.(*avgRound).held); held != 1 {
		t.Errorf("after bad updates the round holds %d copies, want 1", held)
	}
	_ = r.Add(weights(0, 2), 1)
	// Two updates meet f = 0.5 with equal weights: (50, 51).
	if c, m, _ := r.Result(); !cmp.Equal(flat(c), []float32{50, 51}) || m["updates"] != 2 || m["cap_unmet"] != 0 {
		t.Errorf("Result() after another Add = %v, %v, want [50 51] from 2 updates", flat(c), m)
	}
	_ = r.Add(weights(0, 4), 1)
	// 1, 1 and the capped 2: (2·(100, 100) + (0, 2) + (0, 4))/4 = (50, 51.5).
	if c, _, _ := r.Result(); !cmp.Equal(flat(c), []float32{50, 51.5}) {
		t.Errorf("Result() after a third Add = %v, want [50 51.5]", flat(c))
	}
	if w := r.(WeightReporter).Weights(); !cmp.Equal(w, []float64{0.5, 0.25, 0.25}) {
		t.Errorf("Weights() = %v, want [0.5 0.25 0.25]", w)
	}
}

// TestMaxWeightFractionOff: 0 and 1 are plain FedAvg, bit for bit, with
// no copies held.
func TestMaxWeightFractionOff(t *testing.T) {
	for _, f := range []float64{0, 1, 2} {
		r, _ := (&FedAvg{MaxFraction: f}).Begin(weights(0, 0))
		_ = r.Add(weights(1, 1), 1)
		_ = r.Add(weights(5, 9), 1<<40)
		got, m, _ := r.Result()
		if len(r.(*avgRound).held) != 0 {
			t.Errorf("f = %v holds copies", f)
		}
		if _, ok := m["cap_unmet"]; ok || m["capped"] != 0 {
			t.Errorf("f = %v: metrics %v, want no cap", f, m)
		}
		want := []float32{float32((1 + 5*float64(1<<40)) / (1 + float64(1<<40))), float32((1 + 9*float64(1<<40)) / (1 + float64(1<<40)))}
		if !cmp.Equal(flat(got), want, cmpopts.EquateApprox(0, 1e-6)) {
			t.Errorf("f = %v: %v, want %v", f, flat(got), want)
		}
	}
	if _, err := (&FedAvg{MaxFraction: -0.1}).Begin(weights(0, 0)); err == nil {
		t.Error("Begin with MaxFraction −0.1 = nil error")
	}
}
