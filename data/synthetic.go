package data

import (
	"cmp"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Synthetic(α,β)'s defaults: the FedProx paper's sizes.
const (
	// DefaultSyntheticDevices is the paper's number of devices.
	DefaultSyntheticDevices = 30
	// DefaultSyntheticDim is the number of features.
	DefaultSyntheticDim = 60
	// DefaultSyntheticClasses is the number of classes.
	DefaultSyntheticClasses = 10
	// MaxSyntheticSamples caps a device's power-law size: 2^20 samples of
	// 60 features are 250 MB, and the paper's lognormal(4, 2) + 50 exceeds
	// it with odds of 5·10⁻⁷ per device.
	MaxSyntheticSamples = 1 << 20
	// MaxSyntheticDevices bounds the number of devices.
	MaxSyntheticDevices = 1 << 20
	// MaxSyntheticValues bounds the features of all devices' samples
	// together: 2^30 float32 values are 4 GiB.
	MaxSyntheticValues = 1 << 30
)

// SyntheticConfig configures [Synthetic], the FedProx paper's
// Synthetic(α,β) (Li et al., "Federated Optimization in Heterogeneous
// Networks", MLSys 2020, §5.1, after Shamir et al., 2014): α controls how
// much the devices' local models differ, β how much their data differ.
type SyntheticConfig struct {
	// Alpha and Beta are the standard deviations of the per-device priors
	// u_k ~ N(0, α) and B_k ~ N(0, β), as the paper's code draws them
	// (np.random.normal(0, alpha)); ≥ 0. The paper uses (0,0), (0.5,0.5)
	// and (1,1).
	Alpha, Beta float64
	// Dim and Classes default to 60 and 10.
	Dim, Classes int
	// Devices is the number of devices (sites); default 30, the paper's.
	Devices int
	// SamplesPerDevice fixes every device's size; 0 draws each from the
	// paper code's power law, ⌊lognormal(4, 2)⌋ + 50, capped at
	// [MaxSyntheticSamples].
	SamplesPerDevice int
	// IID is the paper's Synthetic-IID: one W, b ~ N(0, 1) shared by all
	// devices and x ~ N(0, Σ) everywhere; Alpha and Beta are not used.
	IID bool
}

// Synthetic generates the paper's federation, one dataset per device (its
// natural partition), from a generator seeded by seed. For device k:
//
//	u_k ~ N(0, α²), W_k ∈ R^{Classes×Dim} ~ N(u_k, 1), b_k ∈ R^Classes ~ N(u_k, 1)
//	B_k ~ N(0, β²), v_k ∈ R^Dim ~ N(B_k, 1)
//	x ~ N(v_k, Σ), Σ diagonal with Σ_jj = j^−1.2
//	y = argmax(softmax(W_k x + b_k))
//
// in the paper code's order of draws: every size, then every prior, then
// each device's model and samples. As in the paper, α changes no sample:
// u_k shifts every entry of W_k and b_k alike, which adds u_k·(Σx + 1) to
// every class's logit and leaves the argmax where it was; the devices'
// data differ through their own W_k, b_k (for any α) and through β.
// Datasets have Features = Dim, Shape [Dim] and Classes classes. Bad
// settings, and federations of more than [MaxSyntheticValues] features in
// all, are errors wrapping [ErrInvalid].
func Synthetic(cfg SyntheticConfig, seed int64) ([]*Dataset, error) {
	cfg.Dim = cmp.Or(cfg.Dim, DefaultSyntheticDim)
	cfg.Classes = cmp.Or(cfg.Classes, DefaultSyntheticClasses)
	cfg.Devices = cmp.Or(cfg.Devices, DefaultSyntheticDevices)
	name := "synthetic(" + strconv.FormatFloat(cfg.Alpha, 'g', -1, 64) + "," + strconv.FormatFloat(cfg.Beta, 'g', -1, 64) + ")"
	if cfg.IID {
		name = "synthetic-iid"
	}
	var problems []string
	if !(cfg.Alpha >= 0) || math.IsInf(cfg.Alpha, 0) {
		problems = append(problems, fmt.Sprintf("alpha %v must be ≥ 0", cfg.Alpha))
	}
	if !(cfg.Beta >= 0) || math.IsInf(cfg.Beta, 0) {
		problems = append(problems, fmt.Sprintf("beta %v must be ≥ 0", cfg.Beta))
	}
	if cfg.Dim < 1 || cfg.Dim > 1<<16 {
		problems = append(problems, fmt.Sprintf("dim %d must be between 1 and 65536", cfg.Dim))
	}
	if cfg.Classes < 2 || cfg.Classes > 256 {
		problems = append(problems, fmt.Sprintf("classes %d must be between 2 and 256", cfg.Classes))
	}
	if cfg.Devices < 1 || cfg.Devices > MaxSyntheticDevices {
		problems = append(problems, fmt.Sprintf("devices %d must be between 1 and %d", cfg.Devices, MaxSyntheticDevices))
	}
	if cfg.SamplesPerDevice < 0 || cfg.SamplesPerDevice > MaxSyntheticSamples {
		problems = append(problems, fmt.Sprintf("samples per device %d must be between 0 (power law) and %d", cfg.SamplesPerDevice, MaxSyntheticSamples))
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("generating %s: %w: %s", name, ErrInvalid, strings.Join(problems, "; "))
	}

	r := newRand(seed, streamSynthetic)
	normal := func(mean, std float64) float64 { return mean + float64(std*r.NormFloat64()) }
	dim, classes, devices := cfg.Dim, cfg.Classes, cfg.Devices

	sizes := make([]int, devices)
	for k := range sizes {
		if cfg.SamplesPerDevice > 0 {
			sizes[k] = cfg.SamplesPerDevice
			continue
		}
		sizes[k] = int(min(math.Exp(normal(4, 2))+50, MaxSyntheticSamples))
	}
	total := 0
	for _, n := range sizes {
		total += n
	}
	if total > MaxSyntheticValues/dim {
		return nil, fmt.Errorf("generating %s: %w: %d devices hold %d samples of %d features, more than the %d values (4 GiB) one federation may hold; use fewer devices, samples per device or dimensions",
			name, ErrInvalid, devices, total, dim, MaxSyntheticValues)
	}
	u := make([]float64, devices)       // mean of W_k and b_k
	means := make([][]float64, devices) // v_k
	if !cfg.IID {
		for k := range u {
			u[k] = normal(0, cfg.Alpha)
		}
		B := make([]float64, devices)
		for k := range B {
			B[k] = normal(0, cfg.Beta)
		}
		for k := range means {
			means[k] = make([]float64, dim)
			for j := range means[k] {
				means[k][j] = normal(B[k], 1)
			}
		}
	}
	sd := make([]float64, dim) // √Σ_jj
	for j := range sd {
		sd[j] = math.Sqrt(math.Pow(float64(j+1), -1.2))
	}
	model := func(mean float64) (W, b []float64) {
		W = make([]float64, classes*dim)
		for i := range W {
			W[i] = normal(mean, 1)
		}
		b = make([]float64, classes)
		for i := range b {
			b[i] = normal(mean, 1)
		}
		return W, b
	}
	var sharedW, sharedB []float64
	if cfg.IID {
		sharedW, sharedB = model(0)
	}

	out := make([]*Dataset, devices)
	x := make([]float64, dim)
	for k := range out {
		W, b, v := sharedW, sharedB, means[k]
		if !cfg.IID {
			W, b = model(u[k])
		}
		n := sizes[k]
		ds := &Dataset{Name: name, N: n, Features: dim, Shape: []int{dim}, Classes: classes,
			X: make([]float32, n*dim), Y: make([]uint8, n)}
		for i := range n {
			for j := range x {
				mean := 0.0
				if v != nil {
					mean = v[j]
				}
				x[j] = normal(mean, sd[j])
				ds.X[i*dim+j] = float32(x[j])
			}
			// softmax is monotonic: its argmax is the logits'.
			best, arg := math.Inf(-1), 0
			for c := range classes {
				s := b[c]
				for j, xj := range x {
					s += float64(W[c*dim+j] * xj)
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
