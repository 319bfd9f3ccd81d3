package data

import (
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// balanced returns a dataset of n samples per class over classes classes,
// labels cycling.
func balanced(n, classes int) *Dataset {
	d := &Dataset{Name: "toy", N: n * classes, Features: 1, Shape: []int{1}, Classes: classes,
		X: make([]float32, n*classes), Y: make([]uint8, n*classes)}
	for i := range d.Y {
		d.Y[i] = uint8(i % classes)
		d.X[i] = float32(i)
	}
	return d
}

func TestVirtualClientDeterministic(t *testing.T) {
	ds := balanced(600, 10)
	for _, spec := range []VirtualSpec{
		{Seed: 1, Alpha: 0.5},
		{Seed: 1, Alpha: 0.5, SamplesPerClient: 40},
		{Seed: 7, Alpha: 0},
		{Seed: 7, Alpha: 0.01, SamplesPerClient: 600},
	} {
		a, err := NewVirtualPartitioner(ds, spec)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := NewVirtualPartitioner(ds, spec)
		// b draws other clients first: a client's partition depends on its
		// id alone, not on what was drawn before (no state is kept).
		for id := range int64(50) {
			b.Client(id + 1000)
		}
		for _, id := range []int64{0, 1, 2, 19_999_999, 1 << 40} {
			got, want := b.Client(id), a.Client(id)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%+v: Client(%d) after other clients differs (-first +second):\n%s", spec, id, diff)
			}
			if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
				t.Errorf("%+v: Client(%d) = %v, want ascending distinct indices", spec, id, got)
			}
			if n := spec.SamplesPerClient; n > 0 && len(got) > n {
				t.Errorf("%+v: Client(%d) has %d samples, want at most %d", spec, id, len(got), n)
			}
			if n := spec.SamplesPerClient; n == 0 && (len(got) > VirtualMaxSamples) {
				t.Errorf("%+v: Client(%d) has %d samples, want at most %d", spec, id, len(got), VirtualMaxSamples)
			}
		}
		if slices.Equal(a.Client(1), a.Client(2)) {
			t.Errorf("%+v: clients 1 and 2 have the same samples", spec)
		}
	}
}

// TestVirtualClientDistribution: over many clients the class mix averages
// out near uniform, and a small alpha gives each client a dominant class
// while a large one does not.
func TestVirtualClientDistribution(t *testing.T) {
	ds := balanced(1000, 10)
	tests := []struct {
		alpha            float64
		minTop, maxTop   float64 // bounds on the mean share of a client's largest class
		sizeLo, sizeHigh float64 // bounds on the mean client size
	}{
		{alpha: 0.05, minTop: 0.7, maxTop: 1, sizeLo: 25, sizeHigh: 45},
		{alpha: 100, minTop: 0.1, maxTop: 0.35, sizeLo: 25, sizeHigh: 45},
		{alpha: 0, minTop: 0.1, maxTop: 0.35, sizeLo: 25, sizeHigh: 45},
	}
	for _, tt := range tests {
		p, err := NewVirtualPartitioner(ds, VirtualSpec{Seed: 3, Alpha: tt.alpha})
		if err != nil {
			t.Fatal(err)
		}
		const clients = 2000
		mean := make([]float64, 10)
		var top, size float64
		for id := range int64(clients) {
			idx := p.Client(id)
			hist := make([]float64, 10)
			for _, i := range idx {
				hist[ds.Y[i]]++
			}
			for c := range hist {
				hist[c] /= float64(len(idx))
				mean[c] += hist[c] / clients
			}
			top += slices.Max(hist) / clients
			size += float64(len(idx)) / clients
		}
		for c, m := range mean {
			if math.Abs(m-0.1) > 0.02 {
				t.Errorf("alpha %g: mean share of class %d = %.3f, want 0.1 ± 0.02", tt.alpha, c, m)
			}
		}
		if top < tt.minTop || top > tt.maxTop {
			t.Errorf("alpha %g: mean top-class share = %.3f, want in [%g, %g]", tt.alpha, top, tt.minTop, tt.maxTop)
		}
		if size < tt.sizeLo || size > tt.sizeHigh {
			t.Errorf("alpha %g: mean client size = %.1f, want in [%g, %g]", tt.alpha, size, tt.sizeLo, tt.sizeHigh)
		}
	}
}

func TestVirtualPartitionerInvalid(t *testing.T) {
	ds := balanced(10, 2)
	tests := []struct {
		name string
		ds   *Dataset
		spec VirtualSpec
	}{
		{"nil dataset", nil, VirtualSpec{Alpha: 1}},
		{"empty dataset", &Dataset{Features: 1, Classes: 2}, VirtualSpec{Alpha: 1}},
		{"negative alpha", ds, VirtualSpec{Alpha: -1}},
		{"NaN alpha", ds, VirtualSpec{Alpha: math.NaN()}},
		{"too many samples", ds, VirtualSpec{Alpha: 1, SamplesPerClient: 21}},
		{"negative samples", ds, VirtualSpec{Alpha: 1, SamplesPerClient: -1}},
	}
	for _, tt := range tests {
		if _, err := NewVirtualPartitioner(tt.ds, tt.spec); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: NewVirtualPartitioner() error = %v, want ErrInvalid", tt.name, err)
		}
	}
}

func BenchmarkVirtualClient(b *testing.B) {
	p, err := NewVirtualPartitioner(balanced(6000, 10), VirtualSpec{Seed: 1, Alpha: 0.5})
	if err != nil {
		b.Fatal(err)
	}
	var id int64
	for b.Loop() {
		p.Client(id)
		id += 7919
	}
}

// FuzzVirtualClient: whatever the seed, alpha, size and id, a client's
// indices are ascending, distinct, within the dataset, and as many as
// asked (or, with alpha, at most that many).
func FuzzVirtualClient(f *testing.F) {
	f.Add(int64(1), 0.5, 0, int64(0))
	f.Add(int64(-7), 0.0, 30, int64(19_999_999))
	f.Add(int64(3), 1e-3, 300, int64(-1))
	ds := balanced(30, 10)
	f.Fuzz(func(t *testing.T, seed int64, alpha float64, n int, id int64) {
		p, err := NewVirtualPartitioner(ds, VirtualSpec{Seed: seed, Alpha: alpha, SamplesPerClient: n})
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("NewVirtualPartitioner error %v, want ErrInvalid", err)
			}
			return
		}
		got := p.Client(id)
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != len(got) {
			t.Fatalf("Client(%d) = %v, want ascending distinct indices", id, got)
		}
		if len(got) > 0 && (got[0] < 0 || got[len(got)-1] >= ds.N) {
			t.Fatalf("Client(%d) = %v, want indices in [0, %d)", id, got, ds.N)
		}
		if alpha == 0 && n > 0 && len(got) != n {
			t.Fatalf("Client(%d) has %d samples, want %d", id, len(got), n)
		}
		if len(got) == 0 || len(got) > max(n, VirtualMaxSamples) {
			t.Fatalf("Client(%d) has %d samples, want 1 to %d", id, len(got), max(n, VirtualMaxSamples))
		}
	})
}
