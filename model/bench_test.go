package model

import (
	"bytes"
	"io"
	"math/rand/v2"
	"path/filepath"
	"testing"
)

// benchModel is a 100 MiB model: 25 Mi float32 parameters in 64 tensors
// of mixed sizes, like a real network's layers.
func benchModel() *Weights {
	r := rand.New(rand.NewPCG(1, 2))
	const params = 25 << 20
	w := &Weights{}
	left := params
	for i := 0; i < 64; i++ {
		n := params / 128
		if i%2 == 1 {
			n = params*3/128 - 1
		}
		if i == 63 {
			n = left
		}
		left -= n
		d := make([]float32, n)
		for j := range d {
			d[j] = float32(r.NormFloat64())
		}
		w.Tensors = append(w.Tensors, Tensor{Name: "layer" + string(rune('A'+i%26)) + string(rune('a'+i/26)), Shape: []int{n}, Data: d})
	}
	return w
}

// BenchmarkMarshalSafetensors: MB/s of float32 payload encoded into one
// new buffer.
func BenchmarkMarshalSafetensors(b *testing.B) {
	w := benchModel()
	b.SetBytes(w.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := MarshalSafetensors(w, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeSafetensors: streaming into a writer that keeps the bytes
// (a reused buffer, so the figure is the encoder's copy, not page faults).
func BenchmarkEncodeSafetensors(b *testing.B) {
	w := benchModel()
	var buf bytes.Buffer
	buf.Grow(int(w.Bytes()) + 1<<16)
	b.SetBytes(w.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		buf.Reset()
		if err := EncodeSafetensors(&buf, w, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeSafetensorsDiscard: the encoder's own cost when the
// writer takes the tensors' memory as it is (no copy at all).
func BenchmarkEncodeSafetensorsDiscard(b *testing.B) {
	w := benchModel()
	b.SetBytes(w.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		if err := EncodeSafetensors(io.Discard, w, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUnmarshalSafetensors: bytes in memory to Weights.
func BenchmarkUnmarshalSafetensors(b *testing.B) {
	w := benchModel()
	enc, _ := MarshalSafetensors(w, nil)
	b.SetBytes(w.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := UnmarshalSafetensors(enc); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeSafetensorsNoLimit: a stream of unknown length with no
// limit, so tensor memory grows as data arrives (the defensive path).
func BenchmarkDecodeSafetensorsNoLimit(b *testing.B) {
	w := benchModel()
	enc, _ := MarshalSafetensors(w, nil)
	b.SetBytes(w.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := DecodeSafetensors(bytes.NewReader(enc), 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadSafetensorsFile: from a file (page cache warm).
func BenchmarkReadSafetensorsFile(b *testing.B) {
	w := benchModel()
	p := filepath.Join(b.TempDir(), "m.safetensors")
	if err := WriteSafetensorsFile(p, w, nil); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(w.Bytes())
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := ReadSafetensorsFile(p); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCheckFinite: the validation pass over 100 MiB.
func BenchmarkCheckFinite(b *testing.B) {
	w := benchModel()
	b.SetBytes(w.Bytes())
	for b.Loop() {
		if err := w.CheckFinite(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAxpy: w += a·x over 100 MiB (bytes of x read).
func BenchmarkAxpy(b *testing.B) {
	w, x := benchModel(), benchModel()
	b.SetBytes(x.Bytes())
	for b.Loop() {
		if err := w.Axpy(1e-3, x); err != nil {
			b.Fatal(err)
		}
	}
}
