package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"unicode/utf8"
	"unsafe"
)

// MaxHeaderSize bounds a safetensors header, as the reference
// implementation does (100 MB).
const MaxHeaderSize = 100_000_000

// metadataKey is the header key that holds the file's string metadata.
const metadataKey = "__metadata__"

// nativeLittleEndian is true where float32 memory is already safetensors'
// byte order, so tensor data is copied, not converted.
var nativeLittleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// dtypeSizes lists the dtypes Cohort reads and their sizes in bytes.
var dtypeSizes = map[string]uint64{"F32": 4, "F16": 2, "BF16": 2, "F64": 8}

// EncodeSafetensors writes ws to w in the safetensors format: tensors as
// F32, in ws's order, with meta as the header's "__metadata__" (omitted when
// empty). The header is padded with spaces so that the data starts 8-byte
// aligned, as the reference implementation writes it. The tensor data is
// written straight from ws, without an intermediate copy.
func EncodeSafetensors(w io.Writer, ws *Weights, meta map[string]string) error {
	h, err := encodeHeader(ws, meta)
	if err != nil {
		return err
	}
	if _, err := w.Write(h); err != nil {
		return fmt.Errorf("encoding safetensors: writing the header: %w", err)
	}
	var scratch []byte
	for _, t := range ws.Tensors {
		if len(t.Data) == 0 {
			continue
		}
		if nativeLittleEndian {
			if _, err := w.Write(floatBytes(t.Data)); err != nil {
				return fmt.Errorf("encoding safetensors: writing tensor %q: %w", t.Name, err)
			}
			continue
		}
		if scratch == nil {
			scratch = make([]byte, 1<<16)
		}
		for lo := 0; lo < len(t.Data); lo += len(scratch) / 4 {
			d := t.Data[lo:min(lo+len(scratch)/4, len(t.Data))]
			for i, v := range d {
				binary.LittleEndian.PutUint32(scratch[4*i:], math.Float32bits(v))
			}
			if _, err := w.Write(scratch[:4*len(d)]); err != nil {
				return fmt.Errorf("encoding safetensors: writing tensor %q: %w", t.Name, err)
			}
		}
	}
	return nil
}

// MarshalSafetensors returns ws encoded as by [EncodeSafetensors].
func MarshalSafetensors(ws *Weights, meta map[string]string) ([]byte, error) {
	h, err := encodeHeader(ws, meta)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(h), int64(len(h))+ws.Bytes())
	copy(out, h)
	for _, t := range ws.Tensors {
		if nativeLittleEndian {
			out = append(out, floatBytes(t.Data)...)
			continue
		}
		for _, v := range t.Data {
			out = binary.LittleEndian.AppendUint32(out, math.Float32bits(v))
		}
	}
	return out, nil
}

// encodeHeader validates ws and returns the 8-byte length and the padded
// JSON header. The header is written by hand so that tensors appear in ws's
// order, with increasing data offsets.
func encodeHeader(ws *Weights, meta map[string]string) ([]byte, error) {
	if err := ws.Validate(); err != nil {
		return nil, fmt.Errorf("encoding safetensors: %w", err)
	}
	if _, ok := ws.Lookup(metadataKey); ok {
		return nil, fmt.Errorf("encoding safetensors: %w: %q is reserved for the metadata; rename the tensor", ErrInvalid, metadataKey)
	}
	return headerOf(ws.Tensors, meta)
}

// headerOf returns the 8-byte length and the padded JSON header of
// tensors, each holding as many values as its shape's product (checked by
// the caller: [Weights.Validate], or parseHeader for a scanned header's
// Data-less tensors), with meta.
func headerOf(tensors []Tensor, meta map[string]string) ([]byte, error) {
	h := make([]byte, 8, 8+64*len(tensors)+64)
	h = append(h, '{')
	if len(meta) > 0 {
		keys := make([]string, 0, len(meta))
		for k, v := range meta {
			if !utf8.ValidString(k) || !utf8.ValidString(v) {
				return nil, fmt.Errorf("encoding safetensors: metadata %q is not valid UTF-8", k)
			}
			keys = append(keys, k)
		}
		sort.Strings(keys)
		h = appendJSONString(h, metadataKey)
		h = append(h, ":{"...)
		for i, k := range keys {
			if i > 0 {
				h = append(h, ',')
			}
			h = appendJSONString(h, k)
			h = append(h, ':')
			h = appendJSONString(h, meta[k])
		}
		h = append(h, '}')
	}
	var off uint64
	for i, t := range tensors {
		if i > 0 || len(meta) > 0 {
			h = append(h, ',')
		}
		h = appendJSONString(h, t.Name)
		h = append(h, `:{"dtype":"F32","shape":[`...)
		for j, d := range t.Shape {
			if j > 0 {
				h = append(h, ',')
			}
			h = strconv.AppendInt(h, int64(d), 10)
		}
		h = append(h, `],"data_offsets":[`...)
		h = strconv.AppendUint(h, off, 10)
		n, err := NumElements(t.Shape)
		if err != nil {
			return nil, fmt.Errorf("encoding safetensors: %w: tensor %q: %w", ErrInvalid, t.Name, err)
		}
		off += 4 * n
		h = append(h, ',')
		h = strconv.AppendUint(h, off, 10)
		h = append(h, "]}"...)
	}
	h = append(h, '}')
	for len(h)%8 != 0 { // 8 + header: the data starts 8-byte aligned
		h = append(h, ' ')
	}
	binary.LittleEndian.PutUint64(h, uint64(len(h)-8))
	return h, nil
}

// appendJSONString appends s as a JSON string, escaping what JSON requires
// (and nothing for HTML, unlike encoding/json's default). A string of
// printable ASCII without quotes or backslashes, which a tensor's name
// almost always is, is appended as it is.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return appendEscapedJSONString(b, s)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendEscapedJSONString appends s as encoding/json writes it, without
// its HTML escapes.
func appendEscapedJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// floatBytes views d's memory as bytes (native order).
func floatBytes(d []float32) []byte {
	if len(d) == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(&d[0])), 4*len(d))
}

// DecodeSafetensors reads one safetensors file from r, reading no further
// than its end; to also refuse bytes after it, check that r is at EOF.
// limit bounds the whole file in bytes, header included ([ErrTooLarge]
// past it). Within a limit, tensors are allocated as the header announces
// them; with limit ≤ 0, no bound, memory grows as data arrives instead, so
// a header that lies costs no more memory than the bytes actually sent.
// Otherwise it decodes as [UnmarshalSafetensors] does.
func DecodeSafetensors(r io.Reader, limit int64) (*Weights, map[string]string, error) {
	if limit <= 0 {
		return decode(r, -1, math.MaxInt64, false)
	}
	return decode(r, -1, limit, true)
}

// UnmarshalSafetensors decodes a whole safetensors file. F32, F16, BF16 and
// F64 tensors are read (converted to float32); other dtypes are refused.
// Tensors come back in the order of their data offsets (so the order
// [EncodeSafetensors] wrote), and the metadata as written (nil when absent).
// Any inconsistency is an error wrapping [ErrMalformed] or [ErrTruncated]
// that names the problem; nothing panics.
func UnmarshalSafetensors(b []byte) (*Weights, map[string]string, error) {
	return decode(bytes.NewReader(b), int64(len(b)), int64(len(b)), true)
}

// ReadSafetensorsFile reads a safetensors file, as [UnmarshalSafetensors]
// does, without holding the encoded bytes in memory.
func ReadSafetensorsFile(path string) (*Weights, map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading weights: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, nil, fmt.Errorf("reading weights: %w", err)
	}
	w, meta, err := decode(f, st.Size(), st.Size(), true)
	if err != nil {
		return nil, nil, fmt.Errorf("reading weights %s: %w", path, err)
	}
	return w, meta, nil
}

// WriteSafetensorsFile writes ws to path as [EncodeSafetensors] does,
// atomically for readers: to a temporary file in the same folder, then
// renamed over path, so a reader sees the old file or the whole new one.
// The file is not synced to disk (a power cut may lose it; sync the folder
// where that matters). On error path is untouched and no temporary file is
// left.
func WriteSafetensorsFile(path string, ws *Weights, meta map[string]string) (err error) {
	if _, err := encodeHeader(ws, meta); err != nil { // fail before creating anything
		return fmt.Errorf("writing weights %s: %w", path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("writing weights: %w", err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(f.Name())
			err = fmt.Errorf("writing weights %s: %w", path, err)
		}
	}()
	if err := EncodeSafetensors(f, ws, meta); err != nil {
		return err
	}
	if err := f.Chmod(0o644); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}

// entry is one tensor of a header, as validated by parseHeader.
type entry struct {
	name       string
	dtype      string
	shape      []int
	n          uint64 // elements
	begin, end uint64 // byte offsets into the data
}

// readHeader reads and validates the header of a safetensors file of
// size bytes (−1: unknown) from r, refusing files above limit, and returns
// its entries in data order, its metadata, the header's length and the
// file's total size as the header announces it.
func readHeader(r io.Reader, size, limit int64) (entries []entry, meta map[string]string, hl, total uint64, err error) {
	var lenBuf [8]byte
	if n, err := io.ReadFull(r, lenBuf[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, nil, 0, 0, fmt.Errorf("%w: %d bytes, too short for the 8-byte header length", ErrTruncated, n)
		}
		return nil, nil, 0, 0, fmt.Errorf("reading the safetensors header length: %w", err)
	}
	hl = binary.LittleEndian.Uint64(lenBuf[:])
	switch {
	case hl > MaxHeaderSize:
		return nil, nil, 0, 0, fmt.Errorf("%w: header length %d exceeds the %d-byte limit (is this a safetensors file?)", ErrMalformed, hl, MaxHeaderSize)
	case size >= 0 && 8+hl > uint64(size):
		return nil, nil, 0, 0, fmt.Errorf("%w: header says %d bytes of header, got %d", ErrTruncated, hl, size-8)
	case 8+hl > uint64(limit):
		return nil, nil, 0, 0, fmt.Errorf("%w: header says %d bytes of header, the limit is %d bytes in all", ErrTooLarge, hl, limit)
	}
	header, err := io.ReadAll(io.LimitReader(r, int64(hl))) // grows as bytes arrive
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("reading the safetensors header: %w", err)
	}
	if uint64(len(header)) < hl {
		return nil, nil, 0, 0, fmt.Errorf("%w: header says %d bytes of header, got %d", ErrTruncated, hl, len(header))
	}
	entries, meta, err = parseHeader(header)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	var dataLen uint64
	if len(entries) > 0 {
		dataLen = entries[len(entries)-1].end
	}
	total = 8 + hl + dataLen // hl ≤ 1e8 and dataLen < 2^63: no overflow
	switch {
	case size >= 0 && total < uint64(size):
		return nil, nil, 0, 0, fmt.Errorf("%w: header says %d bytes, got %d: %d bytes after the last tensor", ErrMalformed, total, size, uint64(size)-total)
	case size >= 0 && total > uint64(size):
		return nil, nil, 0, 0, fmt.Errorf("%w: header says %d bytes, got %d", ErrTruncated, total, size)
	case total > uint64(limit):
		return nil, nil, 0, 0, fmt.Errorf("%w: header says %d bytes, the limit is %d", ErrTooLarge, total, limit)
	}
	return entries, meta, hl, total, nil
}

// decode reads a safetensors file of size bytes from r (size −1: unknown,
// read to the last tensor's end), refusing files above limit. trusted says
// that allocating what the header announces is safe (it is bounded by size
// or by a limit the caller chose).
func decode(r io.Reader, size, limit int64, trusted bool) (*Weights, map[string]string, error) {
	entries, meta, hl, total, err := readHeader(r, size, limit)
	if err != nil {
		return nil, nil, err
	}
	cr := &countingReader{r: r}
	ws := &Weights{Tensors: make([]Tensor, len(entries))}
	var scratch []byte
	for i, e := range entries {
		data, err := readTensor(cr, e, trusted, &scratch)
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, nil, fmt.Errorf("%w: header says %d bytes, got %d (tensor %q is cut)", ErrTruncated, total, 8+hl+cr.n, e.name)
			}
			return nil, nil, fmt.Errorf("reading tensor %q: %w", e.name, err)
		}
		ws.Tensors[i] = Tensor{Name: e.name, Shape: e.shape, Data: data}
	}
	return ws, meta, nil
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n uint64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += uint64(n)
	return n, err
}

// readChunk is how many bytes a tensor is read in when its memory grows as
// data arrives, and the size of the conversion buffer for other dtypes.
const readChunk = 4 << 20

// readTensor reads e's data from r. With trusted sizes (bounded by the
// input's length or the caller's limit) the tensor is allocated at once;
// otherwise it grows as data arrives, so a lying header cannot make the
// decoder allocate more than about twice what was sent. On a short read it
// returns the values read so far with the error.
func readTensor(r io.Reader, e entry, trusted bool, scratch *[]byte) ([]float32, error) {
	size := dtypeSizes[e.dtype]
	capHint := e.n
	if !trusted {
		capHint = min(e.n, readChunk/4)
	}
	out := make([]float32, 0, capHint)
	for uint64(len(out)) < e.n {
		k := int(min(e.n-uint64(len(out)), readChunk/4))
		out = slices.Grow(out, k)
		dst := out[len(out) : len(out)+k]
		if e.dtype == "F32" && nativeLittleEndian {
			n, err := io.ReadFull(r, floatBytes(dst))
			out = out[:len(out)+n/4]
			if err != nil {
				return out, err
			}
			continue
		}
		if len(*scratch) < k*int(size) {
			*scratch = make([]byte, readChunk*2) // F64: 8 bytes per value
		}
		raw := (*scratch)[:k*int(size)]
		n, err := io.ReadFull(r, raw)
		k = n / int(size)
		convert(e.dtype, raw[:k*int(size)], dst[:k])
		out = out[:len(out)+k]
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// convert decodes len(dst) little-endian values of dtype from b.
func convert(dtype string, b []byte, dst []float32) {
	switch dtype {
	case "F32":
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case "F64":
		for i := range dst {
			dst[i] = float32(math.Float64frombits(binary.LittleEndian.Uint64(b[8*i:])))
		}
	case "BF16":
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case "F16":
		for i := range dst {
			dst[i] = halfToFloat(binary.LittleEndian.Uint16(b[2*i:]))
		}
	}
}

// halfToFloat converts an IEEE 754 binary16 value exactly.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0: // zero or subnormal: frac × 2⁻²⁴, exact in float32
		f := float32(frac) * (1.0 / (1 << 24))
		return math.Float32frombits(sign | math.Float32bits(f))
	case exp == 0x1f: // ±Inf, NaN (payload kept)
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
}

// parseHeader parses and validates a safetensors JSON header: valid UTF-8,
// one object, no repeated key, "__metadata__" a map of strings, every
// other key a tensor with a known dtype, a shape and data offsets that,
// sorted, cover the data contiguously from 0. Entries come back in data
// order (ties, zero-size tensors, in header order). A header written the
// plain way (see [parsePlainHeader]) is read without encoding/json; any
// other goes through it, with the same result.
func parseHeader(h []byte) ([]entry, map[string]string, error) {
	if !utf8.Valid(h) {
		return nil, nil, fmt.Errorf("%w: the header is not valid UTF-8", ErrMalformed)
	}
	if t := bytes.TrimLeft(h, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, nil, fmt.Errorf("%w: the header is not a JSON object (is this a safetensors file?)", ErrMalformed)
	}
	entries, meta, plain, err := parsePlainHeader(h)
	if !plain {
		entries, meta, err = parseHeaderJSON(h)
	}
	if err != nil {
		return nil, nil, err
	}
	sort.SliceStable(entries, func(i, j int) bool {
		if entries[i].begin != entries[j].begin {
			return entries[i].begin < entries[j].begin
		}
		return entries[i].end < entries[j].end
	})
	var next uint64
	for _, e := range entries {
		if e.begin != next {
			what := "overlaps the previous tensor"
			if e.begin > next {
				what = "leaves a gap after the previous tensor"
			}
			return nil, nil, fmt.Errorf("%w: tensor %q: data_offsets [%d, %d] %s, which ends at %d", ErrMalformed, e.name, e.begin, e.end, what, next)
		}
		next = e.end
	}
	return entries, meta, nil
}

// parseHeaderJSON parses a header (valid UTF-8, starting with an object)
// with encoding/json, returning its entries in header order, each
// validated as it is read.
func parseHeaderJSON(h []byte) ([]entry, map[string]string, error) {
	dec := json.NewDecoder(bytes.NewReader(h))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // '{'
		return nil, nil, fmt.Errorf("%w: header JSON: %v", ErrMalformed, err)
	}
	var (
		meta    map[string]string
		entries []entry
		seen    = make(map[string]struct{})
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, fmt.Errorf("%w: header JSON: %v", ErrMalformed, err)
		}
		name, _ := tok.(string) // object keys are strings
		if _, dup := seen[name]; dup {
			return nil, nil, fmt.Errorf("%w: the header repeats the key %q", ErrMalformed, name)
		}
		seen[name] = struct{}{}
		if name == metadataKey {
			if err := dec.Decode(&meta); err != nil {
				return nil, nil, fmt.Errorf("%w: %s must map strings to strings: %v", ErrMalformed, metadataKey, err)
			}
			continue
		}
		var raw map[string]json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("%w: tensor %q: header JSON: %v", ErrMalformed, name, err)
		}
		e, err := parseEntry(name, raw)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: tensor %q: %v", ErrMalformed, name, err)
		}
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // '}'
		return nil, nil, fmt.Errorf("%w: header JSON: %v", ErrMalformed, err)
	}
	if tok, err := dec.Token(); err != io.EOF {
		return nil, nil, fmt.Errorf("%w: header JSON: %v after the object", ErrMalformed, tokenOrErr(tok, err))
	}
	return entries, meta, nil
}

func tokenOrErr(tok json.Token, err error) any {
	if err != nil {
		return err
	}
	return tok
}

// parseEntry validates one tensor's header fields. Unknown fields are
// ignored, as the reference does; names are matched exactly.
func parseEntry(name string, raw map[string]json.RawMessage) (entry, error) {
	for _, k := range []string{"dtype", "shape", "data_offsets"} {
		if _, ok := raw[k]; !ok {
			return entry{name: name}, fmt.Errorf("no %q", k)
		}
	}
	var dtype string
	if err := json.Unmarshal(raw["dtype"], &dtype); err != nil {
		return entry{name: name}, fmt.Errorf("dtype: %v", err)
	}
	if err := checkDtype(dtype); err != nil {
		return entry{name: name}, err
	}
	dims, err := parseUints(raw["shape"])
	if err != nil {
		return entry{name: name}, fmt.Errorf("shape: %v", err)
	}
	e, err := shapedEntry(name, dtype, dims)
	if err != nil {
		return e, err
	}
	offs, err := parseUints(raw["data_offsets"])
	if err != nil || len(offs) != 2 {
		return e, fmt.Errorf("data_offsets must be two byte offsets [begin, end]: %s", raw["data_offsets"])
	}
	return e, e.setOffsets(offs[0], offs[1])
}

// checkDtype refuses a dtype Cohort does not read.
func checkDtype(dtype string) error {
	if _, ok := dtypeSizes[dtype]; !ok {
		return fmt.Errorf("dtype %q is not read by Cohort, which reads F32, F16, BF16 and F64; convert the tensor to float32 before saving", dtype)
	}
	return nil
}

// shapedEntry is the entry of a tensor of a known dtype and shape dims,
// which it checks: its size in bytes must fit an int64.
func shapedEntry(name, dtype string, dims []uint64) (entry, error) {
	e := entry{name: name, dtype: dtype}
	if len(dims) > 0 { // a scalar keeps Shape nil
		e.shape = make([]int, len(dims))
	}
	for i, d := range dims {
		if d > math.MaxInt64 {
			return e, fmt.Errorf("shape %v is too large", dims)
		}
		e.shape[i] = int(d)
	}
	var err error
	if e.n, err = NumElements(e.shape); err != nil {
		return e, err
	}
	if hi, nbytes := bits.Mul64(e.n, dtypeSizes[dtype]); hi != 0 || nbytes > math.MaxInt64 {
		return e, fmt.Errorf("shape %v is too large", e.shape)
	}
	return e, nil
}

// setOffsets sets e's data offsets, which must span its shape's bytes.
func (e *entry) setOffsets(begin, end uint64) error {
	e.begin, e.end = begin, end
	nbytes := e.n * dtypeSizes[e.dtype] // checked by shapedEntry
	if e.end < e.begin || e.end-e.begin != nbytes {
		return fmt.Errorf("data_offsets [%d, %d] hold %d bytes, but shape %v of %s needs %d", e.begin, e.end, int64(e.end-e.begin), e.shape, e.dtype, nbytes)
	}
	if e.end > math.MaxInt64 {
		return fmt.Errorf("data_offsets [%d, %d] are too large", e.begin, e.end)
	}
	return nil
}

// parseUints decodes a JSON array of non-negative integers.
func parseUints(raw json.RawMessage) ([]uint64, error) {
	var nums []json.Number
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if err := dec.Decode(&nums); err != nil {
		return nil, err
	}
	if nums == nil {
		return nil, errors.New("null, want an array of integers")
	}
	out := make([]uint64, len(nums))
	for i, n := range nums {
		v, err := strconv.ParseUint(string(n), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%s is not a non-negative integer below 2^64", n)
		}
		out[i] = v
	}
	return out, nil
}

// DigestSafetensors returns the SHA-256 and the size of ws encoded as by
// [EncodeSafetensors], without holding the encoding: for a sender that
// announces both before it streams the bytes.
func DigestSafetensors(ws *Weights, meta map[string]string) (sum [sha256.Size]byte, size int64, err error) {
	h := sha256.New()
	cw := &countingWriter{w: h}
	if err := EncodeSafetensors(cw, ws, meta); err != nil {
		return sum, 0, err
	}
	h.Sum(sum[:0])
	return sum, cw.n, nil
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
