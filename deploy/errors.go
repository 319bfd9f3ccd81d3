package deploy

import (
	"errors"

	"github.com/cohortfl/cohort/internal/strictyaml"
)

// Errors returned by this package, matched with [errors.Is].
var (
	// ErrInvalid is matched by every problem found in a project or config
	// file (unknown key, wrong type, impossible value): each is a
	// [*FieldError].
	ErrInvalid = errors.New("invalid deployment file")
	// ErrSyntax is returned when a file is not well-formed YAML.
	ErrSyntax = errors.New("not valid YAML")
	// ErrEmpty is returned when a file holds no document.
	ErrEmpty = errors.New("file is empty")
	// ErrTooLarge is returned when a file is larger than [MaxFileSize].
	ErrTooLarge = errors.New("file is too large")
)

// MaxFileSize is the largest project or config file read, in bytes.
const MaxFileSize = 1 << 20

// FieldError is one problem in a project or config file. Its message names
// the key (a dotted path such as "sites.1.name" or "tls.cert") and the fix;
// Error prefixes it with "file:line:col: " as far as those are known.
// Every FieldError found by this package matches [ErrInvalid]; a syntax
// error matches [ErrSyntax].
type FieldError = strictyaml.Error

// Problems returns every [*FieldError] in err that matches [ErrInvalid],
// in order.
func Problems(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			if e.Is(ErrInvalid) {
				out = append(out, e)
			}
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}
