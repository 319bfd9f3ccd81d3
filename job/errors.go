package job

import (
	"errors"

	"github.com/cohortfl/cohort/internal/strictyaml"
)

// Errors returned by this package, matched with [errors.Is].
var (
	// ErrInvalid is matched by every problem found in a job (unknown key,
	// wrong type, impossible value): each is a [*FieldError].
	ErrInvalid = errors.New("invalid job")
	// ErrSyntax is returned when the file is not well-formed YAML.
	ErrSyntax = errors.New("job file is not valid YAML")
	// ErrEmpty is returned when the file holds no document.
	ErrEmpty = errors.New("job file is empty")
	// ErrTooLarge is returned when the file is larger than [MaxSize].
	ErrTooLarge = errors.New("job file is too large")
)

// FieldError is one problem in a job. Its message names the key (as a dotted
// path such as "sites.min_per_round" or "arms.2.strategy.mu") and the fix;
// Error prefixes it with the file, line and column as far as they are known
// ("job.yaml:14:3: ..."). Every FieldError found by this package matches
// [ErrInvalid]; a syntax error found by [ParseFile] matches [ErrSyntax].
type FieldError = strictyaml.Error

// Problems returns every [*FieldError] in err that matches [ErrInvalid] (as
// returned by [Parse],
// [Load] or [Spec.Validate]), in order, for callers that show them one by
// one (the web UI, the Jobs API).
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

// problems collects FieldErrors, bounded so that a hostile file cannot make
// an unbounded list.
type problems = strictyaml.Problems

// newProblems returns an empty problems for a job whose keys are at lines.
func newProblems(file string, lines map[string]strictyaml.Pos) *problems {
	p := strictyaml.NewProblems(file, ErrInvalid)
	if lines != nil {
		p.Keys = lines
	}
	return p
}
