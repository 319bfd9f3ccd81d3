package model

import "fmt"

// parsePlainHeader parses a safetensors header (valid UTF-8) written the
// plain way, as Cohort, the reference implementation and PyTorch write
// one: strings without escapes, integers without sign, fraction or
// exponent, tensors with exactly the fields dtype, shape and data_offsets,
// no key repeated, "__metadata__" an object of strings. Reading such a
// header needs none of encoding/json's generality, which cost a coordinator
// about 50 µs an update at 10,000 sites.
//
// plain is false where h is anything else; then nothing else is set, and
// [parseHeaderJSON] decides (errors about the JSON are its to give).
// Otherwise the entries (in header order) and metadata are what
// parseHeaderJSON returns for h, and so is err: a tensor that fails
// validation, checked in the same order.
func parsePlainHeader(h []byte) (entries []entry, meta map[string]string, plain bool, err error) {
	p := plainParser{h: h}
	if !p.take('{') {
		return nil, nil, false, nil
	}
	var seen map[string]struct{}
	for first := true; !p.take('}'); first = false {
		if !first && !p.take(',') {
			return nil, nil, false, nil
		}
		name, ok := p.str()
		if !ok || !p.take(':') {
			return nil, nil, false, nil
		}
		if seen == nil {
			seen = make(map[string]struct{}, 8)
		}
		if _, dup := seen[name]; dup {
			return nil, nil, false, nil
		}
		seen[name] = struct{}{}
		if name == metadataKey {
			if meta, ok = p.strings(); !ok {
				return nil, nil, false, nil
			}
			continue
		}
		t, ok := p.tensor()
		if !ok {
			return nil, nil, false, nil
		}
		// Validated as parseEntry does, in its order. The tensors after a
		// bad one are not read: parseHeaderJSON stops there too, so its
		// error is this one whatever follows.
		if err := checkDtype(t.dtype); err != nil {
			return nil, nil, true, fmt.Errorf("%w: tensor %q: %v", ErrMalformed, name, err)
		}
		e, err := shapedEntry(name, t.dtype, t.shape)
		if err == nil {
			err = e.setOffsets(t.begin, t.end)
		}
		if err != nil {
			return nil, nil, true, fmt.Errorf("%w: tensor %q: %v", ErrMalformed, name, err)
		}
		entries = append(entries, e)
	}
	p.space()
	if p.i != len(p.h) {
		return nil, nil, false, nil
	}
	return entries, meta, true, nil
}

// plainParser reads a plain header (see [parsePlainHeader]); every method
// skips the whitespace before what it reads, and reports false on
// anything not plain.
type plainParser struct {
	h []byte
	i int
}

func (p *plainParser) space() {
	for p.i < len(p.h) {
		switch p.h[p.i] {
		case ' ', '\t', '\n', '\r':
			p.i++
		default:
			return
		}
	}
}

// take consumes c when it comes next.
func (p *plainParser) take(c byte) bool {
	p.space()
	if p.i < len(p.h) && p.h[p.i] == c {
		p.i++
		return true
	}
	return false
}

// rawStr reads a string without escapes or control characters and returns
// its bytes (a view of h).
func (p *plainParser) rawStr() ([]byte, bool) {
	if !p.take('"') {
		return nil, false
	}
	for j := p.i; j < len(p.h); j++ {
		switch c := p.h[j]; {
		case c == '"':
			s := p.h[p.i:j]
			p.i = j + 1
			return s, true
		case c == '\\' || c < 0x20:
			return nil, false
		}
	}
	return nil, false
}

func (p *plainParser) str() (string, bool) {
	s, ok := p.rawStr()
	return string(s), ok
}

// strings reads an object of strings; a key repeated keeps its last value,
// as encoding/json does.
func (p *plainParser) strings() (map[string]string, bool) {
	if !p.take('{') {
		return nil, false
	}
	m := make(map[string]string)
	for first := true; !p.take('}'); first = false {
		if !first && !p.take(',') {
			return nil, false
		}
		k, ok := p.str()
		if !ok || !p.take(':') {
			return nil, false
		}
		v, ok := p.str()
		if !ok {
			return nil, false
		}
		m[k] = v
	}
	return m, true
}

// uint reads an integer: 0, or digits not starting with 0, below 2^64.
func (p *plainParser) uint() (uint64, bool) {
	p.space()
	start := p.i
	var v uint64
	for p.i < len(p.h) && '0' <= p.h[p.i] && p.h[p.i] <= '9' {
		d := uint64(p.h[p.i] - '0')
		if v > (1<<64-1-d)/10 {
			return 0, false
		}
		v = 10*v + d
		p.i++
	}
	n := p.i - start
	return v, n > 0 && (n == 1 || p.h[start] != '0')
}

// uints reads an array of integers.
func (p *plainParser) uints() ([]uint64, bool) {
	if !p.take('[') {
		return nil, false
	}
	out := make([]uint64, 0, 4)
	for first := true; !p.take(']'); first = false {
		if !first && !p.take(',') {
			return nil, false
		}
		v, ok := p.uint()
		if !ok {
			return nil, false
		}
		out = append(out, v)
	}
	return out, true
}

// plainTensor is a tensor's fields as a plain header gives them.
type plainTensor struct {
	dtype      string
	shape      []uint64
	begin, end uint64
}

// tensor reads a tensor's object: dtype, shape and data_offsets (two
// integers), each once, in any order, and nothing else.
func (p *plainParser) tensor() (plainTensor, bool) {
	var t plainTensor
	if !p.take('{') {
		return t, false
	}
	var have [3]bool // dtype, shape, data_offsets
	for first := true; !p.take('}'); first = false {
		if !first && !p.take(',') {
			return t, false
		}
		k, ok := p.rawStr()
		if !ok || !p.take(':') {
			return t, false
		}
		var field int
		switch string(k) {
		case "dtype":
			field = 0
			var d []byte
			if d, ok = p.rawStr(); ok {
				t.dtype = dtypeName(d)
			}
		case "shape":
			field = 1
			t.shape, ok = p.uints()
		case "data_offsets":
			field = 2
			var offs []uint64
			if offs, ok = p.uints(); ok && len(offs) == 2 {
				t.begin, t.end = offs[0], offs[1]
			} else {
				ok = false
			}
		default:
			return t, false
		}
		if !ok || have[field] {
			return t, false
		}
		have[field] = true
	}
	return t, have == [3]bool{true, true, true}
}

// dtypeName returns d as a string, without allocating for the dtypes
// Cohort reads.
func dtypeName(d []byte) string {
	switch string(d) {
	case "F32":
		return "F32"
	case "F16":
		return "F16"
	case "BF16":
		return "BF16"
	case "F64":
		return "F64"
	}
	return string(d)
}
