package model

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// chunksOf returns a next function that yields b in chunks of size bytes,
// then io.EOF (or end, when not nil).
func chunksOf(b []byte, size int, end error) func() ([]byte, error) {
	if end == nil {
		end = io.EOF
	}
	return func() ([]byte, error) {
		if len(b) == 0 {
			return nil, end
		}
		c := b[:min(size, len(b))]
		b = b[len(c):]
		return bytes.Clone(c), nil
	}
}

// decodeChunks decodes b sent in chunks of size bytes as total bytes of
// SHA-256 sum, as the coordinator and the sites do.
func decodeChunks(b []byte, size int, total int64, sum []byte, end error) (*Weights, error) {
	r, err := NewChunkReader(total, chunksOf(b, size, end))
	if err != nil {
		return nil, err
	}
	w, _, err := DecodeSafetensors(r, total)
	if err != nil {
		return nil, err
	}
	if err := r.Finish(sum); err != nil {
		return nil, err
	}
	return w, nil
}

func TestChunkReaderDecodes(t *testing.T) {
	good, err := MarshalSafetensors(sample(), nil)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(good)
	n := int64(len(good))
	broken := errors.New("connection reset")
	tests := []struct {
		name  string
		b     []byte
		total int64
		sum   []byte
		end   error
		want  error // nil: decodes to sample()
		alt   error // also accepted (which comes first depends on the chunks)
	}{
		{"whole", good, n, sum[:], nil, nil, nil},
		{"truncated", good[:n-3], n, sum[:], nil, ErrTruncated, nil},
		{"announced too small", good, n - 4, sum[:], nil, ErrTooLarge, ErrOverflow},
		{"trailing bytes", append(bytes.Clone(good), 1, 2, 3), n + 3, sum[:], nil, ErrMalformed, nil},
		{"more than announced", append(bytes.Clone(good), 1, 2, 3), n, sum[:], nil, ErrOverflow, nil},
		{"wrong checksum", good, n, make([]byte, 32), nil, ErrChecksum, nil},
		{"no checksum", good, n, nil, nil, ErrChecksum, nil},
		{"transport error", good[:n/2], n, sum[:], broken, broken, nil},
	}
	for _, tt := range tests {
		for _, size := range []int{1, 7, 64, 1 << 20} {
			w, err := decodeChunks(tt.b, size, tt.total, tt.sum, tt.end)
			if tt.want == nil {
				if err != nil {
					t.Errorf("%s, chunks of %d: decode = %v, want success", tt.name, size, err)
				} else if diff := cmp.Diff(sample(), w); diff != "" {
					t.Errorf("%s, chunks of %d: decoded weights differ (-want +got):\n%s", tt.name, size, diff)
				}
				continue
			}
			if !errors.Is(err, tt.want) && (tt.alt == nil || !errors.Is(err, tt.alt)) {
				t.Errorf("%s, chunks of %d: decode = %v, want %v", tt.name, size, err, tt.want)
			}
		}
	}
	if _, err := NewChunkReader(-1, chunksOf(nil, 1, nil)); err == nil {
		t.Errorf("NewChunkReader(-1) = nil error, want one")
	}
}

func TestChunkWriter(t *testing.T) {
	data := bytes.Repeat([]byte("cohort!"), 1001)
	feeds := map[string]func(w *ChunkWriter) error{
		"writes of 333": func(w *ChunkWriter) error {
			for lo := 0; lo < len(data); lo += 333 {
				if _, err := w.Write(data[lo:min(lo+333, len(data))]); err != nil {
					return err
				}
			}
			return nil
		},
		"read from, short reads": func(w *ChunkWriter) error {
			n, err := io.Copy(w, iotest.HalfReader(bytes.NewReader(data)))
			if n != int64(len(data)) {
				t.Errorf("io.Copy copied %d bytes, want %d", n, len(data))
			}
			return err
		},
		"a write, then read from": func(w *ChunkWriter) error {
			if _, err := w.Write(data[:10]); err != nil {
				return err
			}
			_, err := w.ReadFrom(iotest.OneByteReader(bytes.NewReader(data[10:])))
			return err
		},
	}
	for name, feed := range feeds {
		for _, pooled := range []bool{false, true} {
			for _, size := range []int{1, 5, 7, 1000, 1 << 20, 0} {
				var got []byte
				var offs []int64
				given := map[*byte]bool{}
				w := NewChunkWriter(size, func(off int64, p []byte) error {
					if off != int64(len(got)) {
						t.Errorf("%s, chunks of %d: chunk at %d, want %d", name, size, off, len(got))
					}
					if pooled && !given[&p[:1][0]] {
						t.Errorf("%s, chunks of %d: chunk at %d is not in a buffer from Buffers", name, size, off)
					}
					offs = append(offs, off)
					got = append(got, p...)
					return nil
				})
				if pooled {
					w.Buffers(func(n int) []byte {
						b := make([]byte, n+3) // larger than asked: chunks keep their size
						given[&b[0]] = true
						return b
					})
				}
				if err := feed(w); err != nil {
					t.Fatal(err)
				}
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, data) || w.Offset() != int64(len(data)) {
					t.Errorf("%s, chunks of %d: wrote %d bytes (offset %d), want %d", name, size, len(got), w.Offset(), len(data))
				}
				want := (len(data) + max(size, 1) - 1) / max(size, 1)
				if size == 0 {
					want = 1
				}
				if len(offs) != want {
					t.Errorf("%s, chunks of %d: %d chunks, want %d", name, size, len(offs), want)
				}
			}
		}
	}
	broken := errors.New("broken")
	w := NewChunkWriter(4, func(int64, []byte) error { return broken })
	if _, err := w.Write([]byte("abcdefgh")); !errors.Is(err, broken) {
		t.Errorf("Write after a failing emit = %v, want %v", err, broken)
	}
	if err := w.Flush(); !errors.Is(err, broken) {
		t.Errorf("Flush after a failing emit = %v, want %v", err, broken)
	}
	w = NewChunkWriter(4, func(int64, []byte) error { return broken })
	if _, err := w.ReadFrom(bytes.NewReader(data)); !errors.Is(err, broken) {
		t.Errorf("ReadFrom into a failing emit = %v, want %v", err, broken)
	}
	w = NewChunkWriter(4, func(int64, []byte) error { return nil })
	if _, err := w.ReadFrom(iotest.ErrReader(broken)); !errors.Is(err, broken) {
		t.Errorf("ReadFrom a failing reader = %v, want %v", err, broken)
	}
	// A wrapped io.EOF is an error, as io.Copy has it, not the end.
	wrapped := fmt.Errorf("decompressing: %w", io.EOF)
	if _, err := w.ReadFrom(iotest.ErrReader(wrapped)); err != wrapped {
		t.Errorf("ReadFrom a reader failing with a wrapped io.EOF = %v, want %v", err, wrapped)
	}
}

func TestDigestSafetensors(t *testing.T) {
	b, err := MarshalSafetensors(sample(), map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	sum, size, err := DigestSafetensors(sample(), map[string]string{"k": "v"})
	if err != nil {
		t.Fatal(err)
	}
	if want := sha256.Sum256(b); sum != want || size != int64(len(b)) {
		t.Errorf("DigestSafetensors = %x, %d; want %x, %d", sum[:8], size, want[:8], len(b))
	}
}

// FuzzChunkReader checks that decoding through a ChunkReader, in chunks of
// any size, agrees with UnmarshalSafetensors: the same weights, or both
// errors.
func FuzzChunkReader(f *testing.F) {
	good, _ := MarshalSafetensors(sample(), map[string]string{"k": "v"})
	f.Add(good, uint16(3))
	f.Add(good[:30], uint16(1))
	f.Add([]byte{}, uint16(8))
	f.Add(header(`{"a":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}`, 0, 0x3c, 0, 0xc0), uint16(2))
	f.Fuzz(func(t *testing.T, b []byte, size uint16) {
		sum := sha256.Sum256(b)
		want, _, err := UnmarshalSafetensors(b)
		got, err2 := decodeChunks(b, int(size)+1, int64(len(b)), sum[:], nil)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("UnmarshalSafetensors = %v, decoding in chunks of %d = %v", err, int(size)+1, err2)
		}
		if err != nil {
			return
		}
		if diff := cmp.Diff(want, got, cmpopts.EquateNaNs()); diff != "" {
			t.Fatalf("the two decoders differ:\n%s", diff)
		}
	})
}

// TestChunkWriterExpect: told the total, a ChunkWriter allocates no chunk
// larger than what is left to write, and cuts the same chunks.
func TestChunkWriterExpect(t *testing.T) {
	data := bytes.Repeat([]byte("cohort!"), 1001) // 7,007 bytes
	for _, size := range []int{1000, 1 << 20} {
		var got []byte
		w := NewChunkWriter(size, func(off int64, p []byte) error {
			if left := len(data) - int(off); cap(p) > min(size, left) {
				t.Errorf("chunks of %d: chunk at %d has capacity %d, want at most %d", size, off, cap(p), min(size, left))
			}
			if len(p) != min(size, len(data)-int(off)) {
				t.Errorf("chunks of %d: chunk at %d of %d bytes, want %d", size, off, len(p), min(size, len(data)-int(off)))
			}
			got = append(got, p...)
			return nil
		})
		w.Expect(int64(len(data)))
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, data) {
			t.Errorf("chunks of %d: wrote %d bytes, want %d", size, len(got), len(data))
		}
	}
}
