package blobs

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"hash"
)

// Digest names a blob: the SHA-256 of its bytes as 64 lowercase hex
// digits, the form server/ha's commands carry.
type Digest string

// ParseDigest returns s as a Digest, or an error wrapping [ErrBadDigest]
// that says what is wrong with it.
func ParseDigest(s string) (Digest, error) {
	if len(s) != 2*sha256.Size {
		return "", fmt.Errorf("parsing digest %.80q: %d characters, want %d hex digits of a SHA-256: %w", s, len(s), 2*sha256.Size, ErrBadDigest)
	}
	for i := range len(s) {
		c := s[i]
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'f':
		case 'A' <= c && c <= 'F':
			return "", fmt.Errorf("parsing digest %q: upper-case hex digit at %d; digests are lower-case: %w", s, i, ErrBadDigest)
		default:
			return "", fmt.Errorf("parsing digest %q: %q at %d is not a hex digit: %w", s, c, i, ErrBadDigest)
		}
	}
	return Digest(s), nil
}

// Sum returns the digest of b.
func Sum(b []byte) Digest {
	sum := sha256.Sum256(b)
	return Digest(hex.EncodeToString(sum[:]))
}

// digestOf returns the digest h has summed.
func digestOf(h hash.Hash) Digest {
	return Digest(hex.EncodeToString(h.Sum(nil)))
}

// String returns d as its hex digits.
func (d Digest) String() string { return string(d) }
