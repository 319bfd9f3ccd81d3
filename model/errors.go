package model

import "errors"

// Errors returned by this package; match them with [errors.Is].
var (
	// ErrIncompatible is returned when two Weights differ in tensor names,
	// order or shapes.
	ErrIncompatible = errors.New("incompatible weights")
	// ErrInvalid is returned when Weights are inconsistent in themselves: an
	// empty or repeated tensor name, or a shape that does not match the
	// number of values.
	ErrInvalid = errors.New("invalid weights")
	// ErrNotFinite is returned when a tensor holds NaN or ±Inf.
	ErrNotFinite = errors.New("non-finite value")
	// ErrMalformed is returned when bytes are not a valid safetensors file:
	// bad header, offsets, shapes or dtypes.
	ErrMalformed = errors.New("malformed safetensors")
	// ErrTooLarge is returned when encoded weights exceed the size the
	// caller allows.
	ErrTooLarge = errors.New("weights too large")
	// ErrTruncated is returned when fewer bytes arrived than were announced,
	// by a safetensors header or to a [ChunkReader].
	ErrTruncated = errors.New("truncated")
	// ErrOverflow is returned when more bytes arrive at a [ChunkReader]
	// than were announced.
	ErrOverflow = errors.New("more data than announced")
	// ErrChecksum is returned when reassembled bytes do not match their
	// announced SHA-256.
	ErrChecksum = errors.New("checksum mismatch")
)
