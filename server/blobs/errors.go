package blobs

import "errors"

// Errors returned by the store.
var (
	// ErrNotFound is returned when a blob is not in the store.
	ErrNotFound = errors.New("blob not found")
	// ErrDigestMismatch is returned when the bytes written to a [Writer]
	// do not hash to the digest its Commit expects; nothing is stored.
	ErrDigestMismatch = errors.New("blob digest mismatch")
	// ErrCorrupt is returned when a stored blob's bytes no longer hash to
	// its name: the disk corrupted it.
	ErrCorrupt = errors.New("blob corrupt on disk")
	// ErrNoSpace is returned when a write would leave the file system with
	// less than [Options.MinFree] bytes free or the store above
	// [Options.MaxBytes]; nothing is stored.
	ErrNoSpace = errors.New("no space for blob")
	// ErrBadDigest is returned when a digest is not 64 lowercase hex
	// digits (a SHA-256).
	ErrBadDigest = errors.New("malformed digest")
	// ErrWriterDone is returned when a [Writer] is used after Commit or
	// Abort, or after a write failed.
	ErrWriterDone = errors.New("blob writer already finished")
)
