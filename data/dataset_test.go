package data

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	good := func() *Dataset {
		return &Dataset{Name: "d", N: 2, Features: 4, Shape: []int{1, 2, 2}, Classes: 3, X: make([]float32, 8), Y: []uint8{0, 2}}
	}
	tests := []struct {
		name   string
		mutate func(*Dataset)
		msg    string // "" for valid
	}{
		{"valid", func(*Dataset) {}, ""},
		{"no shape", func(d *Dataset) { d.Shape = nil }, ""},
		{"short X", func(d *Dataset) { d.X = d.X[:7] }, "len(X) = 7, want N·Features = 2·4"},
		{"long Y", func(d *Dataset) { d.Y = append(d.Y, 1) }, "len(Y) = 3, want N = 2"},
		{"shape", func(d *Dataset) { d.Shape = []int{1, 2, 3} }, "shape [1 2 3] holds 6 values, want Features = 4"},
		{"label", func(d *Dataset) { d.Y[1] = 3 }, "label 3 of sample 1 is not below Classes = 3"},
		{"classes", func(d *Dataset) { d.Classes = 0 }, "0 classes"},
		{"features", func(d *Dataset) { d.Features = 0 }, "2 samples of 0 features"},
		{"negative N", func(d *Dataset) { d.N = -1 }, "-1 samples"},
	}
	for _, tt := range tests {
		d := good()
		tt.mutate(d)
		err := d.Validate()
		if tt.msg == "" {
			if err != nil {
				t.Errorf("%s: Validate() = %v, want nil", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: Validate() = %v, want ErrInvalid mentioning %q", tt.name, err, tt.msg)
		}
	}
	if err := (*Dataset)(nil).Validate(); !errors.Is(err, ErrInvalid) {
		t.Errorf("nil.Validate() = %v, want ErrInvalid", err)
	}
}

func TestSubset(t *testing.T) {
	ds := &Dataset{Name: "d", N: 3, Features: 2, Shape: []int{2}, Classes: 3, X: []float32{0, 1, 10, 11, 20, 21}, Y: []uint8{0, 1, 2}}
	got := ds.Subset([]int{2, 0, 2})
	want := &Dataset{Name: "d", N: 3, Features: 2, Shape: []int{2}, Classes: 3, X: []float32{20, 21, 0, 1, 20, 21}, Y: []uint8{2, 0, 2}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Subset([2 0 2]) (-want +got):\n%s", diff)
	}
	got.X[0], got.Shape[0] = -1, 9
	if ds.X[4] != 20 || ds.Shape[0] != 2 {
		t.Error("Subset shares memory with its dataset")
	}
}

func TestSplit(t *testing.T) {
	train := toyDataset(6000, 10)
	tests := []struct {
		frac          float64
		trainN, testN int
		testPerClass  int
	}{
		{0.1, 5400, 600, 60},
		{0.25, 4500, 1500, 150},
		{0, 6000, 0, 0},
		{-1, 6000, 0, 0},
		{1, 0, 6000, 600},
		{7, 0, 6000, 600},
	}
	for _, tt := range tests {
		tr, te := train.Split(tt.frac, 3)
		if tr.N != tt.trainN || te.N != tt.testN {
			t.Errorf("Split(%v) sizes = %d/%d, want %d/%d", tt.frac, tr.N, te.N, tt.trainN, tt.testN)
		}
		if got, want := te.LabelHistogram(), slices.Repeat([]int{tt.testPerClass}, 10); !cmp.Equal(got, want) {
			t.Errorf("Split(%v) test classes = %v, want %v (stratified)", tt.frac, got, want)
		}
		if err := errors.Join(tr.Validate(), te.Validate()); err != nil {
			t.Errorf("Split(%v): %v", tt.frac, err)
		}
		if all := Concat(tr, te); !cmp.Equal(all.LabelHistogram(), train.LabelHistogram()) {
			t.Errorf("Split(%v) lost or repeated samples", tt.frac)
		}
	}
	a, b := train.Split(0.1, 3)
	c, d := train.Split(0.1, 3)
	e, _ := train.Split(0.1, 4)
	if a.Digest() != c.Digest() || b.Digest() != d.Digest() {
		t.Error("Split with the same seed gave different splits")
	}
	if a.Digest() == e.Digest() {
		t.Error("Split with seeds 3 and 4 gave the same split")
	}
}

func TestConcat(t *testing.T) {
	a := &Dataset{Name: "a", N: 1, Features: 2, Shape: []int{2}, Classes: 2, X: []float32{1, 2}, Y: []uint8{1}}
	b := &Dataset{Name: "b", N: 2, Features: 2, Shape: []int{2}, Classes: 3, X: []float32{3, 4, 5, 6}, Y: []uint8{2, 0}}
	got := Concat(nil, a, nil, b)
	want := &Dataset{Name: "a", N: 3, Features: 2, Shape: []int{2}, Classes: 3, X: []float32{1, 2, 3, 4, 5, 6}, Y: []uint8{1, 2, 0}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Concat(nil, a, nil, b) (-want +got):\n%s", diff)
	}
	if got := Concat(); got != nil {
		t.Errorf("Concat() = %v, want nil", got)
	}
}

func TestDigest(t *testing.T) {
	base := &Dataset{N: 2, Features: 1, Classes: 2, X: []float32{0, 1}, Y: []uint8{0, 1}}
	// SHA-256 of 00 00 00 00 00 00 80 3f 00 01 (0 and 1 as little-endian
	// float32, then the labels), computed with sha256sum.
	const want = "66831826a7ad46d37a7b4c2258a4aad5e56c565add1214ed865482e1dfc25d9a"
	got := base.Digest()
	if got != want {
		t.Fatalf("Digest() = %s, want %s", got, want)
	}
	for _, tt := range []struct {
		name   string
		mutate func(*Dataset)
	}{
		{"a label", func(d *Dataset) { d.Y[1] = 0 }},
		{"a pixel", func(d *Dataset) { d.X[1] = 0.25 }},
		{"negative zero", func(d *Dataset) { d.X[0] = float32(negZero()) }},
	} {
		d := &Dataset{N: 2, Features: 1, Classes: 2, X: slices.Clone(base.X), Y: slices.Clone(base.Y)}
		tt.mutate(d)
		if d.Digest() == got {
			t.Errorf("Digest() did not change with %s", tt.name)
		}
	}
}

func negZero() float64 {
	z := 0.0
	return -z
}

func BenchmarkDigest(b *testing.B) {
	train, _ := loadSubset(b)
	b.SetBytes(int64(len(train.X)*4 + len(train.Y)))
	for b.Loop() {
		train.Digest()
	}
}
