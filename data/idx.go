package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
)

// IDX magic numbers of the unsigned-byte files MNIST-style datasets use:
// two zero bytes, the element type (0x08, unsigned byte), the number of
// dimensions.
const (
	// MagicLabels is a labels file: one dimension, the number of samples.
	MagicLabels uint32 = 0x00000801
	// MagicImages is an images file: samples × rows × columns.
	MagicImages uint32 = 0x00000803
)

// MaxIDXBytes is the most data ReadIDX accepts from one file (4 GiB).
const MaxIDXBytes = 1 << 32

// gzipMagic starts every gzip stream (RFC 1952).
var gzipMagic = []byte{0x1f, 0x8b}

// ReadIDX decodes an IDX file of unsigned bytes whose magic number must be
// want ([MagicImages], [MagicLabels] or another 0x000008nn), from r: plain
// or gzip-compressed, told apart by gzip's magic bytes, not by any name.
// It returns the data, row-major, and the dimensions. A file that ends
// early wraps [ErrTruncated] (itself an [ErrMalformed]) and says how many
// bytes the header declares and how many there are; any other problem with
// the bytes wraps [ErrMalformed]. The whole input is read, so a gzip
// stream's checksum is verified and bytes after the data are an error.
// Memory grows with the data that arrive, not with what the header
// declares.
func ReadIDX(r io.Reader, want uint32) (data []byte, dims []int, err error) {
	if want>>8 != 0x08 || want&0xff == 0 {
		return nil, nil, fmt.Errorf("%w: magic number %#08x is not an IDX file of unsigned bytes", ErrInvalid, want)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	src := io.Reader(br)
	var gzipped *gzipSource
	if head, _ := br.Peek(2); bytes.Equal(head, gzipMagic) {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: gzip header: %v", ErrMalformed, err)
		}
		defer gz.Close()
		gz.Multistream(false) // one member, as the datasets ship; more is checked below as trailing bytes
		gzipped = &gzipSource{r: gz}
		src = gzipped
	}
	what := "the file"
	if gzipped != nil {
		what = "the decompressed file"
	}

	var head [4]byte
	if n, err := io.ReadFull(src, head[:]); err != nil {
		return nil, nil, streamError(err, gzipped, "%s has %d bytes, too few for the 4-byte magic number", what, n)
	}
	m := binary.BigEndian.Uint32(head[:])
	if m != want {
		return nil, nil, fmt.Errorf("%w: magic number %#08x (%s), want %#08x (%s)", ErrMalformed, m, describeMagic(m), want, describeMagic(want))
	}

	nd := int(want & 0xff)
	raw := make([]byte, 4*nd)
	if n, err := io.ReadFull(src, raw); err != nil {
		return nil, nil, streamError(err, gzipped, "%s ends inside the dimensions: %d of %d header bytes", what, 4+n, 4+len(raw))
	}
	dims = make([]int, nd)
	total := uint64(1)
	for i := range dims {
		d := binary.BigEndian.Uint32(raw[4*i:])
		dims[i] = int(d)
		total *= uint64(d)
		if total > MaxIDXBytes {
			return nil, nil, fmt.Errorf("%w: dimensions %v declare more than %d bytes", ErrMalformed, dims[:i+1], uint64(MaxIDXBytes))
		}
	}

	// Grow as the data arrives rather than trusting the header with the
	// allocation: a 20-byte file may declare 4 GiB.
	var buf bytes.Buffer
	buf.Grow(int(min(total, 1<<20)))
	n, err := io.CopyN(&buf, src, int64(total))
	if err != nil {
		hdr := 4 + len(raw)
		return nil, nil, streamError(err, gzipped, "dimensions %v declare %d data bytes (%d with the header), %s has %d (%d with the header)",
			dims, total, uint64(hdr)+total, what, n, int64(hdr)+n)
	}
	extra, err := io.Copy(io.Discard, src)
	if err != nil {
		return nil, nil, streamError(err, gzipped, "after the %d data bytes", total)
	}
	if extra > 0 {
		return nil, nil, fmt.Errorf("%w: %d bytes after the %d data bytes that dimensions %v declare", ErrMalformed, extra, total, dims)
	}
	if gzipped != nil {
		extra, err := io.Copy(io.Discard, br)
		if err != nil {
			return nil, nil, fmt.Errorf("after the gzip stream: %w", err)
		}
		if extra > 0 {
			return nil, nil, fmt.Errorf("%w: %d bytes after the gzip stream", ErrMalformed, extra)
		}
	}
	return buf.Bytes(), dims, nil
}

// gzipSource reads a gzip stream and keeps the first error it met, which
// tells a complete stream holding a short file (io.EOF) from a stream cut
// short (io.ErrUnexpectedEOF).
type gzipSource struct {
	r   io.Reader
	err error
}

func (g *gzipSource) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	if err != nil && g.err == nil {
		g.err = err
	}
	return n, err
}

// streamError classifies a read error: a plain file's or gzip stream's
// early end is ErrTruncated, a corrupt gzip stream ErrMalformed, anything
// else (the reader's own failure) is wrapped as it is. gzipped is nil for
// a plain file.
func streamError(err error, gzipped *gzipSource, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	switch {
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		if gzipped != nil && errors.Is(gzipped.err, io.ErrUnexpectedEOF) {
			msg += " (the gzip stream ends early)"
		}
		return fmt.Errorf("%w: %s", ErrTruncated, msg)
	case gzipped != nil && (errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader)):
		return fmt.Errorf("%w: %s: gzip: %v", ErrMalformed, msg, err)
	case gzipped != nil:
		return fmt.Errorf("%w: %s: %w", ErrMalformed, msg, err)
	default:
		return fmt.Errorf("%s: %w", msg, err)
	}
}

// describeMagic names what an IDX magic number holds.
func describeMagic(m uint32) string {
	switch {
	case m == MagicLabels:
		return "a labels file"
	case m == MagicImages:
		return "an images file"
	case m>>16 != 0:
		return "not an IDX file"
	default:
		return fmt.Sprintf("IDX of element type %#02x and %d dimensions", m>>8&0xff, m&0xff)
	}
}

// WriteIDX encodes data as an uncompressed IDX file of unsigned bytes with
// the given magic number and dimensions, whose product must be len(data).
// Wrap w in a [gzip.Writer] for the .gz form.
func WriteIDX(w io.Writer, magic uint32, dims []int, data []byte) error {
	if magic>>8 != 0x08 || int(magic&0xff) != len(dims) {
		return fmt.Errorf("writing IDX: %w: magic number %#08x does not describe %d dimensions of unsigned bytes", ErrInvalid, magic, len(dims))
	}
	total := uint64(1)
	head := binary.BigEndian.AppendUint32(nil, magic)
	for _, d := range dims {
		if d < 0 || uint64(d) > MaxIDXBytes {
			return fmt.Errorf("writing IDX: %w: dimension %d is out of range", ErrInvalid, d)
		}
		total *= uint64(d)
		if total > MaxIDXBytes {
			return fmt.Errorf("writing IDX: %w: dimensions %v exceed %d bytes", ErrInvalid, dims, uint64(MaxIDXBytes))
		}
		head = binary.BigEndian.AppendUint32(head, uint32(d))
	}
	if total != uint64(len(data)) {
		return fmt.Errorf("writing IDX: %w: dimensions %v need %d bytes, got %d", ErrInvalid, dims, total, len(data))
	}
	if _, err := w.Write(head); err != nil {
		return fmt.Errorf("writing IDX: %w", err)
	}
	if _, err := w.Write(data); err != nil {
		return fmt.Errorf("writing IDX: %w", err)
	}
	return nil
}

// readIDXFile reads one IDX file; its errors name the file.
func readIDXFile(path string, want uint32) ([]byte, []int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer f.Close()
	b, dims, err := ReadIDX(f, want)
	if err != nil {
		return nil, nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return b, dims, nil
}
