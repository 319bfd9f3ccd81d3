package model

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"hash"
)

// Assembler reassembles a byte stream sent in chunks: it bounds the total
// by the size announced up front and checks the SHA-256 of the whole.
type Assembler struct {
	total int64
	buf   []byte
	h     hash.Hash
}

// NewAssembler returns an Assembler for total bytes.
func NewAssembler(total int64) (*Assembler, error) {
	if total < 0 || total > 1<<40 {
		return nil, fmt.Errorf("announced size %d is out of range", total)
	}
	// Grow as data arrives rather than trusting the announced size.
	return &Assembler{total: total, buf: make([]byte, 0, min(total, 64<<20)), h: sha256.New()}, nil
}

// Write appends a chunk.
func (a *Assembler) Write(p []byte) error {
	if int64(len(a.buf))+int64(len(p)) > a.total {
		return fmt.Errorf("%w: chunk ends at byte %d, announced %d", ErrOverflow, int64(len(a.buf))+int64(len(p)), a.total)
	}
	a.buf = append(a.buf, p...)
	a.h.Write(p)
	return nil
}

// Received returns the number of bytes received so far.
func (a *Assembler) Received() int64 { return int64(len(a.buf)) }

// Finish checks the length and checksum and returns the bytes.
func (a *Assembler) Finish(wantSHA256 []byte) ([]byte, error) {
	if int64(len(a.buf)) != a.total {
		return nil, fmt.Errorf("%w: got %d of %d bytes", ErrTruncated, len(a.buf), a.total)
	}
	if got := a.h.Sum(nil); !bytes.Equal(got, wantSHA256) {
		return nil, fmt.Errorf("%w: SHA-256 of the %d bytes is %x, announced %x", ErrChecksum, a.total, got[:8], head(wantSHA256))
	}
	return a.buf, nil
}

func head(b []byte) []byte {
	if len(b) > 8 {
		return b[:8]
	}
	return b
}
