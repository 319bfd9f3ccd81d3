package model

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sample() *Weights {
	return &Weights{Tensors: []Tensor{
		{Name: "fc2.weight", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "fc1.bias", Shape: []int{2}, Data: []float32{-1.5, 0.25}},
		{Name: "scale", Data: []float32{7}},
	}}
}

func TestSizes(t *testing.T) {
	w := sample()
	if got := w.NumParams(); got != 9 {
		t.Errorf("NumParams() = %d, want 9", got)
	}
	if got := w.Bytes(); got != 36 {
		t.Errorf("Bytes() = %d, want 36", got)
	}
	if got := (&Weights{}).NumParams(); got != 0 {
		t.Errorf("NumParams() of no tensors = %d, want 0", got)
	}
}

func TestCloneAndZerosLikeShareNothing(t *testing.T) {
	w := sample()
	c := w.Clone()
	if diff := cmp.Diff(w, c); diff != "" {
		t.Fatalf("Clone() differs (-orig +clone):\n%s", diff)
	}
	c.Tensors[0].Data[0], c.Tensors[0].Shape[0] = 100, 9
	if w.Tensors[0].Data[0] != 1 || w.Tensors[0].Shape[0] != 2 {
		t.Error("Clone() shares memory with the original")
	}
	z := w.ZerosLike()
	if err := w.Compatible(z); err != nil {
		t.Errorf("ZerosLike() is not compatible: %v", err)
	}
	if got := z.L2Norm(); got != 0 {
		t.Errorf("ZerosLike().L2Norm() = %v, want 0", got)
	}
	z.Tensors[1].Shape[0] = 5
	if w.Tensors[1].Shape[0] != 2 {
		t.Error("ZerosLike() shares shapes with the original")
	}
}

func TestLookup(t *testing.T) {
	w := sample()
	p, ok := w.Lookup("fc1.bias")
	if !ok || p.Data[1] != 0.25 {
		t.Fatalf("Lookup(fc1.bias) = %v, %v, want the tensor", p, ok)
	}
	p.Data[1] = 3
	if w.Tensors[1].Data[1] != 3 {
		t.Error("Lookup returned a copy, want a pointer into the weights")
	}
	if _, ok := w.Lookup("nope"); ok {
		t.Error("Lookup(nope) found a tensor")
	}
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		w    *Weights
		msg  string // "" for valid
	}{
		{"sample", sample(), ""},
		{"no tensors", &Weights{}, ""},
		{"zero-size", &Weights{Tensors: []Tensor{{Name: "e", Shape: []int{3, 0}}}}, ""},
		{"nil", nil, "nil"},
		{"empty name", &Weights{Tensors: []Tensor{{Name: "", Data: []float32{1}}}}, "non-empty"},
		{"bad utf8", &Weights{Tensors: []Tensor{{Name: "a\xff", Data: []float32{1}}}}, "UTF-8"},
		{"repeated", &Weights{Tensors: []Tensor{{Name: "a", Data: []float32{1}}, {Name: "a", Data: []float32{1}}}}, `repeats the name "a"`},
		{"short data", &Weights{Tensors: []Tensor{{Name: "a", Shape: []int{2}, Data: []float32{1}}}}, "holds 1 values"},
		{"negative", &Weights{Tensors: []Tensor{{Name: "a", Shape: []int{-1}}}}, "negative"},
		{"overflow", &Weights{Tensors: []Tensor{{Name: "a", Shape: []int{1 << 40, 1 << 40}}}}, "2^63"},
	}
	for _, tt := range tests {
		err := tt.w.Validate()
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
}

func TestCompatible(t *testing.T) {
	mod := func(f func(w *Weights)) *Weights { w := sample(); f(w); return w }
	tests := []struct {
		name  string
		other *Weights
		msg   string
	}{
		{"same", sample(), ""},
		{"nil", nil, "nil"},
		{"fewer", mod(func(w *Weights) { w.Tensors = w.Tensors[:2] }), "2 tensors, want 3"},
		{"renamed", mod(func(w *Weights) { w.Tensors[1].Name = "fc1.b" }), `tensor 1 is "fc1.b", want "fc1.bias"`},
		{"reordered", mod(func(w *Weights) { w.Tensors[0], w.Tensors[1] = w.Tensors[1], w.Tensors[0] }), `tensor 0 is "fc1.bias"`},
		{"reshaped", mod(func(w *Weights) { w.Tensors[0].Shape = []int{3, 2} }), `"fc2.weight" has shape [3 2], want [2 3]`},
		{"short data", mod(func(w *Weights) { w.Tensors[2].Data = nil }), `"scale" has 0 values, want 1`},
	}
	for _, tt := range tests {
		err := sample().Compatible(tt.other)
		if tt.msg == "" {
			if err != nil {
				t.Errorf("%s: Compatible() = %v, want nil", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: Compatible() = %v, want ErrIncompatible mentioning %q", tt.name, err, tt.msg)
		}
	}
}

func TestCheckFinite(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	tests := []struct {
		name string
		data []float32
		msg  string
	}{
		{"finite", []float32{1, -math.MaxFloat32, math.SmallestNonzeroFloat32}, ""},
		{"nan", []float32{1, 2, nan}, `"t" holds NaN at index 2`},
		{"-inf first", []float32{-inf, nan}, `"t" holds -Inf at index 0`},
		{"inf", []float32{0, 0, 0, 0, 0, inf, 0}, "index 5"},
	}
	for _, tt := range tests {
		w := &Weights{Tensors: []Tensor{{Name: "ok", Data: []float32{1}}, {Name: "t", Shape: []int{len(tt.data)}, Data: tt.data}}}
		err := w.CheckFinite()
		if tt.msg == "" {
			if err != nil {
				t.Errorf("%s: CheckFinite() = %v, want nil", tt.name, err)
			}
			continue
		}
		if !errors.Is(err, ErrNotFinite) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: CheckFinite() = %v, want ErrNotFinite mentioning %q", tt.name, err, tt.msg)
		}
	}
}

// TestCheckFiniteLarge covers the parallel scan: the first bad value is
// named wherever it falls among the parts.
func TestCheckFiniteLarge(t *testing.T) {
	const n = 1<<20 + 3
	for _, at := range []int{0, 1 << 18, 3<<18 + 5, n - 2} {
		w := &Weights{Tensors: []Tensor{{Name: "big", Shape: []int{n}, Data: make([]float32, n)}}}
		w.Tensors[0].Data[at] = float32(math.NaN())
		w.Tensors[0].Data[n-1] = float32(math.Inf(1))
		err := w.CheckFinite()
		if !errors.Is(err, ErrNotFinite) || !strings.Contains(err.Error(), fmt.Sprintf("index %d", at)) {
			t.Errorf("NaN at %d: CheckFinite() = %v, want the first one named", at, err)
		}
	}
	if err := (&Weights{Tensors: []Tensor{{Name: "ok", Shape: []int{n}, Data: make([]float32, n)}}}).CheckFinite(); err != nil {
		t.Errorf("CheckFinite() of zeros = %v, want nil", err)
	}
}

func TestFiniteNorm(t *testing.T) {
	tests := []struct {
		in     []float32
		norm   float32 // want ≥ max|in| and ≤ this
		finite bool
	}{
		{nil, 0, true},
		{[]float32{-3, 4}, 5, true},
		{[]float32{1, 2, 3, 4, 5, 6, 7, -8, 1}, 14.32, true}, // √205
		// The squares overflow: the largest magnitude itself.
		{[]float32{math.MaxFloat32, -1}, math.MaxFloat32, true},
		{[]float32{1e20, -3e20, 2e20}, 3e20, true},
		{[]float32{1, float32(math.Inf(-1))}, 0, false},
		{[]float32{float32(math.NaN())}, 0, false},
		{[]float32{1e30, float32(math.NaN()), 1e30}, 0, false},
	}
	for _, tt := range tests {
		norm, ok := FiniteNorm(tt.in)
		if ok != tt.finite {
			t.Errorf("FiniteNorm(%v) = %v, %v, want finite %v", tt.in, norm, ok, tt.finite)
			continue
		}
		if !ok {
			continue
		}
		var biggest float32
		for _, v := range tt.in {
			biggest = max(biggest, float32(math.Abs(float64(v))))
		}
		if norm < biggest*(1-1e-6) || norm > tt.norm*(1+1e-6) {
			t.Errorf("FiniteNorm(%v) = %v, want within [%v, %v]", tt.in, norm, biggest, tt.norm)
		}
	}
}

func TestArithmetic(t *testing.T) {
	w := sample()
	x := sample()
	if err := w.Axpy(2, x); err != nil {
		t.Fatal(err)
	}
	want := []float32{3, 6, 9, 12, 15, 18, -4.5, 0.75, 21}
	if got := flat(w); !cmp.Equal(got, want) {
		t.Errorf("Axpy(2, w) = %v, want %v", got, want)
	}
	d, err := Sub(w, x)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := flat(d), []float32{2, 4, 6, 8, 10, 12, -3, 0.5, 14}; !cmp.Equal(got, want) {
		t.Errorf("Sub = %v, want %v", got, want)
	}
	if got := flat(w); got[0] != 3 {
		t.Errorf("Sub modified its argument: %v", got)
	}
	d.Scale(0.5)
	if got, want := flat(d), flat(sample()); !cmp.Equal(got, want) {
		t.Errorf("Scale(0.5) = %v, want %v", got, want)
	}
	// Self-axpy: w += w.
	if err := d.Axpy(1, d); err != nil || flat(d)[8] != 14 {
		t.Errorf("Axpy(1, self) = %v, %v, want the last value 14", flat(d), err)
	}
	if got, want := sample().L2Norm(), math.Sqrt(1+4+9+16+25+36+2.25+0.0625+49); math.Abs(got-want) > 1e-12 {
		t.Errorf("L2Norm() = %v, want %v", got, want)
	}
	dot, err := sample().Dot(x)
	if want := 1 + 4 + 9 + 16 + 25 + 36 + 2.25 + 0.0625 + 49; err != nil || dot != want {
		t.Errorf("Dot = %v, %v, want %v", dot, err, want)
	}
	other := sample()
	other.Tensors[0].Shape = []int{6}
	for name, err := range map[string]error{
		"Axpy": sample().Axpy(1, other),
		"Sub":  func() error { _, err := Sub(sample(), other); return err }(),
		"Dot":  func() error { _, err := sample().Dot(other); return err }(),
	} {
		if !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "fc2.weight") {
			t.Errorf("%s(incompatible) = %v, want ErrIncompatible naming fc2.weight", name, err)
		}
	}
}

// TestDotFlatAccumulatesInFloat64: a float32 sum would lose the ones.
func TestDotFlatAccumulatesInFloat64(t *testing.T) {
	x := make([]float32, 1001)
	for i := range x {
		x[i] = 1
	}
	x[0] = 1 << 12 // 2^24 after squaring: float32 would absorb each +1
	if got, want := DotFlat(x, x), float64(1<<24+1000); got != want {
		t.Errorf("DotFlat = %v, want %v", got, want)
	}
}

func TestNumElements(t *testing.T) {
	tests := []struct {
		shape []int
		want  uint64
		ok    bool
	}{
		{nil, 1, true}, {[]int{}, 1, true}, {[]int{2, 3, 4}, 24, true}, {[]int{5, 0}, 0, true},
		{[]int{-2}, 0, false}, {[]int{1 << 32, 1 << 31}, 1 << 63, false}, {[]int{1 << 32, 1 << 30}, 1 << 62, true},
		{[]int{0, 1 << 62, 1 << 62}, 0, true},
	}
	for _, tt := range tests {
		got, err := NumElements(tt.shape)
		if (err == nil) != tt.ok || (tt.ok && got != tt.want) {
			t.Errorf("NumElements(%v) = %d, %v, want %d (ok %v)", tt.shape, got, err, tt.want, tt.ok)
		}
	}
}

func flat(w *Weights) []float32 {
	var out []float32
	for _, t := range w.Tensors {
		out = append(out, t.Data...)
	}
	return out
}

func TestDeltaNormAndShrinkDelta(t *testing.T) {
	base := &Weights{Tensors: []Tensor{{Name: "a", Shape: []int{3}, Data: []float32{1, 2, 3}}, {Name: "b", Shape: []int{1}, Data: []float32{0}}}}
	w := &Weights{Tensors: []Tensor{{Name: "a", Shape: []int{3}, Data: []float32{4, 2, 3}}, {Name: "b", Shape: []int{1}, Data: []float32{4}}}}
	if got := DeltaNorm(w, base); got != 5 { // ‖(3, 0, 0, 4)‖
		t.Fatalf("DeltaNorm = %v, want 5", got)
	}
	ShrinkDelta(w, base, 0.2) // delta (3,0,0,4) → (0.6,0,0,0.8)
	want := []float32{1.6, 2, 3, 0.8}
	got := append(append([]float32(nil), w.Tensors[0].Data...), w.Tensors[1].Data...)
	for i := range want {
		if math.Abs(float64(got[i]-want[i])) > 1e-6 {
			t.Fatalf("after ShrinkDelta(0.2): %v, want %v", got, want)
		}
	}
	if got := DeltaNorm(w, base); math.Abs(got-1) > 1e-6 {
		t.Errorf("norm after shrinking to 1/5 = %v, want 1", got)
	}
	w.Tensors[1].Data[0] = float32(math.NaN())
	if got := DeltaNorm(w, base); !math.IsNaN(got) {
		t.Errorf("DeltaNorm with a NaN = %v, want NaN", got)
	}
}

// TestTensorLen: a tensor counts its values, or without values (a shell)
// those its shape says.
func TestTensorLen(t *testing.T) {
	for _, tt := range []struct {
		t    Tensor
		want int
	}{
		{Tensor{Shape: []int{2, 3}, Data: make([]float32, 5)}, 5},
		{Tensor{Shape: []int{2, 3}}, 6},
		{Tensor{}, 1}, // a scalar
		{Tensor{Shape: []int{0}}, 0},
		{Tensor{Shape: []int{-1}}, 0},
		{Tensor{Shape: []int{1 << 40, 1 << 40}}, 0},
	} {
		if got := tt.t.Len(); got != tt.want {
			t.Errorf("%v.Len() = %d, want %d", tt.t.Shape, got, tt.want)
		}
	}
}
