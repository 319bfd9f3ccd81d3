package model

import (
	"errors"
	"fmt"
	"io"
	"slices"
)

// TransformSafetensors reads one safetensors file from r as
// [ScanSafetensors] does, with the same checks and errors, and writes to
// w, as it reads, the file [EncodeSafetensors] writes (with no metadata)
// for the weights r holds once f has changed their values: f gets each
// tensor's values a run at a time — tensor t's from index off, at most
// [ScanChunk], in data order — and changes them in place. header, unless
// nil, is first called with the tensors' names and shapes, as by
// ScanSafetensors. An error from header or f ends it and is returned as
// is; one from w is wrapped. It returns the bytes written. Memory stays at
// one chunk whatever the model's size: a site that sends back a function
// of the model it receives holds neither.
func TransformSafetensors(w io.Writer, r io.Reader, limit int64, header func(*Weights) error, f func(t, off int, vals []float32) error) (int64, error) {
	cw := &countingWriter{w: w}
	_, err := ScanSafetensors(r, limit, func(shell *Weights) error {
		if header != nil {
			if err := header(shell); err != nil {
				return err
			}
		}
		h, err := headerOf(shell.Tensors, nil)
		if err != nil {
			return err
		}
		if _, err := cw.Write(h); err != nil {
			return fmt.Errorf("encoding safetensors: writing the header: %w", err)
		}
		return nil
	}, func(t, off int, vals []float32) error {
		if err := f(t, off, vals); err != nil {
			return err
		}
		if err := WriteFloats(cw, vals); err != nil {
			return fmt.Errorf("encoding safetensors: writing tensor %d's values from %d: %w", t, off, err)
		}
		return nil
	})
	return cw.n, err
}

// ReencodeSafetensors writes to w what [EncodeSafetensors] writes (with no
// metadata) for the weights of the safetensors file r of size bytes, their
// tensors in want's order — want gives names and shapes; its Data is not
// read — a chunk at a time: the file may hold them in any order (writers
// often sort them by name) and in any dtype [DecodeSafetensors] reads. A
// file that does not hold exactly want's tensors with want's shapes is an
// error wrapping [ErrIncompatible] that names the first difference; a
// malformed one fails as DecodeSafetensors fails. check, unless nil, sees
// each run of values before it is written (tensor t of want's from index
// off, at most [ScanChunk]); its error ends the encoding and is returned as
// is. It returns the bytes written. Memory stays at one chunk whatever the
// model's size: what a site needs to send a trainer's output file on.
func ReencodeSafetensors(w io.Writer, r io.ReaderAt, size int64, want *Weights, check func(t, off int, vals []float32) error) (int64, error) {
	entries, _, hl, _, err := readHeader(io.NewSectionReader(r, 0, size), size, size)
	if err != nil {
		return 0, err
	}
	byName := make(map[string]entry, len(entries))
	for _, e := range entries {
		byName[e.name] = e
	}
	order := make([]entry, len(want.Tensors))
	chunk := uint64(0)
	for i, t := range want.Tensors {
		e, ok := byName[t.Name]
		switch {
		case !ok:
			return 0, fmt.Errorf("%w: the weights lack tensor %q (shape %v)", ErrIncompatible, t.Name, t.Shape)
		case !slices.Equal(e.shape, t.Shape):
			return 0, fmt.Errorf("%w: tensor %q has shape %v, want %v", ErrIncompatible, t.Name, e.shape, t.Shape)
		}
		order[i] = e
		chunk = max(chunk, min(e.n, ScanChunk))
		delete(byName, t.Name)
	}
	for _, e := range entries { // in data order: the same error every time
		if _, extra := byName[e.name]; extra {
			return 0, fmt.Errorf("%w: the weights hold tensor %q, which the model has not", ErrIncompatible, e.name)
		}
	}
	h, err := headerOf(want.Tensors, nil)
	if err != nil {
		return 0, err
	}
	cw := &countingWriter{w: w}
	if _, err := cw.Write(h); err != nil {
		return cw.n, fmt.Errorf("encoding safetensors: writing the header: %w", err)
	}
	var vals []float32
	var raw []byte
	for i, e := range order {
		sr := io.NewSectionReader(r, int64(8+hl+e.begin), int64(e.end-e.begin))
		for done := uint64(0); done < e.n; {
			if vals == nil {
				vals = make([]float32, chunk)
			}
			dst := vals[:min(e.n-done, ScanChunk)]
			if err := readRun(sr, e.dtype, dst, &raw, chunk); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return cw.n, fmt.Errorf("%w: tensor %q is cut", ErrTruncated, e.name)
				}
				return cw.n, fmt.Errorf("reading tensor %q: %w", e.name, err)
			}
			if check != nil {
				if err := check(i, int(done), dst); err != nil {
					return cw.n, err
				}
			}
			if err := WriteFloats(cw, dst); err != nil {
				return cw.n, fmt.Errorf("encoding safetensors: writing tensor %q: %w", e.name, err)
			}
			done += uint64(len(dst))
		}
	}
	return cw.n, nil
}
