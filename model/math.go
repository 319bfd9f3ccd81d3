package model

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
)

// Errors returned by this package.
var (
	// ErrIncompatible is returned when two Weights differ in tensor names,
	// order or shapes.
	ErrIncompatible = errors.New("incompatible weights")
	// ErrNotFinite is returned when a tensor holds NaN or ±Inf.
	ErrNotFinite = errors.New("non-finite value")
	// ErrMalformed is returned when encoded weights cannot be decoded.
	ErrMalformed = errors.New("malformed safetensors")
	// ErrChecksum is returned when reassembled bytes do not match their SHA-256.
	ErrChecksum = errors.New("checksum mismatch")
	// ErrTruncated is returned when fewer bytes arrived than were announced.
	ErrTruncated = errors.New("truncated")
	// ErrOverflow is returned when more bytes arrive than were announced.
	ErrOverflow = errors.New("more data than announced")
)

// NumParams returns the number of scalar parameters.
func (w *Weights) NumParams() int {
	n := 0
	for _, t := range w.Tensors {
		n += len(t.Data)
	}
	return n
}

// Bytes returns the size of the float32 payload in bytes.
func (w *Weights) Bytes() int64 { return int64(w.NumParams()) * 4 }

// Clone returns a deep copy.
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

// Lookup returns the tensor called name.
func (w *Weights) Lookup(name string) (*Tensor, bool) {
	for i := range w.Tensors {
		if w.Tensors[i].Name == name {
			return &w.Tensors[i], true
		}
	}
	return nil, false
}

// Compatible reports whether other has the same tensor names, in the same
// order, with the same shapes as w; the error names the first difference.
func (w *Weights) Compatible(other *Weights) error {
	if other == nil {
		return fmt.Errorf("%w: no weights", ErrIncompatible)
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

// CheckFinite returns an error naming the first NaN or ±Inf. Large
// tensors are scanned on every core.
func (w *Weights) CheckFinite() error {
	for _, t := range w.Tensors {
		if i := firstNonFinite(t.Data); i >= 0 {
			return fmt.Errorf("%w: tensor %q holds %v at index %d", ErrNotFinite, t.Name, t.Data[i], i)
		}
	}
	return nil
}

// firstNonFinite returns the index of the first NaN or ±Inf in d, or −1.
func firstNonFinite(d []float32) int {
	const chunk = 1 << 18
	if len(d) <= chunk || runtime.GOMAXPROCS(0) == 1 {
		return scanNonFinite(d, 0)
	}
	n := (len(d) + chunk - 1) / chunk
	found := make([]int, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, runtime.GOMAXPROCS(0))
	for c := 0; c < n; c++ {
		wg.Add(1)
		sem <- struct{}{}
		go func(c int) {
			defer func() { <-sem; wg.Done() }()
			lo := c * chunk
			found[c] = scanNonFinite(d[lo:min(lo+chunk, len(d))], lo)
		}(c)
	}
	wg.Wait()
	for _, i := range found {
		if i >= 0 {
			return i
		}
	}
	return -1
}

// scanNonFinite scans d, whose first element is at index base; an
// all-ones exponent is NaN or ±Inf.
func scanNonFinite(d []float32, base int) int {
	const exp = 0x7f800000
	i := 0
	for ; i+4 <= len(d); i += 4 {
		a, b := math.Float32bits(d[i])&exp, math.Float32bits(d[i+1])&exp
		c, e := math.Float32bits(d[i+2])&exp, math.Float32bits(d[i+3])&exp
		if a == exp || b == exp || c == exp || e == exp {
			break
		}
	}
	for ; i < len(d); i++ {
		if math.Float32bits(d[i])&exp == exp {
			return base + i
		}
	}
	return -1
}

// Axpy sets w += alpha·x.
func (w *Weights) Axpy(alpha float32, x *Weights) error {
	if err := w.Compatible(x); err != nil {
		return err
	}
	for i := range w.Tensors {
		d, s := w.Tensors[i].Data, x.Tensors[i].Data
		for j := range d {
			d[j] += alpha * s[j]
		}
	}
	return nil
}

// Sub returns a − b as new Weights.
func Sub(a, b *Weights) (*Weights, error) {
	out := a.Clone()
	if err := out.Axpy(-1, b); err != nil {
		return nil, err
	}
	return out, nil
}

// Scale sets w *= alpha.
func (w *Weights) Scale(alpha float32) {
	for i := range w.Tensors {
		d := w.Tensors[i].Data
		for j := range d {
			d[j] *= alpha
		}
	}
}

// Dot returns the inner product of w and other, accumulated in float64.
func (w *Weights) Dot(other *Weights) (float64, error) {
	if err := w.Compatible(other); err != nil {
		return 0, err
	}
	var s float64
	for i := range w.Tensors {
		a, b := w.Tensors[i].Data, other.Tensors[i].Data
		for j := range a {
			s += float64(a[j]) * float64(b[j])
		}
	}
	return s, nil
}

// L2Norm returns the Euclidean norm of all parameters.
func (w *Weights) L2Norm() float64 {
	var s float64
	for _, t := range w.Tensors {
		for _, v := range t.Data {
			s += float64(v) * float64(v)
		}
	}
	return math.Sqrt(s)
}
