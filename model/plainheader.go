package model

import "fmt"

// parsePlainHeader parses a safetensors header (valid UTF-8) written the
// plain way, as Cohort, the reference implementation and PyTorch write
// one: strings without escapes, integers without sign, fraction or
// exponent, tensors with exactly the fields dtype, shape and data_offsets,
// no key repeated, "__metadata__" an object of strings. Reading such a
// header needs none of encoding/json's generality, which was 6–11% of a
// coordinator's CPU at 10,000 sites (14–18 µs a logistic regression's
// header, against 1.1–1.6 µs here: BenchmarkParseHeader).
//
// plain is false where h is anything else; then nothing else is set, and
// [parseHeaderJSON] decides (errors about the JSON are its to give).
// Otherwise the entries (in header order) and metadata are what
// parseHeaderJSON returns for h, and so is err: a tensor that fails
// validation, checked in the same order.
func parsePlainHeader(h []byte) (entries []entry, meta map[string]string, plain bool, err error) {
	p := plainParser{h: h}
	var seen map[string]struct{}
	var invalid error // a plain tensor's validation
	ok := p.members(func(key []byte) bool {
		name := string(key)
		if seen == nil {
			seen = make(map[string]struct{}, 8)
		}
		if _, dup := seen[name]; dup {
			return false
		}
		seen[name] = struct{}{}
		if name == metadataKey {
			var ok bool
			meta, ok = p.strings()
			return ok
		}
		t, ok := p.tensor()
		if !ok {
			return false
		}
		// Validated as parseEntry does, in its order. The tensors after a
		// bad one are not read: parseHeaderJSON stops there too, so its
		// error is this one whatever follows.
		var e entry
		err := checkDtype(t.dtype)
		if err == nil {
			e, err = shapedEntry(name, t.dtype, t.shape)
		}
		if err == nil {
			err = e.setOffsets(t.begin, t.end)
		}
		if err != nil {
			invalid = fmt.Errorf("%w: tensor %q: %v", ErrMalformed, name, err)
			return false
		}
		entries = append(entries, e)
		return true
	})
	if invalid != nil {
		return nil, nil, true, invalid
	}
	p.space()
	if !ok || p.i != len(p.h) {
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
	m := make(map[string]string)
	ok := p.members(func(key []byte) bool {
		v, ok := p.str()
		if ok {
			m[string(key)] = v
		}
		return ok
	})
	return m, ok
}

// members reads an object, calling member with each key once the parser
// is at its value; it stops, false, at anything not plain or when member
// returns false.
func (p *plainParser) members(member func(key []byte) bool) bool {
	if !p.take('{') {
		return false
	}
	for first := true; !p.take('}'); first = false {
		if !first && !p.take(',') {
			return false
		}
		k, ok := p.rawStr()
		if !ok || !p.take(':') || !member(k) {
			return false
		}
	}
	return true
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
	var have [3]bool // dtype, shape, data_offsets
	ok := p.members(func(key []byte) bool {
		var field int
		ok := false
		switch string(key) {
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
			ok = p.take('[')
			if ok {
				t.begin, ok = p.uint()
			}
			ok = ok && p.take(',')
			if ok {
				t.end, ok = p.uint()
			}
			ok = ok && p.take(']')
		default:
			return false
		}
		if !ok || have[field] {
			return false
		}
		have[field] = true
		return true
	})
	return t, ok && have == [3]bool{true, true, true}
}

// dtypeName returns d as a string, without allocating for the dtypes
// Cohort reads (dtypeSizes' keys: one added there reads right, but
// allocates until it is added here).
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
