package model

import (
	"fmt"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"unicode/utf8"

	"gonum.org/v1/gonum/blas/blas32"
)

// Len returns the number of t's values: len(t.Data), or for a tensor
// without values (Data nil: a shell, as [TensorFile.Shell] gives) the
// number its shape says (0 for an invalid shape).
func (t Tensor) Len() int {
	if t.Data != nil {
		return len(t.Data)
	}
	n, err := NumElements(t.Shape)
	if err != nil || n > math.MaxInt {
		return 0
	}
	return int(n)
}

// NumParams returns the number of scalar parameters.
func (w *Weights) NumParams() int {
	n := 0
	for _, t := range w.Tensors {
		n += len(t.Data)
	}
	return n
}

// Bytes returns the size of the float32 payload in bytes (4 × NumParams),
// not counting names, shapes or an encoding's header.
func (w *Weights) Bytes() int64 { return int64(w.NumParams()) * 4 }

// Clone returns a deep copy: no slice is shared with w.
func (w *Weights) Clone() *Weights {
	out := &Weights{Tensors: make([]Tensor, len(w.Tensors))}
	for i, t := range w.Tensors {
		out.Tensors[i] = Tensor{Name: t.Name, Shape: slices.Clone(t.Shape), Data: slices.Clone(t.Data)}
	}
	return out
}

// ZerosLike returns Weights with w's names and shapes, all zero.
func (w *Weights) ZerosLike() *Weights {
	out := &Weights{Tensors: make([]Tensor, len(w.Tensors))}
	for i, t := range w.Tensors {
		out.Tensors[i] = Tensor{Name: t.Name, Shape: slices.Clone(t.Shape), Data: make([]float32, len(t.Data))}
	}
	return out
}

// Lookup returns the tensor called name, which points into w.
func (w *Weights) Lookup(name string) (*Tensor, bool) {
	for i := range w.Tensors {
		if w.Tensors[i].Name == name {
			return &w.Tensors[i], true
		}
	}
	return nil, false
}

// Validate checks that w is consistent in itself: every tensor has a
// non-empty, valid UTF-8 name that no other tensor has, no negative
// dimension, and as many values as its shape's product (a scalar, Shape
// empty, has one). The error wraps [ErrInvalid] and names the first
// offending tensor.
func (w *Weights) Validate() error {
	if w == nil {
		return fmt.Errorf("%w: no weights (nil)", ErrInvalid)
	}
	seen := make(map[string]struct{}, len(w.Tensors))
	for i, t := range w.Tensors {
		if t.Name == "" || !utf8.ValidString(t.Name) {
			return fmt.Errorf("%w: tensor %d has name %q; a name must be non-empty UTF-8", ErrInvalid, i, t.Name)
		}
		if _, dup := seen[t.Name]; dup {
			return fmt.Errorf("%w: tensor %d repeats the name %q", ErrInvalid, i, t.Name)
		}
		seen[t.Name] = struct{}{}
		n, err := NumElements(t.Shape)
		if err != nil {
			return fmt.Errorf("%w: tensor %q: %w", ErrInvalid, t.Name, err)
		}
		if n != uint64(len(t.Data)) {
			return fmt.Errorf("%w: tensor %q has shape %v (%d values) but holds %d values", ErrInvalid, t.Name, t.Shape, n, len(t.Data))
		}
	}
	return nil
}

// NumElements returns the product of shape's dimensions (1 for an empty
// shape), or an error for a negative dimension or a product past 2⁶³.
func NumElements(shape []int) (uint64, error) {
	n := uint64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("shape %v has a negative dimension", shape)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > math.MaxInt64 {
			return 0, fmt.Errorf("shape %v has more than 2^63 elements", shape)
		}
		n = lo
	}
	return n, nil
}

// Compatible returns nil when other has the same tensor names, in the same
// order, with the same shapes and value counts as w. Otherwise the error
// wraps [ErrIncompatible] and names the first difference.
func (w *Weights) Compatible(other *Weights) error {
	if w == nil || other == nil {
		return fmt.Errorf("%w: no weights (nil)", ErrIncompatible)
	}
	if len(w.Tensors) != len(other.Tensors) {
		return fmt.Errorf("%w: %d tensors, want %d", ErrIncompatible, len(other.Tensors), len(w.Tensors))
	}
	for i, t := range w.Tensors {
		o := other.Tensors[i]
		if o.Name != t.Name {
			return fmt.Errorf("%w: tensor %d is %q, want %q", ErrIncompatible, i, o.Name, t.Name)
		}
		if !slices.Equal(o.Shape, t.Shape) {
			return fmt.Errorf("%w: tensor %q has shape %v, want %v", ErrIncompatible, t.Name, o.Shape, t.Shape)
		}
		if len(o.Data) != len(t.Data) {
			return fmt.Errorf("%w: tensor %q has %d values, want %d", ErrIncompatible, t.Name, len(o.Data), len(t.Data))
		}
	}
	return nil
}

// CheckFinite returns an error wrapping [ErrNotFinite] that names the
// first NaN or ±Inf (tensor and flat index), or nil. Large tensors are
// scanned on every core.
func (w *Weights) CheckFinite() error {
	for _, t := range w.Tensors {
		if err := CheckFiniteBlock(t.Name, 0, t.Data); err != nil {
			return err
		}
	}
	return nil
}

// CheckFiniteBlock returns an error wrapping [ErrNotFinite] that names the
// first NaN or ±Inf of vals, the values of tensor name from flat index off
// on (a block of a stream: [ScanSafetensors]), or nil.
func CheckFiniteBlock(name string, off int, vals []float32) error {
	if i := firstNonFinite(vals); i >= 0 {
		return fmt.Errorf("%w: tensor %q holds %v at index %d", ErrNotFinite, name, vals[i], off+i)
	}
	return nil
}

// FiniteNorm reports whether every value of d is finite and, if so,
// returns a bound on their magnitudes: their Euclidean norm ‖d‖₂ ≥ max|dᵢ|
// (to float32 rounding), or the largest magnitude itself where the squares
// overflow float32. It is one SIMD pass, the validation an aggregator needs
// before folding d in: any NaN or ±Inf makes the sum of squares NaN or
// +Inf, and only then is d scanned value by value.
func FiniteNorm(d []float32) (norm float32, finite bool) {
	if len(d) == 0 {
		return 0, true
	}
	v := blas32.Vector{N: len(d), Inc: 1, Data: d}
	if s := blas32.Dot(v, v); math.Float32bits(s)&expMask != expMask {
		return float32(math.Sqrt(float64(s))), true
	}
	m := absMaxBits(d)
	return math.Float32frombits(m), m < expMask
}

// expMask is a float32's exponent field: all ones is NaN or ±Inf.
const expMask = 0x7f800000

// absMaxBits returns the largest |v| of d as bits; for non-negative floats
// the bit patterns order as the values do, and NaN and ±Inf order above
// every finite value.
func absMaxBits(d []float32) uint32 {
	var m0, m1, m2, m3 uint32
	i := 0
	for ; i+4 <= len(d); i += 4 {
		m0 = max(m0, math.Float32bits(d[i])&0x7fffffff)
		m1 = max(m1, math.Float32bits(d[i+1])&0x7fffffff)
		m2 = max(m2, math.Float32bits(d[i+2])&0x7fffffff)
		m3 = max(m3, math.Float32bits(d[i+3])&0x7fffffff)
	}
	for ; i < len(d); i++ {
		m0 = max(m0, math.Float32bits(d[i])&0x7fffffff)
	}
	return max(m0, m1, m2, m3)
}

// parallelMin is the length below which splitting a scan across cores
// costs more than it saves.
const parallelMin = 1 << 18

// firstNonFinite returns the index of the first NaN or ±Inf in d, or −1:
// a SIMD pass, on every core for a large d.
func firstNonFinite(d []float32) int {
	p := runtime.GOMAXPROCS(0)
	if len(d) < parallelMin || p == 1 {
		return scanNonFinite(d)
	}
	step := (len(d) + p - 1) / p
	found := make([]int, p)
	var wg sync.WaitGroup
	for k := range p {
		lo := min(k*step, len(d))
		hi := min(lo+step, len(d))
		wg.Go(func() {
			found[k] = -1
			if i := scanNonFinite(d[lo:hi]); i >= 0 {
				found[k] = lo + i
			}
		})
	}
	wg.Wait()
	for _, i := range found {
		if i >= 0 {
			return i
		}
	}
	return -1
}

// scanNonFinite returns the index of the first NaN or ±Inf in d, or −1:
// a SIMD pass over blocks, then a precise one in a block that failed.
func scanNonFinite(d []float32) int {
	const block = 4096
	for lo := 0; lo < len(d); lo += block {
		b := d[lo:min(lo+block, len(d))]
		if _, ok := FiniteNorm(b); ok {
			continue
		}
		for i, v := range b {
			if math.Float32bits(v)&expMask == expMask {
				return lo + i
			}
		}
	}
	return -1
}

// Axpy sets w += alpha·x, tensor by tensor (SIMD where the CPU has it). x
// must be [Compatible] with w; it may be w itself.
func (w *Weights) Axpy(alpha float32, x *Weights) error {
	if err := w.Compatible(x); err != nil {
		return fmt.Errorf("axpy: %w", err)
	}
	for i := range w.Tensors {
		AxpyFlat(alpha, x.Tensors[i].Data, w.Tensors[i].Data)
	}
	return nil
}

// AxpyFlat sets y[i] += alpha·x[i] for every i < len(x); y must be at least
// as long as x.
func AxpyFlat(alpha float32, x, y []float32) {
	if len(x) == 0 {
		return
	}
	blas32.Axpy(alpha, blas32.Vector{N: len(x), Inc: 1, Data: x}, blas32.Vector{N: len(x), Inc: 1, Data: y[:len(x)]})
}

// Sub returns a − b as new Weights with a's names and shapes.
func Sub(a, b *Weights) (*Weights, error) {
	if err := a.Compatible(b); err != nil {
		return nil, fmt.Errorf("sub: %w", err)
	}
	out := a.Clone()
	for i := range out.Tensors {
		AxpyFlat(-1, b.Tensors[i].Data, out.Tensors[i].Data)
	}
	return out, nil
}

// Scale sets w *= alpha.
func (w *Weights) Scale(alpha float32) {
	for i := range w.Tensors {
		d := w.Tensors[i].Data
		if len(d) > 0 {
			blas32.Scal(alpha, blas32.Vector{N: len(d), Inc: 1, Data: d})
		}
	}
}

// Dot returns the inner product of w and other, accumulated in float64.
func (w *Weights) Dot(other *Weights) (float64, error) {
	if err := w.Compatible(other); err != nil {
		return 0, fmt.Errorf("dot: %w", err)
	}
	var s float64
	for i := range w.Tensors {
		s += DotFlat(w.Tensors[i].Data, other.Tensors[i].Data)
	}
	return s, nil
}

// DotFlat returns Σ x[i]·y[i] over i < len(x), accumulated in float64; y
// must be at least as long as x.
func DotFlat(x, y []float32) float64 {
	y = y[:len(x)]
	var s0, s1, s2, s3 float64
	i := 0
	for ; i+4 <= len(x); i += 4 {
		s0 += float64(x[i]) * float64(y[i])
		s1 += float64(x[i+1]) * float64(y[i+1])
		s2 += float64(x[i+2]) * float64(y[i+2])
		s3 += float64(x[i+3]) * float64(y[i+3])
	}
	for ; i < len(x); i++ {
		s0 += float64(x[i]) * float64(y[i])
	}
	return (s0 + s1) + (s2 + s3)
}

// L2Norm returns the Euclidean norm of all parameters, accumulated in
// float64.
func (w *Weights) L2Norm() float64 {
	var s float64
	for _, t := range w.Tensors {
		s += DotFlat(t.Data, t.Data)
	}
	return math.Sqrt(s)
}

// DeltaNorm returns ‖w − base‖₂, accumulated in float64: how far an update
// moved from the model it was trained from. It is NaN or +Inf when w holds
// a non-finite value. w and base must be [Weights.Compatible].
func DeltaNorm(w, base *Weights) float64 {
	var s float64
	for i, t := range w.Tensors {
		b := base.Tensors[i].Data
		var s0, s1 float64
		j := 0
		for ; j+1 < len(t.Data); j += 2 {
			d0 := float64(t.Data[j]) - float64(b[j])
			d1 := float64(t.Data[j+1]) - float64(b[j+1])
			s0 += d0 * d0
			s1 += d1 * d1
		}
		for ; j < len(t.Data); j++ {
			d := float64(t.Data[j]) - float64(b[j])
			s0 += d * d
		}
		s += s0 + s1
	}
	return math.Sqrt(s)
}

// ShrinkDelta moves w toward base in place, to base + s·(w − base), each
// value computed in float64 and rounded once: with 0 ≤ s ≤ 1 it clips an
// update's delta to s times its norm. w and base must be
// [Weights.Compatible].
func ShrinkDelta(w, base *Weights, s float64) {
	for i, t := range w.Tensors {
		b := base.Tensors[i].Data
		for j, v := range t.Data {
			t.Data[j] = float32(float64(b[j]) + s*(float64(v)-float64(b[j])))
		}
	}
}
