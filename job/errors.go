package job

import (
	"errors"
	"fmt"
	"slices"
	"strings"
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
// Error prefixes it with the line when the line is known.
type FieldError struct {
	// Line is the 1-based line of the key in the file, 0 when unknown (a
	// missing key, or a Spec built in Go).
	Line int
	// Path is the dotted key path the problem is about ("" for the whole
	// file).
	Path string
	// Msg is the full message, naming the key and the fix.
	Msg string
}

// Error returns "line N: Msg", or Msg when the line is unknown.
func (e *FieldError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// Is makes every FieldError match [ErrInvalid].
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Problems returns every [*FieldError] in err (as returned by [Parse],
// [Load] or [Spec.Validate]), in order, for callers that show them one by
// one (the web UI, the Jobs API).
func Problems(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
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
type problems struct {
	lines   map[string]int
	list    []*FieldError
	dropped int
}

const maxProblems = 100

// add records a problem about path; the message is "path: " + the formatted
// text.
func (p *problems) add(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	p.addAt(p.lineOf(path), path, msg)
}

// addAt records a problem with a full message at a known line.
func (p *problems) addAt(line int, path, msg string) {
	if len(p.list) >= maxProblems {
		p.dropped++
		return
	}
	p.list = append(p.list, &FieldError{Line: line, Path: path, Msg: msg})
}

// lineOf returns the line of path, or of its nearest parent present in the
// file, or 0.
func (p *problems) lineOf(path string) int {
	for path != "" {
		if l, ok := p.lines[path]; ok {
			return l
		}
		i := strings.LastIndexByte(path, '.')
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// err returns the problems sorted by line (stable, unknown lines first)
// joined with [errors.Join], or nil.
func (p *problems) err() error {
	if len(p.list) == 0 {
		return nil
	}
	list := slices.Clone(p.list)
	slices.SortStableFunc(list, func(a, b *FieldError) int { return a.Line - b.Line })
	errs := make([]error, 0, len(list)+1)
	for _, e := range list {
		errs = append(errs, e)
	}
	if p.dropped > 0 {
		errs = append(errs, &FieldError{Msg: fmt.Sprintf("… and %d more problems; fix the ones above first", p.dropped)})
	}
	return errors.Join(errs...)
}
