package data

import (
	"fmt"
	"math"
)

// SyntheticConfig is the FedProx paper's Synthetic(α,β) (Li et al., 2020,
// §5.1, after Shamir et al.): α controls how much local models differ, β
// how much local data differ.
type SyntheticConfig struct {
	Alpha, Beta float64
	// Dim and Classes default to 60 and 10.
	Dim, Classes int
	// Devices is the number of sites.
	Devices int
	// SamplesPerDevice fixes every device's size; 0 draws it from the
	// paper code's power law, lognormal(4, 2) + 50.
	SamplesPerDevice int
	// IID draws every device from one shared model and distribution.
	IID bool
}

// Synthetic generates one dataset per device: for device k, u_k ~ N(0,α),
// W_k, b_k ~ N(u_k, 1); B_k ~ N(0,β), v_k ~ N(B_k, 1); x ~ N(v_k, Σ) with
// Σ_jj = j^−1.2; y = argmax(softmax(W_k x + b_k)).
func Synthetic(cfg SyntheticConfig, seed int64) ([]*Dataset, error) {
	if cfg.Dim == 0 {
		cfg.Dim = 60
	}
	if cfg.Classes == 0 {
		cfg.Classes = 10
	}
	if cfg.Devices < 1 || cfg.Alpha < 0 || cfg.Beta < 0 || cfg.Classes > 255 || cfg.SamplesPerDevice < 0 {
		return nil, fmt.Errorf("synthetic(%v, %v): need devices ≥ 1, α, β ≥ 0, at most 255 classes", cfg.Alpha, cfg.Beta)
	}
	r := newRand(seed, 3)
	sigma := make([]float64, cfg.Dim)
	for j := range sigma {
		sigma[j] = math.Sqrt(math.Pow(float64(j+1), -1.2))
	}
	normal := func(mean, std float64) float64 { return mean + std*r.NormFloat64() }
	var sharedW, sharedB, sharedV []float64
	draw := func() (W, b, v []float64) {
		u := normal(0, math.Sqrt(cfg.Alpha))
		B := normal(0, math.Sqrt(cfg.Beta))
		W = make([]float64, cfg.Classes*cfg.Dim)
		for i := range W {
			W[i] = normal(u, 1)
		}
		b = make([]float64, cfg.Classes)
		for i := range b {
			b[i] = normal(u, 1)
		}
		v = make([]float64, cfg.Dim)
		for i := range v {
			v[i] = normal(B, 1)
		}
		return
	}
	if cfg.IID {
		sharedW, sharedB, sharedV = draw()
	}
	out := make([]*Dataset, cfg.Devices)
	for k := range out {
		n := cfg.SamplesPerDevice
		if n == 0 {
			n = int(math.Exp(normal(4, 2))) + 50
			n = min(n, 20000)
		}
		W, b, v := sharedW, sharedB, sharedV
		if !cfg.IID {
			W, b, v = draw()
		}
		ds := &Dataset{Name: fmt.Sprintf("synthetic(%g,%g)", cfg.Alpha, cfg.Beta), N: n, Features: cfg.Dim,
			Shape: []int{cfg.Dim}, Classes: cfg.Classes, X: make([]float32, n*cfg.Dim), Y: make([]uint8, n)}
		x := make([]float64, cfg.Dim)
		for i := 0; i < n; i++ {
			for j := range x {
				x[j] = normal(v[j], sigma[j])
				ds.X[i*cfg.Dim+j] = float32(x[j])
			}
			best, arg := math.Inf(-1), 0
			for c := 0; c < cfg.Classes; c++ {
				s := b[c]
				for j, xj := range x {
					s += W[c*cfg.Dim+j] * xj
				}
				if s > best {
					best, arg = s, c
				}
			}
			ds.Y[i] = uint8(arg)
		}
		out[k] = ds
	}
	return out, nil
}
