package model

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// scanAll collects what ScanSafetensors hands out into Weights.
func scanAll(b []byte, limit int64) (*Weights, map[string]string, error) {
	var w *Weights
	meta, err := ScanSafetensors(bytes.NewReader(b), limit, func(shell *Weights) error {
		w = shell
		return nil
	}, func(t, off int, vals []float32) error {
		if off != len(w.Tensors[t].Data) {
			return errors.New("values out of order")
		}
		w.Tensors[t].Data = append(w.Tensors[t].Data, vals...)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for i := range w.Tensors {
		if w.Tensors[i].Data == nil {
			w.Tensors[i].Data = []float32{}
		}
	}
	return w, meta, nil
}

// TestScanMatchesDecode checks that scanning a file hands out the values
// DecodeSafetensors decodes, chunk after chunk, and refuses what it
// refuses with the same errors.
func TestScanMatchesDecode(t *testing.T) {
	big := &Weights{Tensors: []Tensor{{Name: "big", Shape: []int{ScanChunk + 5}, Data: make([]float32, ScanChunk+5)}, {Name: "s", Data: []float32{2}}}}
	for i := range big.Tensors[0].Data {
		big.Tensors[0].Data[i] = float32(i)
	}
	bigB, _ := MarshalSafetensors(big, map[string]string{"k": "v"})
	half := header(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[],"data_offsets":[4,6]}}`, 0, 0x3c, 0, 0xc0, 0x80, 0x3f)
	tests := []struct {
		name  string
		b     []byte
		limit int64
	}{
		{"chunked", bigB, 0},
		{"half precision", half, 0},
		{"truncated", bigB[:len(bigB)/2], 0},
		{"too large", bigB, 1000},
		{"empty", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want, wantMeta, wantErr := DecodeSafetensors(bytes.NewReader(tt.b), tt.limit)
			got, gotMeta, err := scanAll(tt.b, tt.limit)
			if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("ScanSafetensors() = %v, want DecodeSafetensors' %v", err, wantErr)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("scanned values (-decoded +scanned):\n%s", diff)
			}
			if diff := cmp.Diff(wantMeta, gotMeta); diff != "" {
				t.Errorf("scanned metadata (-decoded +scanned):\n%s", diff)
			}
		})
	}
}

// TestFloatsRoundTrip checks that ReadFloats reads what WriteFloats wrote,
// NaN payloads included, and reports a short stream.
func TestFloatsRoundTrip(t *testing.T) {
	in := []float32{1, -2.5, float32(math.Inf(1)), math.Float32frombits(0x7fc00001), 0}
	var b bytes.Buffer
	if err := WriteFloats(&b, in); err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(in)+1)
	n, err := ReadFloats(bytes.NewReader(b.Bytes()), out)
	if n != len(in) || !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadFloats = %d, %v; want %d, unexpected EOF", n, err, len(in))
	}
	for i, v := range in {
		if math.Float32bits(out[i]) != math.Float32bits(v) {
			t.Errorf("value %d = %v, want %v", i, out[i], v)
		}
	}
}

// FuzzScanSafetensors checks that scanning agrees with decoding on every
// input: the same values, or an error where decoding fails.
func FuzzScanSafetensors(f *testing.F) {
	good, _ := MarshalSafetensors(sample(), map[string]string{"k": "v"})
	f.Add(good)
	f.Add(good[:30])
	f.Add([]byte{})
	f.Add(binary.LittleEndian.AppendUint64(nil, 2))
	files, _ := filepath.Glob(filepath.Join("testdata", "*.safetensors"))
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want, _, wantErr := DecodeSafetensors(bytes.NewReader(b), int64(len(b)))
		got, _, err := scanAll(b, int64(len(b)))
		if (err == nil) != (wantErr == nil) {
			t.Fatalf("ScanSafetensors() = %v, DecodeSafetensors() = %v", err, wantErr)
		}
		if err == nil && !cmp.Equal(want, got, cmp.Comparer(func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) })) {
			t.Fatalf("scanned values differ from decoded ones")
		}
	})
}
