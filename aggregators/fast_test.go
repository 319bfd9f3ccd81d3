package aggregators

import (
	"errors"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/model"
)

// TestMeanIntoMatchesScalar checks Result's unrolled pass against the
// formula value by value, for every length of tail, both forms of η, and
// the overflow it must signal through its sum.
func TestMeanIntoMatchesScalar(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, lr := range []float64{1, 0.7, 3} {
		for n := range 11 {
			a, g, out := make([]float32, n), make([]float32, n), make([]float32, n)
			for j := range a {
				a[j], g[j] = float32(r.NormFloat64()*1e3), float32(r.NormFloat64())
			}
			inv := 1 / 7.3
			s := meanInto(out, a, g, inv, lr)
			var want float64
			for j := range out {
				gj := float64(g[j])
				f := float32(gj + lr*(float64(a[j])*inv-gj))
				if lr == 1 {
					f = float32(float64(a[j]) * inv)
				}
				if out[j] != f {
					t.Errorf("lr %v, n %d: out[%d] = %v, want %v", lr, n, j, out[j], f)
				}
				d := float64(f) - gj
				want += d * d
			}
			if math.Abs(s-want) > 1e-12*want {
				t.Errorf("lr %v, n %d: Σ(out − g)² = %v, want %v", lr, n, s, want)
			}
		}
	}
	// A value past float32's range, in the unrolled part or the tail,
	// makes the sum +Inf: Result's only overflow check.
	for _, at := range []int{0, 3, 5} {
		a, g, out := []float32{1, 1, 1, 1, 1, 1}, make([]float32, 6), make([]float32, 6)
		a[at] = math.MaxFloat32
		if s := meanInto(out, a, g, 4, 1); !math.IsInf(s, 1) || !math.IsInf(float64(out[at]), 1) {
			t.Errorf("overflow at %d: sum %v, out %v; want +Inf in both", at, s, out)
		}
		if s := meanInto(out, a, g, 1, 4); !math.IsInf(s, 1) {
			t.Errorf("overflow at %d with η = 4: sum %v, want +Inf", at, s)
		}
	}
}

// bigModel returns a model spread over several workers and fold blocks,
// with tensor sizes that divide neither, and count updates near it.
func bigModel(r *rand.Rand, count int) (*model.Weights, []*model.Weights) {
	g := randomWeights(r, 3, serialMax+40_001, 7)
	us := make([]*model.Weights, count)
	for k := range us {
		us[k] = perturbed(r, g)
	}
	return g, us
}

// TestFedAvgSameOnAnyCoreCount: the next model does not depend on how
// many workers share the round, bit for bit, for every strategy of the
// family whose sum Add folds in parallel.
func TestFedAvgSameOnAnyCoreCount(t *testing.T) {
	g, us := bigModel(rand.New(rand.NewPCG(9, 10)), 5)
	counts := []int64{10, 1, 3000, 77, 10}
	strategies := []Strategy{&FedAvg{}, &FedAvg{ServerLR: 0.5}, &FedAvg{MaxFraction: 0.3}, &FedOpt{Optimizer: OptAdam}}
	procs := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(procs)
	for _, s := range strategies {
		var first *model.Weights
		var firstNorm float64
		for _, p := range []int{1, 2, 3} {
			runtime.GOMAXPROCS(p)
			round, err := s.Begin(g)
			if err != nil {
				t.Fatal(err)
			}
			for k, u := range us {
				if err := round.Add(u, counts[k]); err != nil {
					t.Fatal(err)
				}
			}
			next, m, err := round.Result()
			if err != nil {
				t.Fatal(err)
			}
			if first == nil {
				first, firstNorm = next, m["update_norm"]
				continue
			}
			if !sameBits(next, first) {
				t.Errorf("%s on %d cores: the next model differs from one core's", s.Name(), p)
			}
			// The norm's partial sums are added in another order.
			if got := m["update_norm"]; math.Abs(got-firstNorm) > 1e-12*firstNorm {
				t.Errorf("%s on %d cores: update_norm %v, on one core %v", s.Name(), p, got, firstNorm)
			}
		}
	}
}

// TestRefusedBigUpdateKeepsSum: an update whose fault lies in the last
// block the last worker scans, in the middle, or at the very start is
// refused, and the round's Result is the same bit for bit; a good update
// with another weight still goes in.
func TestRefusedBigUpdateKeepsSum(t *testing.T) {
	g, us := bigModel(rand.New(rand.NewPCG(11, 12)), 3)
	round, err := (&FedAvg{}).Begin(g)
	if err != nil {
		t.Fatal(err)
	}
	if err := round.Add(us[0], 40); err != nil {
		t.Fatal(err)
	}
	want, wantMetrics, _ := round.Result()
	last := len(g.Tensors) - 1
	tests := []struct {
		name   string
		tensor int
		index  int
		value  float32
		n      int64
		errIs  error
	}{
		{"nan at the end", last, 6, float32(math.NaN()), 40, model.ErrNotFinite},
		{"inf in the middle", 1, serialMax / 2, float32(math.Inf(-1)), 40, model.ErrNotFinite},
		{"nan at the start", 0, 0, float32(math.NaN()), 40, model.ErrNotFinite},
		{"overflow at the end", last, 6, 3e38, 80, ErrBadUpdate},
	}
	for _, tt := range tests {
		bad := us[1].Clone()
		bad.Tensors[tt.tensor].Data[tt.index] = tt.value
		if err := round.Add(bad, tt.n); !errors.Is(err, ErrBadUpdate) || !errors.Is(err, tt.errIs) {
			t.Errorf("%s: Add = %v, want ErrBadUpdate and %v", tt.name, err, tt.errIs)
		}
		got, metrics, err := round.Result()
		if err != nil || !sameBits(got, want) || !cmp.Equal(metrics, wantMetrics) {
			t.Fatalf("%s: the round changed: %v, %v", tt.name, metrics, err)
		}
	}
	// (40·u0 + 120·u1 + 40·u2) / 200, against a float64 computation.
	if err := round.Add(us[1], 120); err != nil {
		t.Fatal(err)
	}
	if err := round.Add(us[2], 40); err != nil {
		t.Fatal(err)
	}
	next, _, _ := round.Result()
	for i, tn := range next.Tensors {
		for j, v := range tn.Data {
			w := (40*float64(us[0].Tensors[i].Data[j]) + 120*float64(us[1].Tensors[i].Data[j]) + 40*float64(us[2].Tensors[i].Data[j])) / 200
			if math.Abs(float64(v)-w) > 1e-6 {
				t.Fatalf("%s[%d] = %v, want %v", tn.Name, j, v, w)
			}
		}
	}
}
