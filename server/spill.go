package server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"sync"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/model"
)

// An update trained from a global model is not kept in memory while its
// round waits for it: PushUpdate checks it as its chunks arrive (header
// against the global model, finite values, the L2 norm of its delta,
// streaming) and writes its values to a file in Config.SpillDir; the round
// folds the file chunk by chunk into its sum (aggregators.StreamAdder), or
// decodes it at that moment for a strategy that cannot stream, and
// removes it once folded or refused (or, held back by the weight cap
// as its file, when the round ends). The coordinator's memory is then the
// sum, and the global model unless it is read in place (globalfile.go),
// whatever the number of sites.

// errSpill is returned when an update cannot be written to, or read back
// from, its file: the coordinator's fault, not the site's.
var errSpill = errors.New("spilling the update")

// spillPattern names the files of spilled updates.
const spillPattern = "update-*.f32"

// spillBuffer is the size of the buffers a spilled update is written and
// read through.
const spillBuffer = 1 << 20

// defaultSpillAbove is Config.SpillAbove's default: an update of at most
// 64 KiB is decoded in memory, as a file's creation, writing and reading
// back cost more than it weighs (1,000 sites of a 31 KB model: 0.7 ms an
// update, in the round's one goroutine), and 10,000 parked updates of this
// size hold 640 MiB at most.
const defaultSpillAbove = 64 << 10

// spillBufferFor is the buffer for a spill file of global's updates:
// spillBuffer, or the whole file's values where they are fewer (a 1,000-
// site round of a small model allocated 11 MiB of buffers an update).
func spillBufferFor(global globalSource) int {
	n := 0
	for _, t := range global.Shell().Tensors {
		n += 4 * t.Len()
		if n >= spillBuffer {
			return spillBuffer
		}
	}
	return max(n, 16)
}

// chunkOf is [model.ChunkFor] of global: its largest tensor's length, at
// most [model.ScanChunk], at least 1.
func chunkOf(global globalSource) int {
	n := 1
	for _, t := range global.Shell().Tensors {
		n = max(n, min(t.Len(), model.ScanChunk))
	}
	return n
}

// spilledUpdate is an update kept on disk: the values of every tensor of
// the global model it was trained from, in the global's order, as
// little-endian float32 — or, where it does not match the global model or
// holds a non-finite value, no file and the reason.
type spilledUpdate struct {
	path   string // "" where no file is kept
	global globalSource
	// incompatible is why the update does not match the global model;
	// nonFinite names its first NaN or ±Inf. Either leaves no file.
	incompatible error
	nonFinite    error
	// deltaNorm is ‖update − global‖₂ as [model.DeltaNorm] computes it.
	deltaNorm float64
	// shrink, where not 0, is the factor screening scaled the delta by
	// (clip mode clip): the values are read as global + shrink·(u − global).
	shrink float64

	once sync.Once
}

// spill receives an update as [model.ScanSafetensors] reads it from r into
// a new file of dir, checking it against global on the way. On error no
// file is left.
func spill(dir string, r io.Reader, limit int64, global globalSource) (_ *spilledUpdate, err error) {
	f, err := os.CreateTemp(dir, spillPattern)
	if err != nil {
		return nil, fmt.Errorf("%w: %w; check that spill_dir %s exists and is writable", errSpill, err, dir)
	}
	s := &spilledUpdate{path: f.Name(), global: global}
	defer func() {
		if err != nil || s.path == "" {
			f.Close()
			os.Remove(f.Name())
		}
	}()
	bw := bufio.NewWriterSize(f, spillBufferFor(global))
	var writeErr, readErr error
	var sum, s0, s1 float64 // as model.DeltaNorm: two sums per tensor
	var gbuf []float32      // a block of a global model read in place
	keep := true
	_, err = model.ScanSafetensors(r, limit, func(shell *model.Weights) error {
		if err := compatibleShapes(global.Shell(), shell); err != nil {
			s.incompatible, keep = err, false
		}
		return nil
	}, func(t, off int, vals []float32) error {
		if !keep {
			return nil // read on: the checksum covers every byte
		}
		if err := model.CheckFiniteBlock(global.Shell().Tensors[t].Name, off, vals); err != nil {
			s.nonFinite = err
			keep = false
			return nil
		}
		if len(gbuf) < len(vals) {
			gbuf = make([]float32, chunkOf(global))
		}
		g, err := global.block(t, off, len(vals), gbuf)
		if err != nil {
			readErr, keep = err, false
			return nil
		}
		j := 0
		for ; j+1 < len(vals); j += 2 { // off is even: pairs fall as in DeltaNorm
			d0 := float64(vals[j]) - float64(g[j])
			d1 := float64(vals[j+1]) - float64(g[j+1])
			s0 += d0 * d0
			s1 += d1 * d1
		}
		for ; j < len(vals); j++ {
			d := float64(vals[j]) - float64(g[j])
			s0 += d * d
		}
		if off+len(vals) == tensorLen(global, t) {
			sum += s0 + s1
			s0, s1 = 0, 0
		}
		if writeErr == nil {
			writeErr = model.WriteFloats(bw, vals)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if readErr != nil {
		return nil, fmt.Errorf("%w: checking it against the global model: %w", errSpill, readErr)
	}
	if !keep {
		s.path = ""
		s.deltaNorm = math.NaN()
		return s, nil
	}
	if writeErr == nil {
		writeErr = bw.Flush()
	}
	if err := errors.Join(writeErr, f.Close()); err != nil {
		return nil, fmt.Errorf("%w to %s: %w; free space there or set spill_dir elsewhere", errSpill, f.Name(), err)
	}
	s.deltaNorm = math.Sqrt(sum)
	return s, nil
}

// compatibleShapes is [model.Weights.Compatible] for a header's shell
// (tensors without data): names, order and shapes.
func compatibleShapes(global, shell *model.Weights) error {
	full := &model.Weights{Tensors: slices.Clone(shell.Tensors)}
	for i := range full.Tensors {
		if i < len(global.Tensors) {
			// Where the shapes match, so do the counts: lend the global's.
			full.Tensors[i].Data = global.Tensors[i].Data
		}
	}
	return global.Compatible(full)
}

// open returns a reader of the update's values, shrunk toward the global
// model where screening clipped it.
func (s *spilledUpdate) open() (io.ReadCloser, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("%w: reading it back: %w", errSpill, err)
	}
	br := bufio.NewReaderSize(f, spillBufferFor(s.global))
	if s.shrink == 0 {
		return readCloser{br, f}, nil
	}
	return readCloser{&shrinkReader{s: s, r: br}, f}, nil
}

type readCloser struct {
	io.Reader
	io.Closer
}

// shrinkReader reads a spilled update's values as global + shrink·(u −
// global), each computed as [model.ShrinkDelta] does.
type shrinkReader struct {
	s      *spilledUpdate
	r      io.Reader
	t, off int // the next value's tensor and index
	vals   []float32
	gbuf   []float32 // the global model's values of the chunk, read in place
	buf    []byte    // the shrunk chunk, encoded
	out    []byte    // what of buf is left to read
}

func (z *shrinkReader) Read(p []byte) (int, error) {
	if len(z.out) == 0 {
		if z.t >= len(z.s.global.Shell().Tensors) {
			return 0, io.EOF
		}
		n := tensorLen(z.s.global, z.t)
		k := min(n-z.off, model.ScanChunk)
		if z.vals == nil {
			z.vals = make([]float32, chunkOf(z.s.global))
			z.gbuf = make([]float32, len(z.vals))
		}
		v := z.vals[:k]
		if _, err := model.ReadFloats(z.r, v); err != nil {
			return 0, err
		}
		if err := z.s.shrinkBlock(z.t, z.off, v, z.gbuf); err != nil {
			return 0, err
		}
		b := bufferWriter{b: z.buf[:0]}
		_ = model.WriteFloats(&b, v)
		z.buf, z.out = b.b, b.b
		if z.off += k; z.off == n {
			z.t, z.off = z.t+1, 0
		}
	}
	n := copy(p, z.out)
	z.out = z.out[n:]
	return n, nil
}

// bufferWriter appends what is written to b.
type bufferWriter struct{ b []byte }

func (w *bufferWriter) Write(p []byte) (int, error) {
	w.b = append(w.b, p...)
	return len(p), nil
}

// openBlocks opens the update's file for reading a block at a time
// (aggregators.BlockReader), shrunk toward the global model where
// screening clipped it. Each reader is used by one goroutine.
func (s *spilledUpdate) openBlocks() (aggregators.BlockReader, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("%w: reading it back: %w", errSpill, err)
	}
	start := make([]int64, len(s.global.Shell().Tensors))
	var at int64
	for t := range start {
		start[t], at = at, at+4*int64(tensorLen(s.global, t))
	}
	return &blockReader{s: s, f: f, start: start}, nil
}

// blockReader reads a spilled update's values by range.
type blockReader struct {
	s     *spilledUpdate
	f     *os.File
	start []int64 // each tensor's byte offset in the file
	gbuf  []float32
}

func (b *blockReader) ReadBlock(t, off int, dst []float32) error {
	if t < 0 || t >= len(b.start) || off < 0 || off+len(dst) > tensorLen(b.s.global, t) {
		return fmt.Errorf("reading values [%d, %d) of tensor %d of a spilled update: out of range", off, off+len(dst), t)
	}
	at := b.start[t] + 4*int64(off)
	if _, err := model.ReadFloats(io.NewSectionReader(b.f, at, 4*int64(len(dst))), dst); err != nil {
		return fmt.Errorf("%w: reading it back: %w", errSpill, err)
	}
	if len(b.gbuf) < len(dst) {
		b.gbuf = make([]float32, len(dst))
	}
	return b.s.shrinkBlock(t, off, dst, b.gbuf)
}

// shrinkBlock shrinks vals, the update's values of tensor t from off,
// toward the global model as [model.ShrinkDelta] does, where screening
// clipped the update; gbuf holds the global model's values where they
// are read in place.
func (s *spilledUpdate) shrinkBlock(t, off int, vals, gbuf []float32) error {
	if s.shrink == 0 {
		return nil
	}
	g, err := s.global.block(t, off, len(vals), gbuf)
	if err != nil {
		return err
	}
	one := &model.Weights{Tensors: []model.Tensor{{Data: vals}}}
	base := &model.Weights{Tensors: []model.Tensor{{Data: g}}}
	model.ShrinkDelta(one, base, s.shrink)
	return nil
}

func (b *blockReader) Close() error { return b.f.Close() }

// decode reads the whole update into memory: for a strategy that cannot
// fold a stream.
func (s *spilledUpdate) decode() (*model.Weights, error) {
	rc, err := s.open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	shell := s.global.Shell()
	w := &model.Weights{Tensors: make([]model.Tensor, len(shell.Tensors))}
	for i, t := range shell.Tensors {
		w.Tensors[i] = model.Tensor{Name: t.Name, Shape: slices.Clone(t.Shape), Data: make([]float32, t.Len())}
	}
	for _, t := range w.Tensors {
		if _, err := model.ReadFloats(rc, t.Data); err != nil {
			return nil, fmt.Errorf("reading the spilled update %s: %w", s.path, err)
		}
	}
	return w, nil
}

// remove deletes the update's file; it may be called more than once.
func (s *spilledUpdate) remove() {
	if s == nil {
		return
	}
	s.once.Do(func() {
		if s.path != "" {
			os.Remove(s.path)
		}
	})
}
