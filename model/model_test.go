package model

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func sample() *Weights {
	return &Weights{Tensors: []Tensor{
		{Name: "fc2.weight", Shape: []int{2, 3}, Data: []float32{1, 2, 3, 4, 5, 6}},
		{Name: "fc1.bias", Shape: []int{2}, Data: []float32{-1.5, 0.25}},
		{Name: "scale", Shape: []int{}, Data: []float32{7}},
	}}
}

func TestSafetensorsRoundTripKeepsOrder(t *testing.T) {
	w := sample()
	b, err := MarshalSafetensors(w, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	if hl := binary.LittleEndian.Uint64(b); (8+hl)%8 != 0 {
		t.Errorf("header length %d leaves the data unaligned", hl)
	}
	got, meta, err := UnmarshalSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(w, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	if meta["format"] != "pt" {
		t.Errorf("metadata = %v, want format=pt", meta)
	}
}

// TestSafetensorsReference decodes a file written by HuggingFace's
// safetensors' layout: testdata/reference.safetensors holds
// a = arange(6).reshape(2,3) as F32 and b = [0.5, -2] as F16, metadata
// {"framework": "pt"}. The safetensors Python package is not packaged for
// Debian, so the file was written by hand from the format's spec with numpy,
// laid out as the reference writes it; its equivalent is
//
//	safetensors.numpy.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3),
//	    "b": np.array([0.5, -2], dtype=np.float16)}, "reference.safetensors", {"framework": "pt"})
func TestSafetensorsReference(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("testdata", "reference.safetensors"))
	if err != nil {
		t.Skipf("no reference file: %v", err)
	}
	got, meta, err := UnmarshalSafetensors(b)
	if err != nil {
		t.Fatal(err)
	}
	want := &Weights{Tensors: []Tensor{
		{Name: "a", Shape: []int{2, 3}, Data: []float32{0, 1, 2, 3, 4, 5}},
		{Name: "b", Shape: []int{2}, Data: []float32{0.5, -2}},
	}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("decoding the reference file (-want +got):\n%s", diff)
	}
	if meta["framework"] != "pt" {
		t.Errorf("metadata = %v", meta)
	}
}

func TestSafetensorsMalformed(t *testing.T) {
	good, _ := MarshalSafetensors(sample(), nil)
	header := func(h string) []byte {
		b := make([]byte, 8, 8+len(h))
		binary.LittleEndian.PutUint64(b, uint64(len(h)))
		return append(b, h...)
	}
	tests := []struct {
		name string
		in   []byte
		want error
		msg  string
	}{
		{"empty", nil, ErrTruncated, "too short"},
		{"header cut", good[:20], ErrTruncated, "header says"},
		{"data cut", good[:len(good)-3], ErrTruncated, "ends at byte"},
		{"huge header", binary.LittleEndian.AppendUint64(nil, 1<<40), ErrMalformed, "exceeds"},
		{"not json", header("{nope"), ErrMalformed, "header JSON"},
		{"bad dtype", header(`{"a":{"dtype":"I8","shape":[1],"data_offsets":[0,1]}}`), ErrMalformed, "dtype"},
		{"gap", append(header(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`), make([]byte, 8)...), ErrMalformed, "do not follow"},
		{"shape mismatch", append(header(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`), make([]byte, 8)...), ErrMalformed, "do not follow"},
		{"overflow shape", header(`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,0]}}`), ErrMalformed, "too large"},
		{"negative dim", header(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,0]}}`), ErrMalformed, "negative"},
		{"trailing bytes", append(append([]byte{}, good...), 1, 2), ErrMalformed, "after the last tensor"},
		{"bad metadata", header(`{"__metadata__":{"a":1}}`), ErrMalformed, "__metadata__"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := UnmarshalSafetensors(tt.in)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("UnmarshalSafetensors = %v, want %v mentioning %q", err, tt.want, tt.msg)
			}
		})
	}
}

func TestMarshalRejectsBadWeights(t *testing.T) {
	for _, w := range []*Weights{
		{Tensors: []Tensor{{Name: "a", Shape: []int{2}, Data: []float32{1}}}},
		{Tensors: []Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}, {Name: "a", Shape: []int{1}, Data: []float32{1}}}},
		{Tensors: []Tensor{{Name: "", Shape: []int{1}, Data: []float32{1}}}},
	} {
		if _, err := MarshalSafetensors(w, nil); err == nil {
			t.Errorf("MarshalSafetensors(%+v) = nil error, want one", w)
		}
	}
}

func TestHalfToFloat(t *testing.T) {
	tests := []struct {
		in   uint16
		want float32
	}{
		{0x3c00, 1}, {0xc000, -2}, {0x3800, 0.5}, {0x0000, 0}, {0x7bff, 65504},
		{0x0001, float32(math.Pow(2, -24))}, {0x7c00, float32(math.Inf(1))},
	}
	for _, tt := range tests {
		if got := halfToFloat(tt.in); got != tt.want {
			t.Errorf("halfToFloat(%#04x) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestMath(t *testing.T) {
	w := sample()
	if got := w.NumParams(); got != 9 {
		t.Errorf("NumParams = %d, want 9", got)
	}
	c := w.Clone()
	c.Tensors[0].Data[0] = 100
	if w.Tensors[0].Data[0] != 1 {
		t.Error("Clone shares data with the original")
	}
	if err := c.Axpy(2, w); err != nil {
		t.Fatal(err)
	}
	if got := c.Tensors[1].Data; !cmp.Equal(got, []float32{-4.5, 0.75}) {
		t.Errorf("Axpy = %v, want [-4.5 0.75]", got)
	}
	d, _ := Sub(c, w)
	if got := d.Tensors[2].Data[0]; got != 14 {
		t.Errorf("Sub = %v, want 14", got)
	}
	if got, want := w.L2Norm(), math.Sqrt(1+4+9+16+25+36+2.25+0.0625+49); math.Abs(got-want) > 1e-9 {
		t.Errorf("L2Norm = %v, want %v", got, want)
	}
	other := sample()
	other.Tensors[0].Shape = []int{3, 2}
	if err := w.Compatible(other); !errors.Is(err, ErrIncompatible) || !strings.Contains(err.Error(), "fc2.weight") {
		t.Errorf("Compatible(other shape) = %v, want ErrIncompatible naming fc2.weight", err)
	}
	other = sample()
	other.Tensors[1].Data[1] = float32(math.Inf(-1))
	if err := other.CheckFinite(); !errors.Is(err, ErrNotFinite) || !strings.Contains(err.Error(), `"fc1.bias"`) {
		t.Errorf("CheckFinite = %v, want ErrNotFinite naming fc1.bias", err)
	}
}

func TestAssembler(t *testing.T) {
	data := bytes.Repeat([]byte("cohort"), 1000)
	sum := sha256.Sum256(data)
	a, _ := NewAssembler(int64(len(data)))
	for off := 0; off < len(data); off += 1000 {
		if err := a.Write(data[off:min(off+1000, len(data))]); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.Finish(sum[:])
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Finish = %v", err)
	}
	a, _ = NewAssembler(10)
	if err := a.Write(make([]byte, 11)); !errors.Is(err, ErrOverflow) {
		t.Errorf("Write past the announced size = %v, want ErrOverflow", err)
	}
	a, _ = NewAssembler(10)
	_ = a.Write(make([]byte, 5))
	if _, err := a.Finish(sum[:]); !errors.Is(err, ErrTruncated) {
		t.Errorf("Finish short = %v, want ErrTruncated", err)
	}
	a, _ = NewAssembler(5)
	_ = a.Write(make([]byte, 5))
	if _, err := a.Finish(sum[:]); !errors.Is(err, ErrChecksum) {
		t.Errorf("Finish with a wrong sum = %v, want ErrChecksum", err)
	}
	if _, err := NewAssembler(-1); err == nil {
		t.Error("NewAssembler(-1) = nil error")
	}
}

func TestFileRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "w.safetensors")
	if err := WriteSafetensorsFile(p, sample(), nil); err != nil {
		t.Fatal(err)
	}
	got, _, err := ReadSafetensorsFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sample(), got); diff != "" {
		t.Error(diff)
	}
}

func FuzzDecodeSafetensors(f *testing.F) {
	good, _ := MarshalSafetensors(sample(), map[string]string{"k": "v"})
	f.Add(good)
	f.Add(good[:30])
	f.Add([]byte{})
	f.Add(binary.LittleEndian.AppendUint64(nil, 2))
	if b, err := os.ReadFile(filepath.Join("testdata", "reference.safetensors")); err == nil {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		w, _, err := UnmarshalSafetensors(b)
		if err != nil {
			return
		}
		// Whatever decodes must encode and decode to the same weights.
		b2, err := MarshalSafetensors(w, nil)
		if err != nil {
			t.Fatalf("re-encoding decoded weights: %v", err)
		}
		w2, _, err := UnmarshalSafetensors(b2)
		if err != nil {
			t.Fatalf("decoding re-encoded weights: %v", err)
		}
		if w.NumParams() != w2.NumParams() || len(w.Tensors) != len(w2.Tensors) {
			t.Fatalf("re-encoding changed the weights")
		}
	})
}

func FuzzAssembler(f *testing.F) {
	f.Add([]byte("hello world"), uint8(3), int64(11))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8, total int64) {
		a, err := NewAssembler(total)
		if err != nil {
			return
		}
		size := int(chunk) + 1
		for off := 0; off < len(data); off += size {
			if err := a.Write(data[off:min(off+size, len(data))]); err != nil {
				if int64(len(data)) <= total {
					t.Fatalf("Write failed within the announced size: %v", err)
				}
				return
			}
		}
		sum := sha256.Sum256(data)
		got, err := a.Finish(sum[:])
		if (err == nil) != (int64(len(data)) == total) {
			t.Fatalf("Finish(%d of %d bytes) = %v", len(data), total, err)
		}
		if err == nil && !bytes.Equal(got, data) {
			t.Fatal("reassembled bytes differ")
		}
	})
}

func BenchmarkMarshalSafetensors(b *testing.B) {
	w := &Weights{Tensors: []Tensor{{Name: "w", Shape: []int{25 << 20}, Data: make([]float32, 25<<20)}}}
	b.SetBytes(w.Bytes())
	for b.Loop() {
		if _, err := MarshalSafetensors(w, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnmarshalSafetensors(b *testing.B) {
	w := &Weights{Tensors: []Tensor{{Name: "w", Shape: []int{25 << 20}, Data: make([]float32, 25<<20)}}}
	enc, _ := MarshalSafetensors(w, nil)
	b.SetBytes(w.Bytes())
	for b.Loop() {
		if _, _, err := UnmarshalSafetensors(enc); err != nil {
			b.Fatal(err)
		}
	}
}

func TestCheckFiniteLarge(t *testing.T) {
	for _, at := range []int{0, 1 << 18, 3<<18 + 5, 1<<20 - 1} {
		w := &Weights{Tensors: []Tensor{{Name: "big", Shape: []int{1 << 20}, Data: make([]float32, 1<<20)}}}
		w.Tensors[0].Data[at] = float32(math.NaN())
		w.Tensors[0].Data[1<<20-1] = float32(math.Inf(1))
		err := w.CheckFinite()
		if !errors.Is(err, ErrNotFinite) || !strings.Contains(err.Error(), fmt.Sprintf("index %d", at)) {
			t.Errorf("NaN at %d: CheckFinite = %v, want the first one named", at, err)
		}
	}
	if err := (&Weights{Tensors: []Tensor{{Name: "ok", Shape: []int{1 << 20}, Data: make([]float32, 1<<20)}}}).CheckFinite(); err != nil {
		t.Errorf("CheckFinite(zeros) = %v", err)
	}
}
