package model

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"sort"
)

// MaxHeaderSize bounds a safetensors header, as the reference
// implementation does (100 MB).
const MaxHeaderSize = 100_000_000

type tensorHeader struct {
	DType       string   `json:"dtype"`
	Shape       []int    `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// EncodeSafetensors writes ws in the safetensors format (F32 tensors, in
// ws's order) with optional string metadata.
func EncodeSafetensors(w io.Writer, ws *Weights, meta map[string]string) error {
	b, err := MarshalSafetensors(ws, meta)
	if err != nil {
		return err
	}
	_, err = w.Write(b)
	return err
}

// MarshalSafetensors returns ws encoded as safetensors.
func MarshalSafetensors(ws *Weights, meta map[string]string) ([]byte, error) {
	// The header is a JSON object; write it by hand so that tensors keep
	// ws's order (the data follows in the same order).
	var h bytes.Buffer
	h.WriteByte('{')
	if len(meta) > 0 {
		mb, err := json.Marshal(meta)
		if err != nil {
			return nil, fmt.Errorf("encoding metadata: %w", err)
		}
		h.WriteString(`"__metadata__":`)
		h.Write(mb)
	}
	var off int64
	seen := make(map[string]bool, len(ws.Tensors))
	for i, t := range ws.Tensors {
		if t.Name == "" || t.Name == "__metadata__" || seen[t.Name] {
			return nil, fmt.Errorf("encoding tensor %d: name %q is empty, reserved or repeated", i, t.Name)
		}
		seen[t.Name] = true
		n, err := shapeElems(t.Shape)
		if err != nil || n != int64(len(t.Data)) {
			return nil, fmt.Errorf("encoding tensor %q: shape %v does not hold %d values", t.Name, t.Shape, len(t.Data))
		}
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		th, _ := json.Marshal(tensorHeader{DType: "F32", Shape: shape, DataOffsets: [2]int64{off, off + 4*n}})
		if h.Len() > 1 {
			h.WriteByte(',')
		}
		nb, _ := json.Marshal(t.Name)
		h.Write(nb)
		h.WriteByte(':')
		h.Write(th)
		off += 4 * n
	}
	h.WriteByte('}')
	for h.Len()%8 != 0 { // align the data to 8 bytes, as the reference does
		h.WriteByte(' ')
	}
	out := make([]byte, 8+h.Len()+int(off))
	binary.LittleEndian.PutUint64(out, uint64(h.Len()))
	copy(out[8:], h.Bytes())
	p := out[8+h.Len():]
	for _, t := range ws.Tensors {
		for _, v := range t.Data {
			binary.LittleEndian.PutUint32(p, math.Float32bits(v))
			p = p[4:]
		}
	}
	return out, nil
}

func shapeElems(shape []int) (int64, error) {
	n := int64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d", d)
		}
		if d != 0 && n > math.MaxInt32/int64(d) {
			return 0, fmt.Errorf("shape %v is too large", shape)
		}
		n *= int64(d)
	}
	return n, nil
}

// DecodeSafetensors reads a whole safetensors stream.
func DecodeSafetensors(r io.Reader) (*Weights, map[string]string, error) {
	b, err := io.ReadAll(r)
	if err != nil {
		return nil, nil, fmt.Errorf("reading safetensors: %w", err)
	}
	return UnmarshalSafetensors(b)
}

// UnmarshalSafetensors decodes safetensors bytes. F32, F16, BF16 and F64
// tensors are read (converted to float32); tensors come back in the order
// of their data offsets. Any inconsistency is an error wrapping
// [ErrMalformed] or [ErrTruncated]; nothing panics.
func UnmarshalSafetensors(b []byte) (*Weights, map[string]string, error) {
	if len(b) < 8 {
		return nil, nil, fmt.Errorf("%w: %d bytes, too short for the 8-byte header length", ErrTruncated, len(b))
	}
	hl := binary.LittleEndian.Uint64(b)
	if hl > MaxHeaderSize {
		return nil, nil, fmt.Errorf("%w: header length %d exceeds %d", ErrMalformed, hl, MaxHeaderSize)
	}
	if uint64(len(b)-8) < hl {
		return nil, nil, fmt.Errorf("%w: header says %d bytes, got %d", ErrTruncated, hl, len(b)-8)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+hl], &raw); err != nil {
		return nil, nil, fmt.Errorf("%w: header JSON: %v", ErrMalformed, err)
	}
	data := b[8+hl:]
	var meta map[string]string
	type entry struct {
		name string
		h    tensorHeader
	}
	var entries []entry
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &meta); err != nil {
				return nil, nil, fmt.Errorf("%w: __metadata__ must map strings to strings: %v", ErrMalformed, err)
			}
			continue
		}
		var th tensorHeader
		if err := json.Unmarshal(msg, &th); err != nil {
			return nil, nil, fmt.Errorf("%w: tensor %q: %v", ErrMalformed, name, err)
		}
		entries = append(entries, entry{name, th})
	}
	sort.Slice(entries, func(i, j int) bool {
		if entries[i].h.DataOffsets[0] != entries[j].h.DataOffsets[0] {
			return entries[i].h.DataOffsets[0] < entries[j].h.DataOffsets[0]
		}
		return entries[i].name < entries[j].name
	})
	ws := &Weights{Tensors: make([]Tensor, 0, len(entries))}
	var next int64
	for _, e := range entries {
		size, ok := dtypeSize[e.h.DType]
		if !ok {
			return nil, nil, fmt.Errorf("%w: tensor %q has dtype %q; Cohort reads F32, F16, BF16 and F64", ErrMalformed, e.name, e.h.DType)
		}
		n, err := shapeElems(e.h.Shape)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: tensor %q: %v", ErrMalformed, e.name, err)
		}
		begin, end := e.h.DataOffsets[0], e.h.DataOffsets[1]
		if begin != next || end < begin || end-begin != n*size {
			return nil, nil, fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] do not follow on from %d with %d bytes for shape %v",
				ErrMalformed, e.name, begin, end, next, n*size, e.h.Shape)
		}
		if end > int64(len(data)) {
			return nil, nil, fmt.Errorf("%w: tensor %q ends at byte %d of the data, got %d bytes", ErrTruncated, e.name, end, len(data))
		}
		ws.Tensors = append(ws.Tensors, Tensor{Name: e.name, Shape: append([]int{}, e.h.Shape...), Data: convert(e.h.DType, data[begin:end], int(n))})
		next = end
	}
	if next != int64(len(data)) {
		return nil, nil, fmt.Errorf("%w: %d bytes of data after the last tensor", ErrMalformed, int64(len(data))-next)
	}
	return ws, meta, nil
}

var dtypeSize = map[string]int64{"F32": 4, "F16": 2, "BF16": 2, "F64": 8}

func convert(dtype string, b []byte, n int) []float32 {
	out := make([]float32, n)
	switch dtype {
	case "F32":
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case "F64":
		for i := range out {
			out[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
	case "BF16":
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case "F16":
		for i := range out {
			out[i] = halfToFloat(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
	return out
}

// halfToFloat converts an IEEE 754 binary16 value.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0 && frac == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		f := float32(frac) / 1024 / 16384
		if sign != 0 {
			f = -f
		}
		return f
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// ReadSafetensorsFile reads a safetensors file.
func ReadSafetensorsFile(path string) (*Weights, map[string]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading weights: %w", err)
	}
	w, meta, err := UnmarshalSafetensors(b)
	if err != nil {
		return nil, nil, fmt.Errorf("reading weights %s: %w", path, err)
	}
	return w, meta, nil
}

// WriteSafetensorsFile writes ws to path atomically (temp file + rename).
func WriteSafetensorsFile(path string, ws *Weights, meta map[string]string) error {
	b, err := MarshalSafetensors(ws, meta)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-*.safetensors")
	if err != nil {
		return fmt.Errorf("writing weights: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(f.Name())
		return fmt.Errorf("writing weights %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing weights %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("writing weights %s: %w", path, err)
	}
	return nil
}
