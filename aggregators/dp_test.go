package aggregators

import (
	"math"
	"math/rand/v2"
	"runtime"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cohortfl/cohort/model"
)

// With σ = 0 DP-FedAvg is the unweighted mean of the clipped deltas.
// Global (1, 1, 1), S = 1: Δ1 = (3, 4, 0) has norm 5 and is scaled to
// (0.6, 0.8, 0); Δ2 = (0, 0, 0.5) is within the bound; Δ3 = (0, −2, 0) is
// scaled to (0, −1, 0). Their mean, whatever the sample counts, is
// (0.2, −0.2/3, 0.5/3).
func TestDPClippingKnownNumbers(t *testing.T) {
	for _, lr := range []float64{1, 0.5} {
		s, err := New("fedavg", map[string]float64{"dp_clip": 1, "server_lr": lr})
		if err != nil {
			t.Fatal(err)
		}
		r, err := s.Begin(weights(1, 1, 1))
		if err != nil {
			t.Fatal(err)
		}
		for i, u := range []*model.Weights{weights(4, 5, 1), weights(1, 1, 1.5), weights(1, -1, 1)} {
			if err := r.Add(u, []int64{1, 1000, 5}[i]); err != nil {
				t.Fatal(err)
			}
		}
		next, m, err := r.Result()
		if err != nil {
			t.Fatal(err)
		}
		mean := []float64{0.2, -0.2 / 3, 0.5 / 3}
		var want []float32
		var norm float64
		for _, d := range mean {
			want = append(want, float32(1+lr*d))
			norm += lr * d * lr * d
		}
		if !cmp.Equal(flat(next), want, cmpopts.EquateApprox(0, 1e-6)) {
			t.Errorf("lr %v: Result() = %v, want %v", lr, flat(next), want)
		}
		wantM := map[string]float64{"updates": 3, "samples": 1006, "update_norm": math.Sqrt(norm), "max_weight_fraction": 1.0 / 3, "capped": 0, "dp_clipped": 2, "dp_noise_std": 0}
		if !cmp.Equal(m, wantM, cmpopts.EquateApprox(0, 1e-6)) {
			t.Errorf("lr %v: metrics %v, want %v", lr, m, wantM)
		}
		if w := r.(WeightReporter).Weights(); !cmp.Equal(w, []float64{1.0 / 3, 1.0 / 3, 1.0 / 3}) {
			t.Errorf("Weights() = %v, want equal thirds", w)
		}
	}
}

// dpModel returns a one-tensor model of p values drawn from r.
func dpModel(r *rand.Rand, p int, scale float64) *model.Weights {
	w := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{p}, Data: make([]float32, p)}}}
	for i := range w.Tensors[0].Data {
		w.Tensors[0].Data[i] = float32(scale * r.NormFloat64())
	}
	return w
}

// TestDPNoise: the noise's empirical standard deviation over 10^5
// coordinates is σ·S/n within 2% (the sampling error is about 0.2%).
func TestDPNoise(t *testing.T) {
	const p, n = 100_000, 4
	const sigma, clip = 2.0, 0.5
	r := rand.New(rand.NewPCG(11, 12))
	global := dpModel(r, p, 1)
	s := &FedAvg{DP: &DP{Clip: clip, Noise: sigma}}
	round, err := s.BeginSeeded(global, 42, 3)
	if err != nil {
		t.Fatal(err)
	}
	clipped := make([]float64, p) // Σ of the clipped deltas
	for range n {
		u := dpModel(r, p, 1) // ‖Δ‖ ≈ √(2p), far over S
		if err := round.Add(u, 10); err != nil {
			t.Fatal(err)
		}
		var d2 float64
		for i, v := range u.Tensors[0].Data {
			d := float64(v) - float64(global.Tensors[0].Data[i])
			d2 += d * d
		}
		scale := clip / math.Sqrt(d2)
		for i, v := range u.Tensors[0].Data {
			clipped[i] += scale * (float64(v) - float64(global.Tensors[0].Data[i]))
		}
	}
	next, m, err := round.Result()
	if err != nil {
		t.Fatal(err)
	}
	var sum, sum2 float64
	for i, v := range next.Tensors[0].Data {
		e := float64(v) - float64(global.Tensors[0].Data[i]) - clipped[i]/n
		sum += e
		sum2 += e * e
	}
	mean := sum / p
	std := math.Sqrt(sum2/p - mean*mean)
	want := sigma * clip / n
	if math.Abs(std-want) > 0.02*want || math.Abs(mean) > 0.02*want {
		t.Errorf("noise: mean %v, std %v; want mean 0 and std %v within 2%%", mean, std, want)
	}
	if m["dp_noise_std"] != want || m["dp_clipped"] != n {
		t.Errorf("metrics %v, want dp_noise_std %v and dp_clipped %d", m, want, n)
	}
}

// TestDPReplay: the same seed and round give the same model bit for bit,
// on any number of cores; another round, another seed or a plain Begin
// give other noise.
func TestDPReplay(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	const p = 3 * serialMax // large enough to be split across cores
	global := dpModel(r, p, 1)
	updates := []*model.Weights{dpModel(r, p, 1), dpModel(r, p, 0.001), dpModel(r, p, 2)}
	s, err := New("fedprox", map[string]float64{"dp_clip": 0.1, "dp_noise": 1, "mu": 0.01})
	if err != nil {
		t.Fatal(err)
	}
	run := func(seed uint64, round int, seeded bool) *model.Weights {
		t.Helper()
		var rd Round
		var err error
		if seeded {
			rd, err = BeginRound(s, global, seed, round)
		} else {
			rd, err = s.Begin(global)
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range updates {
			if err := rd.Add(u, 7); err != nil {
				t.Fatal(err)
			}
		}
		next, _, err := rd.Result()
		if err != nil {
			t.Fatal(err)
		}
		return next
	}
	a := run(1, 5, true)
	procs := runtime.GOMAXPROCS(1)
	b := run(1, 5, true)
	runtime.GOMAXPROCS(procs)
	if !sameBits(a, b) {
		t.Error("the same seed and round on one core and on all differ")
	}
	for _, other := range []struct {
		name string
		w    *model.Weights
	}{
		{"another round", run(1, 6, true)},
		{"another seed", run(2, 5, true)},
		{"a fresh seed", run(0, 0, false)},
	} {
		if sameBits(a, other.w) {
			t.Errorf("%s gives the same model", other.name)
		}
	}
	if sameBits(run(0, 0, false), run(0, 0, false)) {
		t.Error("two unseeded rounds drew the same noise")
	}
	if _, err := BeginRound(s, global, 1, -1); err == nil {
		t.Error("BeginRound with round −1 = nil error")
	}
}

// TestDPWithOptimizer: under DP the optimizer's pseudo-gradient is the
// clipped mean: fedavgm's first round with η 1 lands on it. Δ = (3, 4)
// clipped to S = 2 is (1.2, 1.6).
func TestDPWithOptimizer(t *testing.T) {
	s, err := New("fedavgm", map[string]float64{"dp_clip": 2, "max_weight_fraction": 0.5})
	if err != nil {
		t.Fatal(err)
	}
	r, err := s.Begin(weights(1, 1))
	if err != nil {
		t.Fatal(err)
	}
	_ = r.Add(weights(4, 5), 1)
	next, m, err := r.Result()
	if err != nil {
		t.Fatal(err)
	}
	if !cmp.Equal(m["pseudo_gradient_norm"], 2.0, cmpopts.EquateApprox(0, 1e-6)) {
		t.Errorf("pseudo_gradient_norm = %v, want the clip, 2", m["pseudo_gradient_norm"])
	}
	if !cmp.Equal(flat(next), []float32{2.2, 2.6}, cmpopts.EquateApprox(0, 1e-6)) {
		t.Errorf("fedavgm under DP = %v, want [2.2 2.6]", flat(next))
	}
}

func TestDPBadSettings(t *testing.T) {
	for _, dp := range []DP{{Clip: 0}, {Clip: -1}, {Clip: math.NaN()}, {Clip: 1e31}, {Clip: 1, Noise: -1}, {Clip: 1, Noise: math.Inf(1)}} {
		if _, err := (&FedAvg{DP: &dp}).Begin(weights(1, 1)); err == nil {
			t.Errorf("Begin with DP %+v = nil error", dp)
		}
	}
}

// sameBits reports whether a and b hold the same values, bit for bit
// (cmp.Equal is slow on large models).
func sameBits(a, b *model.Weights) bool {
	if a.Compatible(b) != nil {
		return false
	}
	for i, t := range a.Tensors {
		for j, v := range t.Data {
			if math.Float32bits(v) != math.Float32bits(b.Tensors[i].Data[j]) {
				return false
			}
		}
	}
	return true
}
