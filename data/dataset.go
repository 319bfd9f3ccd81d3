package data

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
)

// Dataset is an in-memory labelled dataset: N samples of Features float32
// values each (row-major in X, scaled to [0,1] for images) and their labels
// in Y (0 ≤ Y[i] < Classes). Shape is the shape of one sample, e.g.
// [1 28 28] for Fashion-MNIST; its product equals Features.
type Dataset struct {
	Name     string
	X        []float32
	Y        []uint8
	N        int
	Features int
	Shape    []int
	Classes  int
}

// Validate reports whether d's fields agree: len(X) = N·Features,
// len(Y) = N, Shape's product = Features, 1 ≤ Classes ≤ 256 and every
// label below Classes. The problems are wrapped in [ErrInvalid].
func (d *Dataset) Validate() error {
	if d == nil {
		return fmt.Errorf("%w: nil dataset", ErrInvalid)
	}
	switch {
	case d.N < 0 || d.Features < 1:
		return fmt.Errorf("%w: dataset %q has %d samples of %d features", ErrInvalid, d.Name, d.N, d.Features)
	case len(d.X) != d.N*d.Features:
		return fmt.Errorf("%w: dataset %q: len(X) = %d, want N·Features = %d·%d", ErrInvalid, d.Name, len(d.X), d.N, d.Features)
	case len(d.Y) != d.N:
		return fmt.Errorf("%w: dataset %q: len(Y) = %d, want N = %d", ErrInvalid, d.Name, len(d.Y), d.N)
	case d.Classes < 1 || d.Classes > 256:
		return fmt.Errorf("%w: dataset %q has %d classes, want 1 to 256", ErrInvalid, d.Name, d.Classes)
	}
	if len(d.Shape) > 0 {
		p := 1
		for _, s := range d.Shape {
			p *= s
		}
		if p != d.Features {
			return fmt.Errorf("%w: dataset %q: shape %v holds %d values, want Features = %d", ErrInvalid, d.Name, d.Shape, p, d.Features)
		}
	}
	for i, y := range d.Y {
		if int(y) >= d.Classes {
			return fmt.Errorf("%w: dataset %q: label %d of sample %d is not below Classes = %d", ErrInvalid, d.Name, y, i, d.Classes)
		}
	}
	return nil
}

// Subset returns copies of the samples at idx, in that order, as a new
// Dataset. Every index must be in [0, N): like a slice expression, Subset
// panics otherwise.
func (d *Dataset) Subset(idx []int) *Dataset {
	out := &Dataset{Name: d.Name, N: len(idx), Features: d.Features, Shape: slices.Clone(d.Shape), Classes: d.Classes,
		X: make([]float32, len(idx)*d.Features), Y: make([]uint8, len(idx))}
	f := d.Features
	for i, j := range idx {
		copy(out.X[i*f:(i+1)*f], d.X[j*f:(j+1)*f])
		out.Y[i] = d.Y[j]
	}
	return out
}

// LabelHistogram returns the number of samples of each class, indexed by
// label; labels at or above Classes are not counted.
func (d *Dataset) LabelHistogram() []int {
	h := make([]int, d.Classes)
	for _, y := range d.Y {
		if int(y) < len(h) {
			h[y]++
		}
	}
	return h
}

// Digest returns the hex SHA-256 of the samples (each float32's IEEE 754
// bits, little-endian, in order) followed by the labels: which exact data
// trained a model, for the tracking run's lineage.
func (d *Dataset) Digest() string {
	h := sha256.New()
	buf := make([]byte, 0, 64<<10)
	for _, v := range d.X {
		buf = binary.LittleEndian.AppendUint32(buf, math.Float32bits(v))
		if len(buf) == cap(buf) {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	h.Write(buf)
	h.Write(d.Y)
	return hex.EncodeToString(h.Sum(nil))
}

// Split holds out a stratified, seeded fraction of d: from each class,
// round(frac·n) randomly chosen samples go to test, the rest to train;
// both keep d's order. frac is clamped to [0, 1].
func (d *Dataset) Split(frac float64, seed int64) (train, test *Dataset) {
	frac = min(max(frac, 0), 1)
	if math.IsNaN(frac) {
		frac = 0
	}
	r := newRand(seed, streamSplit)
	var tr, te []int
	for _, idx := range byClass(d) {
		r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		k := int(math.Round(frac * float64(len(idx))))
		te = append(te, idx[:k]...)
		tr = append(tr, idx[k:]...)
	}
	slices.Sort(tr)
	slices.Sort(te)
	return d.Subset(tr), d.Subset(te)
}

// byClass returns the indices of each label's samples, in order; it has
// room for every label present, even one at or above Classes.
func byClass(d *Dataset) [][]int {
	n := d.Classes
	for _, y := range d.Y {
		n = max(n, int(y)+1)
	}
	out := make([][]int, n)
	for i, y := range d.Y {
		out[y] = append(out[y], i)
	}
	return out
}

// Concat returns the parts' samples together, in order, named and shaped
// as the first non-nil part; nil parts are skipped, and Concat of no parts
// is nil. The parts must have the same Features.
func Concat(parts ...*Dataset) *Dataset {
	var out *Dataset
	for _, p := range parts {
		if p == nil {
			continue
		}
		if out == nil {
			out = &Dataset{Name: p.Name, Features: p.Features, Shape: slices.Clone(p.Shape), Classes: p.Classes}
		}
		out.X = append(out.X, p.X...)
		out.Y = append(out.Y, p.Y...)
		out.N += p.N
		out.Classes = max(out.Classes, p.Classes)
	}
	return out
}
