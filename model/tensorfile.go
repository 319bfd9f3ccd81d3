package model

import (
	"errors"
	"fmt"
	"io"
	"math"
)

// TensorFile reads ranges of the F32 tensors of a safetensors file in
// place: a model kept on disk, of which a reader holds no more than it
// asks for. It is safe for concurrent use when its io.ReaderAt is (an
// *os.File is).
type TensorFile struct {
	r    io.ReaderAt
	size int64
	base int64 // where the data begins: 8 + the header's length
	ents []entry
}

// OpenTensorFile reads the header of the safetensors file of size bytes
// that r reads. Every tensor must be F32: a model kept on disk is one
// Cohort wrote. Errors wrap [ErrMalformed] or [ErrTruncated].
func OpenTensorFile(r io.ReaderAt, size int64) (*TensorFile, error) {
	ents, _, hl, _, err := readHeader(io.NewSectionReader(r, 0, size), size, math.MaxInt64)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		if e.dtype != "F32" {
			return nil, fmt.Errorf("%w: tensor %q is %s; a model read in place must be F32 (re-encode it with Cohort)", ErrMalformed, e.name, e.dtype)
		}
		if e.n > math.MaxInt/4 {
			return nil, fmt.Errorf("%w: tensor %q has %d values, more than this platform indexes", ErrMalformed, e.name, e.n)
		}
	}
	return &TensorFile{r: r, size: size, base: 8 + int64(hl), ents: ents}, nil
}

// Size returns the file's size in bytes.
func (f *TensorFile) Size() int64 { return f.size }

// Shell returns the file's tensors, in data order, with their names and
// shapes and no values (Data nil): the layout of the model, for checks
// of shape and counts ([Tensor.Len]), without its memory.
func (f *TensorFile) Shell() *Weights {
	w := &Weights{Tensors: make([]Tensor, len(f.ents))}
	for i, e := range f.ents {
		w.Tensors[i] = Tensor{Name: e.name, Shape: append([]int(nil), e.shape...)}
	}
	return w
}

// ReadFloats fills dst with the values of tensor t from index off on.
// A range past the tensor's end is an error; so is a file shorter than
// its header says (wrapping [ErrTruncated]).
func (f *TensorFile) ReadFloats(t, off int, dst []float32) error {
	if t < 0 || t >= len(f.ents) {
		return fmt.Errorf("reading tensor %d of a model of %d tensors: no such tensor", t, len(f.ents))
	}
	e := f.ents[t]
	if off < 0 || uint64(off)+uint64(len(dst)) > e.n {
		return fmt.Errorf("reading values [%d, %d) of tensor %q, which has %d", off, off+len(dst), e.name, e.n)
	}
	at := f.base + int64(e.begin) + 4*int64(off)
	_, err := ReadFloats(io.NewSectionReader(f.r, at, 4*int64(len(dst))), dst)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: tensor %q ends past the file's %d bytes", ErrTruncated, e.name, f.size)
	}
	if err != nil {
		return fmt.Errorf("reading tensor %q: %w", e.name, err)
	}
	return nil
}
