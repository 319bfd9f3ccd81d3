package aggregators

import (
	"testing"

	"github.com/cohortfl/cohort/model"
)

// The DESIGN's aggregation benchmark: N = 10 updates of P = 10M params.
const benchParams, benchSites = 10_000_000, 10

func benchUpdates() (*model.Weights, []*model.Weights) {
	g := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{benchParams}, Data: make([]float32, benchParams)}}}
	us := make([]*model.Weights, benchSites)
	for i := range us {
		us[i] = g.Clone()
		for j := range us[i].Tensors[0].Data {
			us[i].Tensors[0].Data[j] = float32(i + j%7)
		}
	}
	return g, us
}

// BenchmarkFedAvg is a whole round: Begin, 10 validated Adds, Result.
// Bytes are update bytes read (N × 4P), so MB/s compares directly with
// BenchmarkNaiveAverage.
func BenchmarkFedAvg(b *testing.B) {
	g, us := benchUpdates()
	b.SetBytes(int64(benchSites) * g.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		r, err := (&FedAvg{}).Begin(g)
		if err != nil {
			b.Fatal(err)
		}
		for _, u := range us {
			if err := r.Add(u, 100+int64(len(us))); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := r.Result(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFedAvgAdd is one Add in steady state: validation and fold of
// one 10M-parameter update; allocs/op is what an Add allocates.
func BenchmarkFedAvgAdd(b *testing.B) {
	g, us := benchUpdates()
	r, err := (&FedAvg{}).Begin(g)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(g.Bytes())
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := r.Add(us[i%len(us)], 100); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkNaiveAverage is the baseline: every update held, then a second
// pass averages each parameter across them in float64 (collect all, then
// average), validating each update first as Add does.
func BenchmarkNaiveAverage(b *testing.B) {
	g, us := benchUpdates()
	b.SetBytes(int64(benchSites) * g.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		counts := make([]float64, len(us))
		var total float64
		for k, u := range us {
			if err := g.Compatible(u); err != nil {
				b.Fatal(err)
			}
			if err := u.CheckFinite(); err != nil {
				b.Fatal(err)
			}
			counts[k] = float64(100 + len(us))
			total += counts[k]
		}
		out := g.ZerosLike()
		for i, t := range out.Tensors {
			for j := range t.Data {
				var s float64
				for k, u := range us {
					s += counts[k] * float64(u.Tensors[i].Data[j])
				}
				t.Data[j] = float32(s / total)
			}
		}
	}
}

// BenchmarkAccumulateFloat32 and BenchmarkAccumulateFloat64 are the two
// accumulator choices alone, on one core: the 10 updates folded into a
// float32 sum (SIMD axpy, what Add does) or a float64 one (the fastest
// plain Go loop). Bytes are update bytes read.
func BenchmarkAccumulateFloat32(b *testing.B) {
	_, us := benchUpdates()
	acc := make([]float32, benchParams)
	b.SetBytes(int64(benchSites) * benchParams * 4)
	for b.Loop() {
		for _, u := range us {
			model.AxpyFlat(3, u.Tensors[0].Data, acc)
		}
	}
}

func BenchmarkAccumulateFloat64(b *testing.B) {
	_, us := benchUpdates()
	acc := make([]float64, benchParams)
	b.SetBytes(int64(benchSites) * benchParams * 4)
	for b.Loop() {
		for _, u := range us {
			x := u.Tensors[0].Data
			y := acc[:len(x)]
			i := 0
			for ; i+4 <= len(x); i += 4 {
				y[i] += 3 * float64(x[i])
				y[i+1] += 3 * float64(x[i+1])
				y[i+2] += 3 * float64(x[i+2])
				y[i+3] += 3 * float64(x[i+3])
			}
			for ; i < len(x); i++ {
				y[i] += 3 * float64(x[i])
			}
		}
	}
}

// benchRound is a whole round of s over the benchmark's 10 updates of 10M
// params: Begin, 10 Adds of 100 samples each, Result. Bytes are update
// bytes read, as in BenchmarkFedAvg, so the 10x10M benchmarks compare
// directly with one another.
func benchRound(b *testing.B, s Strategy) {
	g, us := benchUpdates()
	b.SetBytes(int64(benchSites) * g.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		r, err := s.Begin(g)
		if err != nil {
			b.Fatal(err)
		}
		for _, u := range us {
			if err := r.Add(u, 100); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := r.Result(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFedAvg10x10M is FedAvg in the harness of the robust rules'
// 10x10M benchmarks.
func BenchmarkFedAvg10x10M(b *testing.B) { benchRound(b, &FedAvg{}) }

// BenchmarkFedAvgCapped10x10M is FedAvg under max_weight_fraction 0.3,
// which holds up to 3 copies (here the first three updates, until the
// fourth makes the cap attainable).
func BenchmarkFedAvgCapped10x10M(b *testing.B) { benchRound(b, &FedAvg{MaxFraction: 0.3}) }

// BenchmarkFedAdam10x10M is FedAdam: FedAvg's sum plus the optimizer's
// step over the state at Result.
func BenchmarkFedAdam10x10M(b *testing.B) { benchRound(b, &FedOpt{Optimizer: OptAdam}) }

// BenchmarkDPFedAvg10x10M is DP-FedAvg: clipped deltas, and 10M normal
// draws on one core at Result.
func BenchmarkDPFedAvg10x10M(b *testing.B) { benchRound(b, &FedAvg{DP: &DP{Clip: 1, Noise: 1}}) }

// BenchmarkMedian10x10M is a whole median round over the same 10 updates
// of 10M params: Begin, 10 Adds (each copies its update), Result.
func BenchmarkMedian10x10M(b *testing.B) { benchRound(b, &Median{}) }

// BenchmarkTrimmedMean10x10M is trimmed_mean with β = 0.1 (one value
// trimmed at each end of 10).
func BenchmarkTrimmedMean10x10M(b *testing.B) { benchRound(b, &TrimmedMean{Beta: 0.1}) }

// BenchmarkKrum10x10M is Krum with f = 1: 45 pairwise distances over 10M
// params, then a copy of the chosen update.
func BenchmarkKrum10x10M(b *testing.B) { benchRound(b, &Krum{F: 1}) }
