package data

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// idxBytes builds an IDX file by hand, independently of WriteIDX.
func idxBytes(magic uint32, dims []uint32, data []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, magic)
	for _, d := range dims {
		b = binary.BigEndian.AppendUint32(b, d)
	}
	return append(b, data...)
}

func gzipBytes(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func TestReadIDX(t *testing.T) {
	pixels := []byte{0, 1, 2, 3, 4, 5, 6, 255}
	good := idxBytes(MagicImages, []uint32{2, 2, 2}, pixels)
	gz := gzipBytes(good)
	badCRC := bytes.Clone(gz)
	badCRC[len(badCRC)-6] ^= 0xff // the CRC-32 in the trailer
	tests := []struct {
		name    string
		in      []byte
		want    uint32
		wantErr error  // nil: success
		msg     string // in the error
	}{
		{"plain", good, MagicImages, nil, ""},
		{"gzip", gz, MagicImages, nil, ""},
		{"labels", idxBytes(MagicLabels, []uint32{3}, []byte{1, 2, 9}), MagicLabels, nil, ""},
		{"empty", nil, MagicImages, ErrTruncated, "has 0 bytes, too few for the 4-byte magic number"},
		{"labels for images", idxBytes(MagicLabels, []uint32{8}, pixels), MagicImages, ErrMalformed, "magic number 0x00000801 (a labels file), want 0x00000803 (an images file)"},
		{"not idx", []byte("P5\n28 28\n255\n"), MagicImages, ErrMalformed, "not an IDX file"},
		{"int32 idx", idxBytes(0x0c03, []uint32{1, 1, 1}, make([]byte, 4)), MagicImages, ErrMalformed, "element type 0x0c"},
		{"short dims", good[:9], MagicImages, ErrTruncated, "ends inside the dimensions: 9 of 16 header bytes"},
		{"short data", good[:len(good)-3], MagicImages, ErrTruncated, "dimensions [2 2 2] declare 8 data bytes (24 with the header), the file has 5 (21 with the header)"},
		{"short gzip data", gzipBytes(good[:len(good)-3]), MagicImages, ErrTruncated, "the decompressed file has 5"},
		{"cut gzip stream", gz[:len(gz)-10], MagicImages, ErrTruncated, "gzip stream ends early"},
		{"gzip checksum", badCRC, MagicImages, ErrMalformed, "gzip: gzip: invalid checksum"},
		{"bad gzip header", []byte{0x1f, 0x8b, 1, 2, 3}, MagicImages, ErrMalformed, "gzip header"},
		{"trailing bytes", append(bytes.Clone(good), 7, 7), MagicImages, ErrMalformed, "2 bytes after the 8 data bytes"},
		{"trailing gzip garbage", append(bytes.Clone(gz), 1, 2, 3), MagicImages, ErrMalformed, "3 bytes after the gzip stream"},
		{"huge dims", idxBytes(MagicImages, []uint32{1 << 31, 1 << 31, 4}, nil), MagicImages, ErrMalformed, "declare more than 4294967296 bytes"},
		{"zero dims", idxBytes(MagicImages, []uint32{0, 28, 28}, nil), MagicImages, nil, ""},
		{"bad want", good, 0x0d03, ErrInvalid, "not an IDX file of unsigned bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, dims, err := ReadIDX(bytes.NewReader(tt.in), tt.want)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.msg) {
					t.Fatalf("ReadIDX = %v, want %v mentioning %q", err, tt.wantErr, tt.msg)
				}
				// Every damaged file, cut short or not, is ErrMalformed.
				if tt.wantErr == ErrTruncated && !errors.Is(err, ErrMalformed) {
					t.Errorf("ReadIDX = %v, want it to match ErrMalformed too", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ReadIDX = %v, want success", err)
			}
			n := 1
			for _, d := range dims {
				n *= d
			}
			if n != len(got) || !bytes.HasSuffix(tt.in, got) && tt.name != "gzip" {
				t.Errorf("ReadIDX = %d bytes for dims %v, want the file's data", len(got), dims)
			}
		})
	}
	got, dims, err := ReadIDX(bytes.NewReader(gz), MagicImages)
	if err != nil || !cmp.Equal(got, pixels) || !cmp.Equal(dims, []int{2, 2, 2}) {
		t.Errorf("ReadIDX(gzip) = %v, %v, %v, want %v, [2 2 2]", got, dims, err, pixels)
	}
}

func TestWriteIDX(t *testing.T) {
	var b bytes.Buffer
	if err := WriteIDX(&b, MagicImages, []int{2, 1, 3}, []byte{1, 2, 3, 4, 5, 6}); err != nil {
		t.Fatal(err)
	}
	if want := idxBytes(MagicImages, []uint32{2, 1, 3}, []byte{1, 2, 3, 4, 5, 6}); !bytes.Equal(b.Bytes(), want) {
		t.Errorf("WriteIDX = % x, want % x", b.Bytes(), want)
	}
	for _, tt := range []struct {
		name  string
		magic uint32
		dims  []int
		data  []byte
	}{
		{"dims disagree with magic", MagicLabels, []int{1, 1}, []byte{0}},
		{"size mismatch", MagicLabels, []int{3}, []byte{0}},
		{"negative dim", MagicLabels, []int{-1}, nil},
		{"not ubyte", 0x0c01, []int{1}, []byte{0}},
	} {
		if err := WriteIDX(&bytes.Buffer{}, tt.magic, tt.dims, tt.data); !errors.Is(err, ErrInvalid) {
			t.Errorf("WriteIDX(%s) = %v, want ErrInvalid", tt.name, err)
		}
	}
}

func FuzzReadIDX(f *testing.F) {
	f.Add(idxBytes(MagicImages, []uint32{2, 2, 2}, make([]byte, 8)), false)
	f.Add(gzipBytes(idxBytes(MagicImages, []uint32{1, 1, 1}, []byte{7})), false)
	f.Add(idxBytes(MagicImages, []uint32{2, 2, 2}, make([]byte, 3)), false)
	f.Add(idxBytes(MagicLabels, []uint32{3}, []byte{1, 2, 3}), true)
	f.Add(gzipBytes(idxBytes(MagicLabels, []uint32{2}, []byte{9, 0})), true)
	f.Add([]byte{0, 0, 8, 3}, false)
	f.Add([]byte{0x1f, 0x8b}, true)
	f.Add(idxBytes(MagicImages, []uint32{2, 2}, nil), false)                          // cut in the dimensions
	f.Add(idxBytes(MagicImages, []uint32{1 << 16, 1 << 8, 1 << 8}, []byte{1}), false) // declares 4 GiB
	f.Add(idxBytes(MagicImages, []uint32{1 << 31, 1 << 31, 4}, nil), false)           // declares more
	f.Add(append(idxBytes(MagicLabels, []uint32{1}, []byte{4}), 5), true)             // trailing byte
	gz := gzipBytes(idxBytes(MagicLabels, []uint32{4}, []byte{1, 2, 3, 4}))
	f.Add(gz[:len(gz)-5], true) // gzip cut in its trailer
	f.Add(append(bytes.Clone(gz), gz...), true)
	f.Add(gzipBytes(idxBytes(MagicLabels, []uint32{1 << 20}, nil)), true) // gzip declaring 1 MiB, holding none
	f.Fuzz(func(t *testing.T, in []byte, labels bool) {
		want := MagicImages
		if labels {
			want = MagicLabels
		}
		data, dims, err := ReadIDX(bytes.NewReader(in), want)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ReadIDX error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(dims) != int(want&0xff) {
			t.Fatalf("ReadIDX = %d dims, want %d", len(dims), want&0xff)
		}
		n := 1
		for _, d := range dims {
			n *= d
		}
		if n != len(data) {
			t.Fatalf("ReadIDX = %d bytes for dims %v, want %d", len(data), dims, n)
		}
		// What decodes re-encodes to the same plain file.
		var b bytes.Buffer
		if err := WriteIDX(&b, want, dims, data); err != nil {
			t.Fatalf("WriteIDX(ReadIDX(x)) = %v", err)
		}
		if len(in) < 2 || in[0] != 0x1f || in[1] != 0x8b {
			if !bytes.Equal(b.Bytes(), in) {
				t.Fatalf("WriteIDX(ReadIDX(x)) = % x, want % x", b.Bytes(), in)
			}
		}
	})
}

// TestReadIDXAllocation checks that ReadIDX trusts a header with no more
// than a megabyte: a 17-byte file that declares 4 GiB must not make it
// allocate them, nor the 64 MiB a larger up-front buffer would take.
func TestReadIDXAllocation(t *testing.T) {
	for _, tt := range []struct {
		name string
		in   []byte
	}{
		{"plain", idxBytes(MagicImages, []uint32{1 << 16, 1 << 8, 1 << 8}, []byte{1})},
		{"gzip", gzipBytes(idxBytes(MagicImages, []uint32{1 << 16, 1 << 8, 1 << 8}, []byte{1}))},
	} {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, _, err := ReadIDX(bytes.NewReader(tt.in), MagicImages)
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("ReadIDX(%s, 4 GiB declared, 1 byte given) = %v, want ErrTruncated", tt.name, err)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
			t.Errorf("ReadIDX(%s, 4 GiB declared, 1 byte given) allocated %d bytes, want ≤ 4 MiB", tt.name, got)
		}
	}
}

// TestReadIDXGzipCut tells a gzip stream cut short from a complete stream
// around a short file: only the first says the stream ends early.
func TestReadIDXGzipCut(t *testing.T) {
	good := idxBytes(MagicLabels, []uint32{200}, bytes.Repeat([]byte{3, 1, 4, 1, 5, 9, 2, 6}, 25))
	gz := gzipBytes(good)
	for _, tt := range []struct {
		name    string
		in      []byte
		wantCut bool
	}{
		{"stream cut", gz[:len(gz)/2], true},
		{"trailer cut", gz[:len(gz)-4], true},
		{"short file, whole stream", gzipBytes(good[:100]), false},
		{"short header, whole stream", gzipBytes(good[:6]), false},
	} {
		_, _, err := ReadIDX(bytes.NewReader(tt.in), MagicLabels)
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("ReadIDX(%s) = %v, want ErrTruncated", tt.name, err)
			continue
		}
		if got := strings.Contains(err.Error(), "gzip stream ends early"); got != tt.wantCut {
			t.Errorf("ReadIDX(%s) = %v; says the stream ends early: %v, want %v", tt.name, err, got, tt.wantCut)
		}
	}
}
