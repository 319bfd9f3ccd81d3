package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// ScanChunk is the most values [ScanSafetensors] hands to its visitor at
// a time (4 MiB of float32).
const ScanChunk = readChunk / 4

// ScanSafetensors reads one safetensors file from r as [DecodeSafetensors]
// does, with the same checks and errors, but keeps no tensor: header is
// called once, before any value is read, with the tensors the header
// announces (names and shapes, in data order, Data nil), and visit with
// consecutive runs of each tensor's values converted to float32 — tensor
// t's values from index off, at most [ScanChunk] at a time, in a buffer
// reused once visit returns. An error from header or visit ends the scan
// and is returned as is. It reads no further than the file's end and
// returns its metadata. Memory stays at one chunk whatever the file's
// size: what a receiver needs to check and spill a model as it arrives.
func ScanSafetensors(r io.Reader, limit int64, header func(*Weights) error, visit func(t, off int, vals []float32) error) (map[string]string, error) {
	if limit <= 0 {
		limit = math.MaxInt64
	}
	entries, meta, hl, total, err := readHeader(r, -1, limit)
	if err != nil {
		return nil, err
	}
	shell := &Weights{Tensors: make([]Tensor, len(entries))}
	for i, e := range entries {
		shell.Tensors[i] = Tensor{Name: e.name, Shape: e.shape}
	}
	if err := header(shell); err != nil {
		return nil, err
	}
	cr := &countingReader{r: r}
	var vals []float32
	var raw []byte
	// Buffers as large as the largest tensor, up to a chunk: a small
	// model's update costs no 4 MiB allocation.
	chunk := uint64(0)
	for _, e := range entries {
		chunk = max(chunk, min(e.n, ScanChunk))
	}
	for i, e := range entries {
		for done := uint64(0); done < e.n; {
			k := int(min(e.n-done, ScanChunk))
			if vals == nil {
				vals = make([]float32, chunk)
			}
			dst := vals[:k]
			if err := readRun(cr, e.dtype, dst, &raw, chunk); err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return nil, fmt.Errorf("%w: header says %d bytes, got %d (tensor %q is cut)", ErrTruncated, total, 8+hl+cr.n, e.name)
				}
				return nil, fmt.Errorf("reading tensor %q: %w", e.name, err)
			}
			if err := visit(i, int(done), dst); err != nil {
				return nil, err
			}
			done += uint64(k)
		}
	}
	return meta, nil
}

// readRun fills dst with the next len(dst) values of dtype from r,
// converted to float32; raw is the conversion's scratch buffer, made for
// chunk values of the widest dtype on first use.
func readRun(r io.Reader, dtype string, dst []float32, raw *[]byte, chunk uint64) error {
	if dtype == "F32" && nativeLittleEndian {
		_, err := io.ReadFull(r, floatBytes(dst))
		return err
	}
	if *raw == nil {
		*raw = make([]byte, chunk*8) // F64: 8 bytes per value
	}
	b := (*raw)[:uint64(len(dst))*dtypeSizes[dtype]]
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	convert(dtype, b, dst)
	return nil
}

// WriteFloats writes d to w as little-endian float32, the layout of an F32
// safetensors tensor's data.
func WriteFloats(w io.Writer, d []float32) error {
	if nativeLittleEndian {
		_, err := w.Write(floatBytes(d))
		return err
	}
	b := make([]byte, 4*min(len(d), ScanChunk))
	for len(d) > 0 {
		k := min(len(d), ScanChunk)
		for i, v := range d[:k] {
			binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
		}
		if _, err := w.Write(b[:4*k]); err != nil {
			return err
		}
		d = d[k:]
	}
	return nil
}

// ReadFloats fills d with little-endian float32 values read from r, as
// [io.ReadFull] fills bytes: it returns how many values it read and
// io.ErrUnexpectedEOF (or io.EOF, for none) where r ends first.
func ReadFloats(r io.Reader, d []float32) (int, error) {
	if nativeLittleEndian {
		n, err := io.ReadFull(r, floatBytes(d))
		return n / 4, err
	}
	b := make([]byte, 4*len(d))
	n, err := io.ReadFull(r, b)
	convert("F32", b[:n/4*4], d[:n/4])
	return n / 4, err
}

// ChunkFor is the size of a buffer that reads w's values a chunk at a
// time: its largest tensor's length, at most [ScanChunk], at least 1.
func ChunkFor(w *Weights) int {
	n := 1
	for _, t := range w.Tensors {
		n = max(n, min(len(t.Data), ScanChunk))
	}
	return n
}
