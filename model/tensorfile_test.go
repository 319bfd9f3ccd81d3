package model

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"testing"
)

func TestTensorFileReadsRanges(t *testing.T) {
	w := sample()
	b, err := MarshalSafetensors(w, map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	f, err := OpenTensorFile(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	for i, st := range f.Shell().Tensors {
		if wt := w.Tensors[i]; st.Name != wt.Name || !slices.Equal(st.Shape, wt.Shape) || st.Data != nil {
			t.Fatalf("shell tensor %d is %q %v, want %q %v without values", i, st.Name, st.Shape, wt.Name, wt.Shape)
		}
	}
	for i, tn := range w.Tensors {
		if f.Shell().Tensors[i].Len() != len(tn.Data) {
			t.Fatalf("shell tensor %d has %d values, want %d", i, f.Shell().Tensors[i].Len(), len(tn.Data))
		}
		for off := 0; off < len(tn.Data); off++ {
			for n := 0; off+n <= len(tn.Data); n++ {
				got := make([]float32, n)
				if err := f.ReadFloats(i, off, got); err != nil {
					t.Fatalf("ReadFloats(%d, %d, %d): %v", i, off, n, err)
				}
				if !slices.Equal(got, tn.Data[off:off+n]) {
					t.Fatalf("ReadFloats(%d, %d, %d) = %v, want %v", i, off, n, got, tn.Data[off:off+n])
				}
			}
		}
	}
	for _, c := range []struct{ t, off, n int }{{-1, 0, 1}, {len(w.Tensors), 0, 1}, {0, -1, 1}, {0, len(w.Tensors[0].Data), 1}} {
		if err := f.ReadFloats(c.t, c.off, make([]float32, c.n)); err == nil {
			t.Errorf("ReadFloats(%d, %d, %d) past the model: no error", c.t, c.off, c.n)
		}
	}
}

func TestTensorFileRefuses(t *testing.T) {
	good, _ := MarshalSafetensors(sample(), nil)
	f16 := header(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, 0, 0x3c, 0, 0xc0)
	for _, c := range []struct {
		name string
		b    []byte
		size int64
		want error
	}{
		{"cut", good[:len(good)-4], int64(len(good) - 4), ErrTruncated},
		{"not F32", f16, int64(len(f16)), ErrMalformed},
		{"empty", nil, 0, ErrTruncated},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := OpenTensorFile(bytes.NewReader(c.b), c.size)
			if !errors.Is(err, c.want) {
				t.Fatalf("OpenTensorFile = %v, want %v", err, c.want)
			}
		})
	}
	// A file cut after its header was read: the read says so.
	f, err := OpenTensorFile(bytes.NewReader(good[:len(good)-4]), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	last := len(f.ents) - 1
	if err := f.ReadFloats(last, f.Shell().Tensors[last].Len()-1, make([]float32, 1)); !errors.Is(err, ErrTruncated) {
		t.Fatalf("reading past a cut file = %v, want ErrTruncated", err)
	}
}

func FuzzTensorFile(f *testing.F) {
	good, _ := MarshalSafetensors(sample(), nil)
	f.Add(good)
	f.Add(good[:20])
	f.Fuzz(func(t *testing.T, b []byte) {
		tf, err := OpenTensorFile(bytes.NewReader(b), int64(len(b)))
		w, _, err2 := UnmarshalSafetensors(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTruncated) {
				t.Fatalf("OpenTensorFile error %v wraps neither ErrMalformed nor ErrTruncated", err)
			}
			return
		}
		if err2 != nil {
			t.Fatalf("OpenTensorFile accepted what UnmarshalSafetensors refuses: %v", err2)
		}
		for i, tn := range w.Tensors {
			got := make([]float32, tf.Shell().Tensors[i].Len())
			if err := tf.ReadFloats(i, 0, got); err != nil {
				t.Fatalf("ReadFloats(%d): %v", i, err)
			}
			for j := range got {
				if math.Float32bits(got[j]) != math.Float32bits(tn.Data[j]) {
					t.Fatalf("tensor %d value %d: %v, decoder %v", i, j, got[j], tn.Data[j])
				}
			}
		}
	})
}
