package deploy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
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
// Error prefixes it with "file:line: " as far as those are known.
type FieldError struct {
	// File is the file's path as given to the loader, "" when unknown.
	File string
	// Line is the 1-based line of the key, 0 when unknown (a missing key).
	Line int
	// Path is the dotted key path the problem is about ("" for the whole
	// file).
	Path string
	// Msg is the message, naming the key and the fix.
	Msg string
}

// Error returns "file:line: Msg", leaving out what is unknown.
func (e *FieldError) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	case e.File != "":
		return e.File + ": " + e.Msg
	case e.Line > 0:
		return fmt.Sprintf("line %d: %s", e.Line, e.Msg)
	}
	return e.Msg
}

// Is makes every FieldError match [ErrInvalid].
func (e *FieldError) Is(target error) bool { return target == ErrInvalid }

// Problems returns every [*FieldError] in err, in order.
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
	file    string
	lines   map[string]int
	list    []*FieldError
	dropped int
}

const maxProblems = 100

// add records a problem about path at the line of path (or its nearest
// parent); the message is "path: " + the formatted text.
func (p *problems) add(path, format string, args ...any) {
	p.addAt(p.lineOf(path), path, format, args...)
}

// addAt records a problem about path at a known line; the message is
// prefixed with "path: " except for unknown and duplicate keys, which name
// the key themselves.
func (p *problems) addAt(line int, path, format string, args ...any) {
	if len(p.list) >= maxProblems {
		p.dropped++
		return
	}
	msg := fmt.Sprintf(format, args...)
	if path != "" && !strings.HasPrefix(msg, "unknown key") && !strings.HasPrefix(msg, "duplicate key") {
		msg = path + ": " + msg
	}
	p.list = append(p.list, &FieldError{File: p.file, Line: line, Path: path, Msg: msg})
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

// err returns the problems sorted by line joined with [errors.Join], or nil.
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
		errs = append(errs, &FieldError{File: p.file, Msg: fmt.Sprintf("… and %d more problems; fix the ones above first", p.dropped)})
	}
	return errors.Join(errs...)
}
