package model

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"slices"
	"strings"
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

func TestAssembler(t *testing.T) {
	data := bytes.Repeat([]byte("cohort"), 1000)
	sum := sha256.Sum256(data)
	a, err := NewAssembler(int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	for off, c := range Chunks(data, 1000) {
		if err := a.WriteAt(off, c); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.Finish(sum[:])
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Finish = %d bytes, %v, want the data back", len(got), err)
	}
	if err := a.Write([]byte{1}); !errors.Is(err, ErrOverflow) {
		t.Errorf("Write after Finish = %v, want ErrOverflow", err)
	}

	tests := []struct {
		name  string
		total int64
		do    func(a *Assembler) error
		want  error
		msg   string
	}{
		{"past the size", 10, func(a *Assembler) error { return a.Write(make([]byte, 11)) }, ErrOverflow, "ends at byte 11, 10 announced"},
		{"resent", 10, func(a *Assembler) error { _ = a.WriteAt(0, make([]byte, 5)); return a.WriteAt(0, make([]byte, 5)) }, ErrOutOfOrder, "at byte 0, want 5"},
		{"skipped", 10, func(a *Assembler) error { return a.WriteAt(5, make([]byte, 5)) }, ErrOutOfOrder, "at byte 5, want 0"},
		{"short", 10, func(a *Assembler) error { _ = a.Write(make([]byte, 5)); _, err := a.Finish(sum[:]); return err }, ErrTruncated, "got 5 of 10 bytes"},
		{"wrong sum", 5, func(a *Assembler) error { _ = a.Write(make([]byte, 5)); _, err := a.Finish(sum[:]); return err }, ErrChecksum, "hash to"},
		{"short sum", 0, func(a *Assembler) error { _, err := a.Finish(sum[:4]); return err }, ErrChecksum, "has 4 bytes, want 32"},
	}
	for _, tt := range tests {
		a, err := NewAssembler(tt.total)
		if err != nil {
			t.Fatal(err)
		}
		if err := tt.do(a); !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: %v, want %v mentioning %q", tt.name, err, tt.want, tt.msg)
		}
	}
	// A refused chunk leaves the Assembler as it was.
	a, _ = NewAssembler(4)
	_ = a.Write([]byte("ab"))
	_ = a.Write([]byte("xyz"))
	_ = a.WriteAt(3, []byte("x"))
	_ = a.Write([]byte("cd"))
	want := sha256.Sum256([]byte("abcd"))
	if got, err := a.Finish(want[:]); err != nil || string(got) != "abcd" {
		t.Errorf("after refused chunks Finish = %q, %v, want abcd", got, err)
	}
	empty := sha256.Sum256(nil)
	if a, _ := NewAssembler(0); a != nil {
		if got, err := a.Finish(empty[:]); err != nil || len(got) != 0 {
			t.Errorf("Finish of an empty stream = %q, %v, want nothing and nil", got, err)
		}
	}
	for _, total := range []int64{-1, MaxAssembly + 1} {
		if _, err := NewAssembler(total); err == nil {
			t.Errorf("NewAssembler(%d) = nil error, want one", total)
		}
	}
}

// FuzzAssembler feeds arbitrary chunk sequences: ops is read in pairs
// (offset shift, length), the offset shifted from the expected one by a
// small signed amount. The Assembler must accept exactly the in-order,
// in-bounds chunks and reassemble what they carried.
func FuzzAssembler(f *testing.F) {
	f.Add([]byte("hello world"), []byte{0, 3, 0, 3, 0, 5}, int64(11))
	f.Add([]byte("hello world"), []byte{0, 3, 1, 3, 255, 2, 0, 100}, int64(11))
	f.Add([]byte{}, []byte{}, int64(0))
	f.Add([]byte("abc"), []byte{0, 4}, int64(2))
	f.Fuzz(func(t *testing.T, data, ops []byte, total int64) {
		a, err := NewAssembler(total)
		if err != nil {
			if total >= 0 && total <= MaxAssembly {
				t.Fatalf("NewAssembler(%d) = %v", total, err)
			}
			return
		}
		var want []byte
		pos := 0 // next unread byte of data
		for i := 0; i+1 < len(ops); i += 2 {
			shift, n := int64(int8(ops[i])), int(ops[i+1])
			n = min(n, len(data)-pos)
			chunk := data[pos : pos+n]
			off := a.Received() + shift
			inOrder, fits := shift == 0, a.Received()+int64(n) <= total
			err := a.WriteAt(off, chunk)
			switch {
			case inOrder && fits:
				if err != nil {
					t.Fatalf("WriteAt(%d, %d bytes) = %v, want nil", off, n, err)
				}
				want = append(want, chunk...)
				pos += n
			case !inOrder && !errors.Is(err, ErrOutOfOrder):
				t.Fatalf("WriteAt(%d, …) with %d received = %v, want ErrOutOfOrder", off, a.Received(), err)
			case inOrder && !errors.Is(err, ErrOverflow):
				t.Fatalf("WriteAt past %d = %v, want ErrOverflow", total, err)
			}
			if a.Received() != int64(len(want)) {
				t.Fatalf("Received() = %d, want %d", a.Received(), len(want))
			}
		}
		sum := sha256.Sum256(want)
		got, err := a.Finish(sum[:])
		if (err == nil) != (int64(len(want)) == total) {
			t.Fatalf("Finish(%d of %d bytes) = %v", len(want), total, err)
		}
		if err == nil && !bytes.Equal(got, want) {
			t.Fatal("reassembled bytes differ")
		}
	})
}

// A reserved Assembler takes the same chunks and refuses the same ones as
// a growing one, and holds the announced size from the start.
func TestAssemblerReserve(t *testing.T) {
	data := bytes.Repeat([]byte("cohort"), 1000)
	sum := sha256.Sum256(data)
	a, err := NewAssembler(int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Write(data[:100]); err != nil {
		t.Fatal(err)
	}
	a.Reserve()
	if cap(a.buf) != len(data) || a.Received() != 100 {
		t.Fatalf("after Reserve: cap %d, received %d; want %d, 100", cap(a.buf), a.Received(), len(data))
	}
	if err := a.WriteAt(0, data[:10]); !errors.Is(err, ErrOutOfOrder) {
		t.Errorf("a resent chunk: %v, want ErrOutOfOrder", err)
	}
	if err := a.Write(append(slices.Clone(data[100:]), 'x')); !errors.Is(err, ErrOverflow) {
		t.Errorf("a chunk past the announced size: %v, want ErrOverflow", err)
	}
	for off, c := range Chunks(data[100:], 333) {
		if err := a.WriteAt(100+off, c); err != nil {
			t.Fatal(err)
		}
	}
	got, err := a.Finish(sum[:])
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Finish = %d bytes, %v", len(got), err)
	}
}
