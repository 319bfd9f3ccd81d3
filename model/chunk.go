package model

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"hash"
	"iter"
)

// ChunkSize is the size of the chunks weights move over the wire in: big
// enough that per-message costs vanish, small enough to stay well under
// gRPC's default 4 MiB message limit.
const ChunkSize = 1 << 20

// CollectAfterBytes is the model size from which a process collects its
// garbage and returns the memory to the system once it is done with a
// model (a site agent after a task), so that the next one does not stack
// on it: below it, a forced collection costs more
// than it frees.
const CollectAfterBytes = 64 << 20

// MaxAssembly bounds the size an [Assembler] accepts (1 TiB): beyond it the
// announced size is surely an error.
const MaxAssembly = 1 << 40

// Chunks yields data in consecutive chunks of size bytes (the last one
// shorter), each with its offset; size ≤ 0 means [ChunkSize]. Empty data
// yields nothing. The chunks share data's memory.
func Chunks(data []byte, size int) iter.Seq2[int64, []byte] {
	if size <= 0 {
		size = ChunkSize
	}
	return func(yield func(int64, []byte) bool) {
		for off := 0; off < len(data); off += size {
			if !yield(int64(off), data[off:min(off+size, len(data))]) {
				return
			}
		}
	}
}

// Assembler reassembles a byte stream sent in chunks, in order: it holds
// the bytes to the size announced up front and no further, and checks the
// SHA-256 of the whole at [Assembler.Finish]. It knows no transport. The
// zero value is not usable; call [NewAssembler]. An Assembler is not safe
// for concurrent use.
type Assembler struct {
	total int64
	buf   []byte
	h     hash.Hash
	done  bool
}

// NewAssembler returns an Assembler for a stream of total bytes, which
// must be in [0, MaxAssembly]. Memory grows as bytes arrive, not as
// announced, so a false announcement costs nothing.
func NewAssembler(total int64) (*Assembler, error) {
	if total < 0 || total > MaxAssembly {
		return nil, fmt.Errorf("assembling chunks: announced size %d is outside 0..%d bytes", total, int64(MaxAssembly))
	}
	return &Assembler{total: total, buf: make([]byte, 0, min(total, 64<<20)), h: sha256.New()}, nil
}

// Reserve allocates the whole announced size at once, for a caller that
// has bounded the announcement itself (the coordinator checks a site's
// declared size against the global model's; a site trusts the
// coordinator's): the bytes then arrive without being copied again as the
// buffer grows.
func (a *Assembler) Reserve() {
	if int64(cap(a.buf)) < a.total {
		grown := make([]byte, len(a.buf), a.total)
		copy(grown, a.buf)
		a.buf = grown
	}
}

// Write appends the next chunk. A chunk that would pass the announced size
// is refused with [ErrOverflow] and nothing of it is kept.
func (a *Assembler) Write(p []byte) error {
	return a.WriteAt(a.Received(), p)
}

// WriteAt appends the chunk p that the sender says starts at offset off. A
// chunk anywhere but at the next expected offset ([Assembler.Received]) —
// resent, skipped ahead or reordered — is refused with [ErrOutOfOrder]; one
// that would pass the announced size with [ErrOverflow]. A refused chunk
// leaves the Assembler as it was.
func (a *Assembler) WriteAt(off int64, p []byte) error {
	if a.done {
		return fmt.Errorf("assembling chunks: %w: chunk at %d after Finish", ErrOverflow, off)
	}
	if got := a.Received(); off != got {
		return fmt.Errorf("assembling chunks: %w: chunk at byte %d, want %d", ErrOutOfOrder, off, got)
	}
	if end := off + int64(len(p)); end > a.total {
		return fmt.Errorf("assembling chunks: %w: chunk ends at byte %d, %d announced", ErrOverflow, end, a.total)
	}
	if need := len(a.buf) + len(p); need > cap(a.buf) {
		// Grow by doubling, never past the announced size: append's
		// growth of large slices (1.25×) copied a 400 MB update ≈ 30
		// times over as it arrived.
		grown := make([]byte, len(a.buf), min(a.total, int64(max(need, 2*cap(a.buf)))))
		copy(grown, a.buf)
		a.buf = grown
	}
	a.buf = append(a.buf, p...)
	a.h.Write(p)
	return nil
}

// Received returns the number of bytes received so far: the offset the
// next chunk must start at.
func (a *Assembler) Received() int64 { return int64(len(a.buf)) }

// Total returns the announced size.
func (a *Assembler) Total() int64 { return a.total }

// Finish checks that every announced byte arrived ([ErrTruncated]) and
// that their SHA-256 is wantSHA256 ([ErrChecksum]), and returns the bytes.
// After a successful Finish no chunk is accepted.
func (a *Assembler) Finish(wantSHA256 []byte) ([]byte, error) {
	if got := a.Received(); got != a.total {
		return nil, fmt.Errorf("assembling chunks: %w: got %d of %d bytes", ErrTruncated, got, a.total)
	}
	if len(wantSHA256) != sha256.Size {
		return nil, fmt.Errorf("assembling chunks: %w: the announced SHA-256 has %d bytes, want %d", ErrChecksum, len(wantSHA256), sha256.Size)
	}
	if got := a.h.Sum(nil); subtle.ConstantTimeCompare(got, wantSHA256) != 1 {
		return nil, fmt.Errorf("assembling chunks: %w: the %d bytes hash to %x…, announced %x…", ErrChecksum, a.total, got[:8], wantSHA256[:8])
	}
	a.done = true
	return a.buf, nil
}
