package model

import (
	"bytes"
	"errors"
	"io"
	"testing"
)

// TestTransformMatchesEncode checks that TransformSafetensors writes, byte
// for byte, what encoding the decoded weights changed by the same function
// writes, and fails where decoding fails, with the same error.
func TestTransformMatchesEncode(t *testing.T) {
	big := &Weights{Tensors: []Tensor{
		{Name: "big", Shape: []int{2, ScanChunk/2 + 3}, Data: make([]float32, ScanChunk+6)},
		{Name: "empty", Shape: []int{0, 4}, Data: []float32{}},
		{Name: "scalar", Data: []float32{2}},
		{Name: "odd", Shape: []int{3}, Data: []float32{-1, 0.5, 7}},
	}}
	for i := range big.Tensors[0].Data {
		big.Tensors[0].Data[i] = float32(i) / 3
	}
	bigB, _ := MarshalSafetensors(big, map[string]string{"format": "pt"}) // metadata is dropped
	half := header(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[],"data_offsets":[4,6]}}`, 0, 0x3c, 0, 0xc0, 0x80, 0x3f)
	// f depends on the tensor and the index, so that a run handed out at
	// the wrong offset shows.
	f := func(t, off int, vals []float32) error {
		for i := range vals {
			vals[i] = vals[i]*2 + float32(t) + float32(off+i)*1e-3
		}
		return nil
	}
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
			var want []byte
			ws, _, wantErr := DecodeSafetensors(bytes.NewReader(tt.b), tt.limit)
			if wantErr == nil {
				for i, tn := range ws.Tensors {
					_ = f(i, 0, tn.Data)
				}
				want, wantErr = MarshalSafetensors(ws, nil)
				if wantErr != nil {
					t.Fatal(wantErr)
				}
			}
			var got bytes.Buffer
			n, err := TransformSafetensors(&got, bytes.NewReader(tt.b), tt.limit, nil, f)
			if (err == nil) != (wantErr == nil) || (err != nil && err.Error() != wantErr.Error()) {
				t.Fatalf("TransformSafetensors() = %v, want DecodeSafetensors' %v", err, wantErr)
			}
			if err != nil {
				return
			}
			if n != int64(len(want)) {
				t.Errorf("TransformSafetensors() wrote %d bytes, says %d, want %d", got.Len(), n, len(want))
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("TransformSafetensors() wrote %d bytes that differ from MarshalSafetensors' %d", got.Len(), len(want))
			}
		})
	}
}

// failWriter fails every write.
type failWriter struct{ err error }

func (w failWriter) Write([]byte) (int, error) { return 0, w.err }

// TestTransformErrors checks that an error of the function ends the
// transform as is and a writer's is wrapped.
func TestTransformErrors(t *testing.T) {
	b, _ := MarshalSafetensors(&Weights{Tensors: []Tensor{{Name: "a", Shape: []int{2}, Data: []float32{1, 2}}}}, nil)
	errF, errW := errors.New("f failed"), errors.New("disk full")
	tests := []struct {
		name string
		f    error
		bad  bool // the writer fails
		want error
	}{
		{name: "function", f: errF, want: errF},
		{name: "writer", bad: true, want: errW},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w io.Writer = &bytes.Buffer{}
			if tt.bad {
				w = failWriter{errW}
			}
			_, err := TransformSafetensors(w, bytes.NewReader(b), 0, nil, func(int, int, []float32) error { return tt.f })
			if !errors.Is(err, tt.want) {
				t.Errorf("TransformSafetensors() = %v, want %v", err, tt.want)
			}
			if unwrapped := err == errF; unwrapped != (tt.want == errF) { // the function's comes back as is
				t.Errorf("TransformSafetensors() = %v, unwrapped %v, want %v", err, unwrapped, !unwrapped)
			}
		})
	}
}

// TestReencodeMatchesEncode checks that ReencodeSafetensors writes, byte
// for byte, what encoding the decoded weights in the wanted order writes,
// whatever order and dtype the file holds them in, and refuses a file
// whose tensors are not the wanted ones.
func TestReencodeMatchesEncode(t *testing.T) {
	ws := &Weights{Tensors: []Tensor{
		{Name: "w", Shape: []int{2, ScanChunk/2 + 1}, Data: make([]float32, ScanChunk+2)},
		{Name: "b", Shape: []int{3}, Data: []float32{1, -2, 3}},
		{Name: "s", Data: []float32{0.5}},
	}}
	for i := range ws.Tensors[0].Data {
		ws.Tensors[0].Data[i] = float32(i) / 7
	}
	reversed := &Weights{Tensors: []Tensor{ws.Tensors[2], ws.Tensors[0], ws.Tensors[1]}}
	revB, _ := MarshalSafetensors(reversed, map[string]string{"format": "pt"})
	want, _ := MarshalSafetensors(ws, nil)
	half := header(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"BF16","shape":[],"data_offsets":[4,6]}}`, 0, 0x3c, 0, 0xc0, 0x80, 0x3f)
	halfWant, _ := MarshalSafetensors(&Weights{Tensors: []Tensor{{Name: "b", Data: []float32{1}}, {Name: "a", Shape: []int{2}, Data: []float32{1, -2}}}}, nil)
	shell := func(ts ...Tensor) *Weights {
		w := &Weights{}
		for _, t := range ts {
			w.Tensors = append(w.Tensors, Tensor{Name: t.Name, Shape: t.Shape})
		}
		return w
	}
	tests := []struct {
		name    string
		file    []byte
		want    *Weights
		out     []byte
		wantErr error
	}{
		{"reordered, metadata dropped", revB, shell(ws.Tensors...), want, nil},
		{"half precision, reordered", half, shell(Tensor{Name: "b"}, Tensor{Name: "a", Shape: []int{2}}), halfWant, nil},
		{"a tensor missing", revB, shell(append(ws.Tensors, Tensor{Name: "x", Shape: []int{1}})...), nil, ErrIncompatible},
		{"a tensor extra", revB, shell(ws.Tensors[:2]...), nil, ErrIncompatible},
		{"a shape differs", revB, shell(ws.Tensors[0], Tensor{Name: "b", Shape: []int{1, 3}}, ws.Tensors[2]), nil, ErrIncompatible},
		{"truncated", revB[:len(revB)-5], shell(ws.Tensors...), nil, ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got bytes.Buffer
			n, err := ReencodeSafetensors(&got, bytes.NewReader(tt.file), int64(len(tt.file)), tt.want, nil)
			if !errors.Is(err, tt.wantErr) || (err != nil) != (tt.wantErr != nil) {
				t.Fatalf("ReencodeSafetensors() = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if n != int64(len(tt.out)) || !bytes.Equal(got.Bytes(), tt.out) {
				t.Errorf("ReencodeSafetensors() wrote %d bytes (says %d) that differ from MarshalSafetensors' %d", got.Len(), n, len(tt.out))
			}
		})
	}
	errCheck := errors.New("not finite")
	_, err := ReencodeSafetensors(io.Discard, bytes.NewReader(revB), int64(len(revB)), shell(ws.Tensors...), func(t, off int, vals []float32) error {
		if t == 1 {
			return errCheck
		}
		return nil
	})
	if err != errCheck {
		t.Errorf("ReencodeSafetensors() with a failing check = %v, want its error as is", err)
	}
}
