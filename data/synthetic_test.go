package data

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
)

func mustSynthetic(t *testing.T, cfg SyntheticConfig, seed int64) []*Dataset {
	t.Helper()
	devs, err := Synthetic(cfg, seed)
	if err != nil {
		t.Fatalf("Synthetic(%+v) = %v", cfg, err)
	}
	return devs
}

func TestSyntheticShapes(t *testing.T) {
	for _, tt := range []struct {
		cfg  SyntheticConfig
		name string
	}{
		{SyntheticConfig{}, "synthetic(0,0)"},
		{SyntheticConfig{Alpha: 0.5, Beta: 0.5}, "synthetic(0.5,0.5)"},
		{SyntheticConfig{Alpha: 1, Beta: 1}, "synthetic(1,1)"},
		{SyntheticConfig{IID: true}, "synthetic-iid"},
		{SyntheticConfig{Alpha: 1, Beta: 1, Dim: 5, Classes: 3, Devices: 4, SamplesPerDevice: 7}, "synthetic(1,1)"},
	} {
		devs := mustSynthetic(t, tt.cfg, 1)
		wantDevices, wantDim, wantClasses := cmpOrInt(tt.cfg.Devices, 30), cmpOrInt(tt.cfg.Dim, 60), cmpOrInt(tt.cfg.Classes, 10)
		if len(devs) != wantDevices {
			t.Fatalf("Synthetic(%+v) = %d devices, want %d", tt.cfg, len(devs), wantDevices)
		}
		for k, d := range devs {
			if err := d.Validate(); err != nil {
				t.Errorf("Synthetic(%+v) device %d: %v", tt.cfg, k, err)
			}
			if d.Name != tt.name || d.Features != wantDim || d.Classes != wantClasses || !slices.Equal(d.Shape, []int{wantDim}) {
				t.Errorf("Synthetic(%+v) device %d = %q features %d classes %d shape %v, want %q %d %d [%d]",
					tt.cfg, k, d.Name, d.Features, d.Classes, d.Shape, tt.name, wantDim, wantClasses, wantDim)
			}
			if tt.cfg.SamplesPerDevice > 0 && d.N != tt.cfg.SamplesPerDevice {
				t.Errorf("Synthetic(%+v) device %d has %d samples, want %d", tt.cfg, k, d.N, tt.cfg.SamplesPerDevice)
			}
		}
	}
}

func cmpOrInt(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

func TestSyntheticDeterminism(t *testing.T) {
	cfg := SyntheticConfig{Alpha: 0.5, Beta: 0.5, Devices: 5}
	a, b, c := mustSynthetic(t, cfg, 1), mustSynthetic(t, cfg, 1), mustSynthetic(t, cfg, 2)
	if !slices.Equal(digests(a), digests(b)) {
		t.Error("Synthetic with the same seed gave different data")
	}
	if slices.Equal(digests(a), digests(c)) {
		t.Error("Synthetic with seeds 1 and 2 gave the same data")
	}
}

// TestSyntheticPowerLaw checks the sizes against the paper code's
// ⌊lognormal(4, 2)⌋ + 50: median 50 + e⁴ ≈ 105, a heavy right tail.
func TestSyntheticPowerLaw(t *testing.T) {
	devs := mustSynthetic(t, SyntheticConfig{Dim: 1, Classes: 2, Devices: 2000}, 3)
	sizes := make([]float64, len(devs))
	for i, d := range devs {
		sizes[i] = float64(d.N)
	}
	slices.Sort(sizes)
	median := sizes[len(sizes)/2]
	var mean float64
	for _, s := range sizes {
		mean += s / float64(len(sizes))
	}
	if sizes[0] < 50 {
		t.Errorf("smallest device has %v samples, want ≥ 50", sizes[0])
	}
	if median < 95 || median > 118 {
		t.Errorf("median size %v, want ≈ 105", median)
	}
	if mean < 3*median {
		t.Errorf("mean size %.0f, median %v: want the heavy tail (mean ≈ 3.8× median)", mean, median)
	}
	// log(N-50) is normal(4, 2), up to the ⌊·⌋, which matters only at
	// the bottom.
	if q90 := math.Log(sizes[len(sizes)*9/10] - 50); math.Abs(q90-(4+2*1.2816)) > 0.3 {
		t.Errorf("90th percentile of log(N-50) = %.2f, want 4 + 2·1.28 = 6.56", q90)
	}
}

// TestSyntheticCovariance checks x ~ N(v, Σ) with Σ_jj = j^−1.2: the
// per-feature variances within a device.
func TestSyntheticCovariance(t *testing.T) {
	const n = 4000
	dev := mustSynthetic(t, SyntheticConfig{IID: true, Devices: 1, SamplesPerDevice: n}, 5)[0]
	for _, j := range []int{1, 2, 10, 60} {
		var mean, sq float64
		for i := range n {
			v := float64(dev.X[i*60+j-1])
			mean += v / n
			sq += v * v / n
		}
		variance := sq - mean*mean
		want := math.Pow(float64(j), -1.2)
		if math.Abs(variance/want-1) > 0.1 || math.Abs(mean) > 4*math.Sqrt(want/n) {
			t.Errorf("IID feature %d: mean %.4f variance %.5f, want 0 and %.5f", j, mean, variance, want)
		}
	}
}

// TestSyntheticHeterogeneity checks what α and β do. β moves each
// device's feature means v_k ~ N(B_k, 1), B_k ~ N(0, β²). α shifts every
// entry of W_k and b_k by the same u_k, which adds u_k·(Σx + 1) to every
// class's logit alike: the labels do not change at all, only the model
// that fits them. The paper's data are so.
func TestSyntheticHeterogeneity(t *testing.T) {
	deviceMeanSpread := func(devs []*Dataset) float64 {
		var ms []float64
		for _, d := range devs {
			var m float64
			for _, v := range d.X {
				m += float64(v) / float64(len(d.X))
			}
			ms = append(ms, m)
		}
		var mean, v float64
		for _, m := range ms {
			mean += m / float64(len(ms))
		}
		for _, m := range ms {
			v += (m - mean) * (m - mean) / float64(len(ms))
		}
		return math.Sqrt(v)
	}
	cfg := func(a, b float64) SyntheticConfig {
		return SyntheticConfig{Alpha: a, Beta: b, Devices: 40, SamplesPerDevice: 200}
	}
	// B_k's spread is β; the mean of 60 v_kj adds 1/√60 ≈ 0.13.
	for _, tt := range []struct {
		beta, lo, hi float64
	}{{0, 0.05, 0.25}, {1, 0.7, 1.4}} {
		if s := deviceMeanSpread(mustSynthetic(t, cfg(0, tt.beta), 7)); s < tt.lo || s > tt.hi {
			t.Errorf("β=%g: spread of device mean features %.3f, want in [%g, %g]", tt.beta, s, tt.lo, tt.hi)
		}
	}
	a0, a1 := mustSynthetic(t, cfg(0, 1), 7), mustSynthetic(t, cfg(1, 1), 7)
	differ := 0
	for k := range a0 {
		if !slices.Equal(a0[k].X, a1[k].X) {
			t.Fatalf("device %d: α changed x; only W_k and b_k depend on it", k)
		}
		for i := range a0[k].Y {
			if a0[k].Y[i] != a1[k].Y[i] {
				differ++
			}
		}
	}
	if differ > 0 {
		t.Errorf("α = 0 and 1 gave %d different labels of %d, want none: a common shift of W_k, b_k leaves argmax alone", differ, 40*200)
	}
}

// TestSyntheticLabels checks the labels against the devices' models: the
// IID federation shares one model, so its devices' label mixes agree;
// Synthetic(1,1)'s devices each have their own, so theirs do not.
func TestSyntheticLabels(t *testing.T) {
	share := func(devs []*Dataset) (meanMax float64, classesSeen int) {
		seen := make([]bool, 10)
		for _, d := range devs {
			h := d.LabelHistogram()
			meanMax += float64(slices.Max(h)) / float64(d.N) / float64(len(devs))
			for c, n := range h {
				seen[c] = seen[c] || n > 0
			}
		}
		for _, s := range seen {
			if s {
				classesSeen++
			}
		}
		return meanMax, classesSeen
	}
	// Total variation distance between two devices' label mixes.
	tv := func(a, b *Dataset) float64 {
		ha, hb := a.LabelHistogram(), b.LabelHistogram()
		var d float64
		for c := range ha {
			d += math.Abs(float64(ha[c])/float64(a.N)-float64(hb[c])/float64(b.N)) / 2
		}
		return d
	}
	meanTV := func(devs []*Dataset) float64 {
		var s float64
		for k := 1; k < len(devs); k++ {
			s += tv(devs[0], devs[k]) / float64(len(devs)-1)
		}
		return s
	}
	iid := mustSynthetic(t, SyntheticConfig{IID: true, Devices: 20, SamplesPerDevice: 1000}, 11)
	het := mustSynthetic(t, SyntheticConfig{Alpha: 1, Beta: 1, Devices: 20, SamplesPerDevice: 1000}, 11)
	if d := meanTV(iid); d > 0.08 {
		t.Errorf("Synthetic-IID: mean label-mix distance between devices %.3f, want < 0.08 (one shared model)", d)
	}
	if d := meanTV(het); d < 0.4 {
		t.Errorf("Synthetic(1,1): mean label-mix distance between devices %.3f, want > 0.4 (a model per device)", d)
	}
	if _, seen := share(het); seen != 10 {
		t.Errorf("Synthetic(1,1) uses %d classes across 20 devices, want all 10", seen)
	}
}

func TestSyntheticErrors(t *testing.T) {
	for _, tt := range []struct {
		cfg SyntheticConfig
		msg string
	}{
		{SyntheticConfig{Alpha: -1}, "alpha -1 must be ≥ 0"},
		{SyntheticConfig{Beta: math.NaN()}, "beta NaN must be ≥ 0"},
		{SyntheticConfig{Alpha: math.Inf(1)}, "alpha +Inf"},
		{SyntheticConfig{Devices: -2}, "devices -2 must be between 1 and 1048576"},
		{SyntheticConfig{Devices: MaxSyntheticDevices + 1}, "devices 1048577"},
		{SyntheticConfig{Devices: 1000, SamplesPerDevice: MaxSyntheticSamples}, "1000 devices hold 1048576000 samples of 60 features, more than the 1073741824 values"},
		{SyntheticConfig{Devices: 400, Dim: 1 << 16}, "use fewer devices, samples per device or dimensions"}, // power-law sizes ≥ 50: ≥ 1.3·10⁹ values
		{SyntheticConfig{Classes: 1}, "classes 1 must be between 2 and 256"},
		{SyntheticConfig{Classes: 300}, "classes 300"},
		{SyntheticConfig{Dim: -1}, "dim -1"},
		{SyntheticConfig{SamplesPerDevice: -5}, "samples per device -5"},
	} {
		if _, err := Synthetic(tt.cfg, 1); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Synthetic(%+v) = %v, want ErrInvalid mentioning %q", tt.cfg, err, tt.msg)
		}
	}
}

func BenchmarkSynthetic(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Synthetic(SyntheticConfig{Alpha: 1, Beta: 1}, 1); err != nil {
			b.Fatal(err)
		}
	}
}

// TestSyntheticAlphaBeta compares Synthetic(0,0) with Synthetic(1,1), and
// each with itself, for one seed: the heterogeneous settings give other
// data, device by device.
func TestSyntheticAlphaBeta(t *testing.T) {
	cfg := func(ab float64) SyntheticConfig {
		return SyntheticConfig{Alpha: ab, Beta: ab, Devices: 4, SamplesPerDevice: 50}
	}
	zero, one := mustSynthetic(t, cfg(0), 1), mustSynthetic(t, cfg(1), 1)
	for k := range zero {
		if zero[k].Digest() == one[k].Digest() {
			t.Errorf("device %d: Synthetic(0,0) and Synthetic(1,1) gave the same data", k)
		}
	}
	if !slices.Equal(digests(zero), digests(mustSynthetic(t, cfg(0), 1))) {
		t.Error("Synthetic(0,0) twice with seed 1 gave different data")
	}
	// Synthetic(0,0) still gives each device its own model (W_k, b_k ~
	// N(0, 1)) and features (v_k ~ N(0, 1)): not the IID federation.
	iid := mustSynthetic(t, SyntheticConfig{IID: true, Devices: 4, SamplesPerDevice: 50}, 1)
	if slices.Equal(digests(zero), digests(iid)) {
		t.Error("Synthetic(0,0) = Synthetic-IID, want devices with their own models")
	}
}
