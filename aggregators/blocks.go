package aggregators

import (
	"fmt"
	"iter"

	"github.com/cohortfl/cohort/model"
)

// BlockReader reads an update kept out of memory a block at a time.
type BlockReader interface {
	// ReadBlock fills dst with tensor t's values from index off on (the
	// global model's tensors, in its order).
	ReadBlock(t, off int, dst []float32) error
	Close() error
}

// BlockHolder is implemented by rounds that keep every update until
// Result — the robust rules (median, trimmed mean, Krum): HoldBlocks
// keeps an update as what opens its file, read a block of coordinates at
// a time at Result, instead of a copy in memory, so that the round's
// memory does not grow with the number of sites (nor count against its
// memory budget).
type BlockHolder interface {
	// HoldBlocks adds the update open reads — the values of every tensor
	// of the global model — with numSamples. It reads it once now to
	// check it (finite), as Add checks, and refuses it the same way
	// ([ErrBadUpdate]); open must go on returning readers of the same
	// values until the round's Result returns. Readers are opened once
	// per core at Result, and each is used by one goroutine.
	HoldBlocks(open func() (BlockReader, error), numSamples int64) error
}

var _ BlockHolder = (*heldRound)(nil)

// heldBlock is the number of values of each held update Result reads at
// a time from a file: 32 KiB an update.
const heldBlock = 1 << 13

// HoldBlocks implements [BlockHolder].
func (r *heldRound) HoldBlocks(open func() (BlockReader, error), n int64) error {
	if n < 1 {
		return fmt.Errorf("%w: %d samples; an update needs at least one", ErrBadUpdate, n)
	}
	rd, err := open()
	if err != nil {
		return fmt.Errorf("%s: opening the update: %w", r.name, err)
	}
	defer rd.Close()
	buf := make([]float32, heldBlock)
	for t, tn := range r.global.Tensors {
		for lo := 0; lo < len(tn.Data); lo += heldBlock {
			b := buf[:min(heldBlock, len(tn.Data)-lo)]
			if err := rd.ReadBlock(t, lo, b); err != nil {
				return fmt.Errorf("%w: reading tensor %q from index %d: %w", ErrBadUpdate, tn.Name, lo, err)
			}
			if _, finite := model.FiniteNorm(b); !finite {
				return fmt.Errorf("%w: %w", ErrBadUpdate, nonFinite(tn.Name, b, lo))
			}
		}
	}
	r.held = append(r.held, heldSrc{open: open})
	r.samples += float64(n)
	return nil
}

// views gives one goroutine the held updates' values over a range: in
// place for those in memory, read into its buffers for those in files.
type views struct {
	src   []heldSrc
	rd    []BlockReader // nil where in memory
	buf   [][]float32
	files bool
}

// openViews opens a reader of each held update kept in a file.
func openViews(src []heldSrc) (*views, error) {
	v := &views{src: src, rd: make([]BlockReader, len(src)), buf: make([][]float32, len(src))}
	for k, s := range src {
		if s.w != nil {
			continue
		}
		rd, err := s.open()
		if err != nil {
			v.close()
			return nil, err
		}
		v.rd[k], v.buf[k], v.files = rd, make([]float32, heldBlock), true
	}
	return v, nil
}

func (v *views) close() {
	for _, rd := range v.rd {
		if rd != nil {
			_ = rd.Close()
		}
	}
}

// blocks yields share in the ranges read at a time: its own pieces where
// every update is in memory (so that sums run as they always did),
// blocks of heldBlock values where some are in files.
func (v *views) blocks(share []piece) iter.Seq[piece] {
	return func(yield func(piece) bool) {
		for _, p := range share {
			if !v.files {
				if !yield(p) {
					return
				}
				continue
			}
			for b := range p.cut(heldBlock) {
				if !yield(b) {
					return
				}
			}
		}
	}
}

// at sets out[k] to update k's values over p.
func (v *views) at(p piece, out [][]float32) error {
	for k, s := range v.src {
		if s.w != nil {
			out[k] = s.w.Tensors[p.t].Data[p.lo:p.hi:p.hi]
			continue
		}
		b := v.buf[k][:p.hi-p.lo]
		if err := v.rd[k].ReadBlock(p.t, p.lo, b); err != nil {
			return fmt.Errorf("update %d, tensor %d from index %d: %w", k, p.t, p.lo, err)
		}
		out[k] = b
	}
	return nil
}
