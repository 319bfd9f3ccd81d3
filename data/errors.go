package data

import (
	"errors"
	"fmt"
)

// Errors returned by this package, matched with [errors.Is].
var (
	// ErrNotFound is returned when a dataset's files are in none of the
	// places the loader looks and could not be downloaded.
	ErrNotFound = errors.New("dataset not found")
	// ErrMalformed is returned when a file is not what it should be: not
	// IDX, the wrong IDX file (magic number), dimensions that disagree,
	// bytes after the data, a label out of range.
	ErrMalformed = errors.New("malformed dataset file")
	// ErrTruncated is returned when an IDX file ends before the data its
	// header declares. It wraps ErrMalformed, so errors.Is(err,
	// ErrMalformed) holds for every damaged file, cut short or not.
	ErrTruncated = fmt.Errorf("%w: truncated", ErrMalformed)
	// ErrChecksum is returned when a downloaded file's MD5 is not the
	// published one.
	ErrChecksum = errors.New("dataset checksum mismatch")
	// ErrInvalid is returned for a request that cannot be met: an
	// impossible partition or synthetic configuration, or a Dataset whose
	// fields disagree.
	ErrInvalid = errors.New("invalid dataset request")
)
