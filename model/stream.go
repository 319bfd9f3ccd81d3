package model

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"hash"
	"io"
)

// ChunkReader reads a byte stream that arrives in chunks as an [io.Reader],
// so that a decoder ([DecodeSafetensors]) can consume it as it arrives,
// holding no more of it than a chunk. It refuses bytes past the size announced
// up front, hashes every byte it receives, and [ChunkReader.Finish] checks
// the count and the SHA-256 once the decoder is done. It knows no
// transport. A ChunkReader is not safe for concurrent use.
type ChunkReader struct {
	next  func() ([]byte, error)
	total int64
	recv  int64 // bytes received from next
	read  int64 // bytes handed out by Read
	cur   []byte
	h     hash.Hash
	err   error // sticky: io.EOF once next said so, or what went wrong
}

// NewChunkReader returns a ChunkReader over the chunks next returns, in
// order, for a stream of total bytes in [0, MaxAssembly]. next returns
// [io.EOF] after the last chunk; any other error ends the stream and is
// returned, wrapped, by Read and Finish. The reader keeps no chunk after
// the next call to next.
func NewChunkReader(total int64, next func() ([]byte, error)) (*ChunkReader, error) {
	if total < 0 || total > MaxAssembly {
		return nil, fmt.Errorf("reading chunks: announced size %d is outside 0..%d bytes", total, int64(MaxAssembly))
	}
	return &ChunkReader{next: next, total: total, h: sha256.New()}, nil
}

// Read implements [io.Reader]. It returns io.EOF where the stream ends,
// even before the announced size (the decoder reports that as truncated),
// and [ErrOverflow] for a chunk that passes the announced size.
func (r *ChunkReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if err := r.fill(); err != nil {
		return 0, err
	}
	k := copy(p, r.cur)
	r.cur = r.cur[k:]
	r.read += int64(k)
	return k, nil
}

// fill makes r.cur non-empty, or returns why it cannot.
func (r *ChunkReader) fill() error {
	for len(r.cur) == 0 {
		if r.err != nil {
			return r.err
		}
		c, err := r.next()
		switch {
		case errors.Is(err, io.EOF):
			r.err = io.EOF
		case err != nil:
			r.err = fmt.Errorf("reading chunks: %w", err)
		case r.recv+int64(len(c)) > r.total:
			r.err = fmt.Errorf("reading chunks: %w: chunk ends at byte %d, %d announced", ErrOverflow, r.recv+int64(len(c)), r.total)
		default:
			r.h.Write(c)
			r.recv += int64(len(c))
			r.cur = c
		}
	}
	return nil
}

// Received returns the number of bytes received so far.
func (r *ChunkReader) Received() int64 { return r.recv }

// Finish reads the stream to its end and checks that exactly the announced
// bytes arrived ([ErrTruncated], [ErrOverflow]), that the decoder read
// them all ([ErrMalformed]: bytes after the end of what it decoded), and
// that their SHA-256 is wantSHA256 ([ErrChecksum]). Whatever was decoded
// from the stream is to be discarded when Finish fails.
func (r *ChunkReader) Finish(wantSHA256 []byte) error {
	decoded := r.read
	for r.err == nil {
		r.cur = nil // bytes after the decoder's end: received, refused below
		if r.fill() != nil {
			break
		}
	}
	r.cur = nil
	switch {
	case !errors.Is(r.err, io.EOF):
		return r.err
	case r.recv != r.total:
		return fmt.Errorf("reading chunks: %w: got %d of %d bytes", ErrTruncated, r.recv, r.total)
	case decoded != r.total:
		return fmt.Errorf("reading chunks: %w: %d bytes after the end of the file (the announced size %d is too large)", ErrMalformed, r.total-decoded, r.total)
	case len(wantSHA256) != sha256.Size:
		return fmt.Errorf("reading chunks: %w: the announced SHA-256 has %d bytes, want %d", ErrChecksum, len(wantSHA256), sha256.Size)
	}
	if got := r.h.Sum(nil); subtle.ConstantTimeCompare(got, wantSHA256) != 1 {
		return fmt.Errorf("reading chunks: %w: the %d bytes hash to %x…, announced %x…", ErrChecksum, r.total, got[:8], wantSHA256[:8])
	}
	return nil
}

// ChunkWriter cuts what is written to it into chunks of a fixed size (the
// last one shorter), handing each to emit with its offset: the sending end
// of a stream that [EncodeSafetensors] writes into. Each chunk is a buffer
// of its own, freshly allocated or from [ChunkWriter.Buffers], so emit may
// keep it (a gRPC message may be read after Send returns). A ChunkWriter
// is not safe for concurrent use.
type ChunkWriter struct {
	size  int
	total int64 // Expect's; 0: unknown
	emit  func(off int64, p []byte) error
	get   func(n int) []byte
	buf   []byte
	off   int64
	err   error
}

// NewChunkWriter returns a ChunkWriter of chunks of size bytes (size ≤ 0:
// [ChunkSize]). Call [ChunkWriter.Flush] after the last Write.
func NewChunkWriter(size int, emit func(off int64, p []byte) error) *ChunkWriter {
	if size <= 0 {
		size = ChunkSize
	}
	return &ChunkWriter{size: size, emit: emit}
}

// Write implements [io.Writer]: it emits every chunk p fills. After emit
// fails, every Write returns its error.
func (w *ChunkWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		if w.err != nil {
			return n, w.err
		}
		w.alloc()
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p, n = p[k:], n+k
		if len(w.buf) == cap(w.buf) {
			w.err = w.Flush()
		}
	}
	return n, w.err
}

// ReadFrom implements [io.ReaderFrom], so that io.Copy reads r straight
// into the chunks' buffers, as much of a chunk at a time as r gives.
func (w *ChunkWriter) ReadFrom(r io.Reader) (int64, error) {
	var n int64
	for w.err == nil {
		w.alloc()
		k, err := r.Read(w.buf[len(w.buf):cap(w.buf)])
		w.buf = w.buf[:len(w.buf)+k]
		n += int64(k)
		if len(w.buf) == cap(w.buf) {
			w.err = w.Flush()
		}
		switch {
		case err == io.EOF: // as io.Copy: a wrapped EOF is an error
			return n, w.err
		case err != nil:
			return n, err
		}
	}
	return n, w.err
}

// alloc gives w a buffer for its next chunk where it has none.
func (w *ChunkWriter) alloc() {
	if w.buf != nil {
		return
	}
	n := w.size
	if left := w.total - w.off; left > 0 && left < int64(n) {
		n = int(left) // a small model's one chunk is its size, not ChunkSize
	}
	if w.get != nil {
		w.buf = w.get(n)[:0:n]
		return
	}
	w.buf = make([]byte, 0, n)
}

// Buffers makes w take its chunks' buffers from get, which returns one
// of length n or more, instead of allocating them: for a sender that
// gives them back once sent (internal/bulk.Buffers).
func (w *ChunkWriter) Buffers(get func(n int) []byte) { w.get = get }

// Flush emits what is buffered, if anything.
func (w *ChunkWriter) Flush() error {
	if w.err != nil || len(w.buf) == 0 {
		return w.err
	}
	b := w.buf
	w.buf = nil
	if err := w.emit(w.off, b); err != nil {
		w.err = err
		return err
	}
	w.off += int64(len(b))
	return nil
}

// Expect tells w that total bytes will be written in all, so that the
// last chunk's buffer is no larger than what is left (a 31 KB model sent
// to 5,000 sites allocated 1 MiB for each). Writing more is allowed.
func (w *ChunkWriter) Expect(total int64) { w.total = total }

// Offset returns the number of bytes emitted so far.
func (w *ChunkWriter) Offset() int64 { return w.off }
