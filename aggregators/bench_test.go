package aggregators

import (
	"math"
	"runtime"
	"sync"
	"testing"
	"time"

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
	defer reportCPU(b)()
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
// 10x10M benchmarks, and the figure compared with Flower's NumPy
// aggregate (testdata/flower_baseline.py) and with the memory floor
// (BenchmarkReadFloor10x10M). Reproduce the comparison, in turns so that
// both sides see the same load, from the repository root:
//
//	sh aggregators/testdata/compare_flower.sh
//
// or by hand (the first run of a process grows the heap and pays its page
// faults, so read the second; cpu-ms/op shows whether a slow run was the
// code or the neighbours):
//
//	go test -run XXX -bench '^Benchmark(FedAvg|ReadFloor)10x10M$' -benchtime 25x -count 2 ./aggregators/
//	/usr/bin/python3 aggregators/testdata/flower_baseline.py
//
// A round moves about 1.8 GB through memory, 4.5 times the updates'
// 400 MB: Begin and Result each zero a model-sized buffer, Add reads each
// update twice (the scan that must see all of it before the sum changes,
// so that a refused update leaves it as it was, then the fold) and reads
// and writes the sum, and Result reads the sum and the global model and
// writes the next one.
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

// BenchmarkReadFloor10x10M is the memory floor of any aggregation of the
// benchmark's updates: it reads each of the 10 updates once, summing its
// values on every core (eight partial sums a core, so that the loop waits
// on memory rather than on additions), and does nothing else. Bytes are
// update bytes read, as in BenchmarkFedAvg10x10M, so the ratio of the two
// times is how many update-sized passes over memory a FedAvg round costs.
func BenchmarkReadFloor10x10M(b *testing.B) {
	_, us := benchUpdates()
	workers := runtime.GOMAXPROCS(0)
	sums := make([]float32, workers)
	b.SetBytes(int64(benchSites) * benchParams * 4)
	defer reportCPU(b)()
	for b.Loop() {
		for _, u := range us {
			x := u.Tensors[0].Data
			share := (len(x) + workers - 1) / workers
			var wg sync.WaitGroup
			for w := range workers {
				wg.Go(func() { sums[w] += sum8(x[min(w*share, len(x)):min((w+1)*share, len(x))]) })
			}
			wg.Wait()
		}
	}
	if s := sums[0]; math.IsNaN(float64(s)) {
		b.Fatal("NaN sum") // keeps the sums live
	}
}

// sum8 returns Σx with eight partial sums.
func sum8(x []float32) float32 {
	var s0, s1, s2, s3, s4, s5, s6, s7 float32
	i := 0
	for ; i+8 <= len(x); i += 8 {
		v := x[i : i+8 : i+8]
		s0, s1, s2, s3 = s0+v[0], s1+v[1], s2+v[2], s3+v[3]
		s4, s5, s6, s7 = s4+v[4], s5+v[5], s6+v[6], s7+v[7]
	}
	for ; i < len(x); i++ {
		s0 += x[i]
	}
	return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
}

// reportCPU starts counting the process's CPU time (every thread, the
// garbage collector's too); the function it returns reports it per
// iteration as cpu-ms/op. On a machine shared with other work, wall time
// swings with the neighbours' load while CPU time moves much less, so
// cpu-ms/op tells a change in the code from a change in the load. Call it
// after the setup: defer reportCPU(b)().
func reportCPU(b *testing.B) func() {
	start := cpuTime()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64(cpuTime()-start)/float64(time.Millisecond)/float64(b.N), "cpu-ms/op")
		}
	}
}
