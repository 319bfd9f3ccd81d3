package data

import (
	"math"
	"math/rand/v2"
)

// Independent streams of one seed, so that adding a draw to one use of
// the seed never shifts another's.
const (
	streamSplit uint64 = iota + 1
	streamPartition
	streamSynthetic
)

// newRand returns the package's seeded generator: PCG, whose sequence for
// a seed is the same on every platform and Go release. What the package
// computes from it in floating point is too, but for math.Exp and math.Log,
// which may differ in the last bit between CPUs; a split changes only if a
// cut lands within that bit of a rounding boundary (odds ~1e-12).
func newRand(seed int64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15^stream))
}

// logGamma draws log X for X ~ Gamma(a, 1), a > 0, by Marsaglia and
// Tsang's method (2000), with X = Y·U^(1/a), Y ~ Gamma(a+1), for a < 1.
// Working in logs keeps tiny shapes (a = 0.001, where U^(1/a) underflows)
// exact enough to normalise.
func logGamma(r *rand.Rand, a float64) float64 {
	if a < 1 {
		u := 1 - r.Float64() // (0, 1]: log never sees 0
		return logGamma(r, a+1) + math.Log(u)/a
	}
	d := a - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + float64(c*x)
		if v <= 0 {
			continue
		}
		v = float64(v * v * v) // the conversions forbid fused multiply-adds (arm64 would fuse)
		u := 1 - r.Float64()
		x2 := float64(x * x)
		if u < 1-float64(0.0331*x2*x2) || math.Log(u) < float64(0.5*x2)+float64(d*(1-v+math.Log(v))) {
			return math.Log(d) + math.Log(v)
		}
	}
}

// dirichletDraw fills p with a draw from the symmetric Dirichlet(α)
// distribution: independent Gamma(α) draws, normalised.
func dirichletDraw(r *rand.Rand, alpha float64, p []float64) {
	top := math.Inf(-1)
	for i := range p {
		p[i] = logGamma(r, alpha)
		top = max(top, p[i])
	}
	var sum float64
	for i := range p {
		p[i] = math.Exp(p[i] - top)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
}
