package model

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChunks(t *testing.T) {
	data := []byte("abcdefghij")
	type chunk struct {
		Off  int64
		Data string
	}
	tests := []struct {
		data []byte
		size int
		want []chunk
	}{
		{data, 4, []chunk{{0, "abcd"}, {4, "efgh"}, {8, "ij"}}},
		{data, 5, []chunk{{0, "abcde"}, {5, "fghij"}}},
		{data, 100, []chunk{{0, "abcdefghij"}}},
		{nil, 4, nil},
	}
	for _, tt := range tests {
		var got []chunk
		for off, c := range Chunks(tt.data, tt.size) {
			got = append(got, chunk{off, string(c)})
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Chunks(%q, %d) (-want +got):\n%s", tt.data, tt.size, diff)
		}
	}
	big := make([]byte, 2*ChunkSize+1)
	var n int
	for off, c := range Chunks(big, 0) {
		if off != int64(n)*ChunkSize || len(c) > ChunkSize {
			t.Errorf("Chunks(%d bytes, 0): chunk %d at %d of %d bytes", len(big), n, off, len(c))
		}
		n++
	}
	if n != 3 {
		t.Errorf("Chunks(%d bytes, 0) made %d chunks, want 3", len(big), n)
	}
	for range Chunks(data, 1) {
		break // stopping early must not panic
	}
}
