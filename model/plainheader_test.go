package model

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// plainHeaderCases are headers parsePlainHeader reads (plain) and headers
// it leaves to encoding/json, each valid or not.
var plainHeaderCases = []struct {
	name  string
	h     string
	plain bool
}{
	{"cohort's", `{"__metadata__":{"format":"pt"},"fc.weight":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},"fc.bias":{"dtype":"F32","shape":[2],"data_offsets":[24,32]}}      `, true},
	{"no metadata, a scalar, padding", `{"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]}}   `, true},
	{"empty", `{}`, true},
	{"empty metadata", `{"__metadata__":{}}`, true},
	{"metadata last, a key repeated in it", `{"a":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},"__metadata__":{"k":"1","k":"2"}}`, true},
	{"fields in another order, whitespace", " \n{ \"w\" : {\t\"data_offsets\" : [ 0 , 4 ] ,\r\n \"shape\" : [ 1 ] , \"dtype\" : \"F16\" } , \"é\" : {\"shape\":[0,7],\"dtype\":\"F32\",\"data_offsets\":[4,4]} }\n", true},
	{"a zero dimension", `{"z":{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}`, true},
	{"large offsets", `{"a":{"dtype":"F32","shape":[4611686018427387903],"data_offsets":[0,18446744073709551612]}}`, true},
	// Plain, and refused: the same errors as encoding/json's path.
	{"unknown dtype", `{"a":{"dtype":"I64","shape":[1],"data_offsets":[0,8]}}`, true},
	{"size mismatch", `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, true},
	{"end before begin", `{"a":{"dtype":"F32","shape":[1],"data_offsets":[8,4]}}`, true},
	{"shape overflows", `{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,4]}}`, true},
	{"dimension above int64", `{"a":{"dtype":"F32","shape":[9223372036854775808],"data_offsets":[0,4]}}`, true},
	{"bad second tensor after a bad first", `{"a":{"dtype":"X","shape":[1],"data_offsets":[0,4]},"b":{"dtype":"Y","shape":[1],"data_offsets":[4,8]}}`, true},
	// Not plain: encoding/json decides.
	{"escaped name", `{"a\u00e9":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, false},
	{"escaped dtype", `{"a":{"dtype":"F\u0033\u0032","shape":[1],"data_offsets":[0,4]}}`, false},
	{"unknown field", `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"note":{"x":[1]}}}`, false},
	{"field repeated", `{"a":{"dtype":"F16","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, false},
	{"field missing", `{"a":{"dtype":"F32","shape":[1]}}`, false},
	{"exponent", `{"a":{"dtype":"F32","shape":[1e0],"data_offsets":[0,4]}}`, false},
	{"fraction", `{"a":{"dtype":"F32","shape":[1.0],"data_offsets":[0,4]}}`, false},
	{"negative", `{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, false},
	{"leading zero", `{"a":{"dtype":"F32","shape":[01],"data_offsets":[0,4]}}`, false},
	{"2^64", `{"a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,4]}}`, false},
	{"three offsets", `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4,8]}}`, false},
	{"null shape", `{"a":{"dtype":"F32","shape":null,"data_offsets":[0,4]}}`, false},
	{"null metadata", `{"__metadata__":null}`, false},
	{"metadata number", `{"__metadata__":{"k":1}}`, false},
	{"key repeated", `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, false},
	{"trailing comma", `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},}`, false},
	{"after the object", `{} {}`, false},
	{"cut", `{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]`, false},
	{"control character", "{\"a\tb\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", false},
	{"tensor null", `{"a":null}`, false},
}

// TestPlainHeader: the headers every writer we know writes take the
// plain path, and whatever path a header takes, its result is the one
// encoding/json's path gives.
func TestPlainHeader(t *testing.T) {
	for _, tt := range plainHeaderCases {
		t.Run(tt.name, func(t *testing.T) {
			_, _, plain, _ := parsePlainHeader([]byte(tt.h))
			if plain != tt.plain {
				t.Errorf("plain = %v, want %v", plain, tt.plain)
			}
			checkPlainHeader(t, []byte(tt.h))
		})
	}
	// Cohort's own headers, without metadata and with it (an odd key
	// and value included), take the plain path.
	for _, meta := range []map[string]string{nil, {"format": "pt", "<": "&"}} {
		h, err := headerOf(sample().Tensors, meta)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, plain, err := parsePlainHeader(h[8:]); !plain || err != nil {
			t.Errorf("Cohort's header %s: plain %v, err %v; want plain, nil", h[8:], plain, err)
		}
	}
}

// checkPlainHeader fails t where parsePlainHeader reads h as plain and
// its result is not parseHeaderJSON's.
func checkPlainHeader(t *testing.T, h []byte) {
	t.Helper()
	entries, meta, plain, err := parsePlainHeader(h)
	if !plain {
		if entries != nil || meta != nil || err != nil {
			t.Fatalf("not plain, yet returned %v, %v, %v", entries, meta, err)
		}
		return
	}
	wantEntries, wantMeta, wantErr := parseHeaderJSON(h)
	if fmt.Sprint(err) != fmt.Sprint(wantErr) {
		t.Fatalf("plain error %v, encoding/json's %v", err, wantErr)
	}
	if err != nil {
		return
	}
	if !reflect.DeepEqual(entries, wantEntries) {
		t.Fatalf("plain entries %+v, encoding/json's %+v", entries, wantEntries)
	}
	if !reflect.DeepEqual(meta, wantMeta) {
		t.Fatalf("plain metadata %#v, encoding/json's %#v", meta, wantMeta)
	}
}

func FuzzPlainHeader(f *testing.F) {
	for _, tt := range plainHeaderCases {
		f.Add([]byte(tt.h))
	}
	f.Fuzz(func(t *testing.T, h []byte) {
		if !utf8.Valid(h) || !strings.HasPrefix(strings.TrimLeft(string(h), " \t\r\n"), "{") {
			return // parseHeader refuses these before either path
		}
		checkPlainHeader(t, h)
	})
}

func TestAppendJSONString(t *testing.T) {
	for _, s := range []string{"", "fc1.weight", `a"b`, `a\b`, "tab\there", "nl\n", "\x7f", "é", "\u2028", "<a&b>", "\xff", "model.layers.0.self_attn.q_proj.weight"} {
		var want strings.Builder
		enc := json.NewEncoder(&want)
		enc.SetEscapeHTML(false)
		_ = enc.Encode(s)
		if got := string(appendJSONString([]byte("x"), s)); got != "x"+strings.TrimSuffix(want.String(), "\n") {
			t.Errorf("appendJSONString(%q) = %s, want x%s", s, got, want.String())
		}
	}
}

// BenchmarkParseHeader: a logistic regression's header, the size a
// coordinator reads 10,000 of a round at 10,000 sites, by each path.
func BenchmarkParseHeader(b *testing.B) {
	w := &Weights{Tensors: []Tensor{
		{Name: "weight", Shape: []int{784, 10}, Data: make([]float32, 7840)},
		{Name: "bias", Shape: []int{10}, Data: make([]float32, 10)},
	}}
	h, err := headerOf(w.Tensors, nil)
	if err != nil {
		b.Fatal(err)
	}
	h = h[8:]
	b.Run("plain", func(b *testing.B) {
		for b.Loop() {
			if _, _, plain, err := parsePlainHeader(h); !plain || err != nil {
				b.Fatal(plain, err)
			}
		}
	})
	b.Run("encoding-json", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := parseHeaderJSON(h); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			if _, err := headerOf(w.Tensors, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}
