package strictyaml

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Pos is a place in a file: 1-based line and column, 0 when unknown.
type Pos struct {
	Line, Column int
}

// Error is one problem in a configuration file. Its message names the key
// (a dotted path such as "sites.min_per_round" or "arms.2.strategy.mu") and
// the fix; Error prefixes it with "file:line:col: " as far as those are
// known.
type Error struct {
	// File is the file's name as given to the loader, "" when unknown (a
	// job sent over the network, a Spec built in Go).
	File string
	// Line is the 1-based line of the key in the file, 0 when unknown (a
	// missing key).
	Line int
	// Column is the 1-based column of the key, 0 when unknown.
	Column int
	// Path is the dotted key path the problem is about ("" for the whole
	// file).
	Path string
	// Msg is the full message, naming the key and the fix.
	Msg string
	// Kind is the sentinel the error matches with [errors.Is] (a package's
	// ErrInvalid or ErrSyntax); nil matches nothing.
	Kind error
}

// Error returns "file:line:col: Msg", leaving out what is unknown; without a
// file it is "line L, column C: Msg".
func (e *Error) Error() string {
	return Format(e.File, Pos{e.Line, e.Column}, e.Msg)
}

// Is reports whether target is the error's Kind.
func (e *Error) Is(target error) bool { return e.Kind != nil && target == e.Kind }

// Format writes msg after where it happened, as compilers do:
// "file:line:col: msg", "file:line: msg" or "file: msg" when the file is
// known, "line L, column C: msg" or "line L: msg" when it is not.
func Format(file string, at Pos, msg string) string {
	switch {
	case file != "" && at.Line > 0 && at.Column > 0:
		return fmt.Sprintf("%s:%d:%d: %s", file, at.Line, at.Column, msg)
	case file != "" && at.Line > 0:
		return fmt.Sprintf("%s:%d: %s", file, at.Line, msg)
	case file != "":
		return file + ": " + msg
	case at.Line > 0 && at.Column > 0:
		return fmt.Sprintf("line %d, column %d: %s", at.Line, at.Column, msg)
	case at.Line > 0:
		return fmt.Sprintf("line %d: %s", at.Line, msg)
	}
	return msg
}

// Errors returns every [*Error] in err (as joined by [Problems.Err]), in
// order, for callers that show them one by one.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *Error:
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

// MaxProblems bounds the problems a [Problems] keeps, so that a hostile
// file cannot make an unbounded list.
const MaxProblems = 100

// Problems collects the problems found in one file, with the position of
// every key present in it. The zero value is not ready: set Keys (and File
// and Kind) first, or use [NewProblems].
type Problems struct {
	// File names the file in every problem, "" when unknown.
	File string
	// Kind is the sentinel every problem matches ([Error.Kind]).
	Kind error
	// Keys maps each dotted key path present in the file to its position.
	Keys map[string]Pos
	list []*Error
	// dropped counts the problems past [MaxProblems].
	dropped int
}

// NewProblems returns an empty Problems for file whose errors match kind.
func NewProblems(file string, kind error) *Problems {
	return &Problems{File: file, Kind: kind, Keys: map[string]Pos{}}
}

// Add records a problem about path at the position of path (or of its
// nearest parent in the file); the message is "path: " + the formatted
// text.
func (p *Problems) Add(path, format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if path != "" {
		msg = path + ": " + msg
	}
	p.AddAt(p.PosOf(path), path, msg)
}

// AddAt records a problem about path with a full message at a known
// position.
func (p *Problems) AddAt(at Pos, path, msg string) {
	if len(p.list) >= MaxProblems {
		p.dropped++
		return
	}
	p.list = append(p.list, &Error{File: p.File, Line: at.Line, Column: at.Column, Path: path, Msg: msg, Kind: p.Kind})
}

// Len returns how many problems were recorded, those dropped included.
func (p *Problems) Len() int { return len(p.list) + p.dropped }

// List returns the problems recorded so far, in the order they were added
// (without those dropped past [MaxProblems]).
func (p *Problems) List() []*Error { return p.list }

// Drop counts n problems that were found but not kept.
func (p *Problems) Drop(n int) { p.dropped += n }

// Dropped returns how many problems were not kept.
func (p *Problems) Dropped() int { return p.dropped }

// PosOf returns the position of path, or of its nearest parent present in
// the file, or the zero Pos.
func (p *Problems) PosOf(path string) Pos {
	for path != "" {
		if at, ok := p.Keys[path]; ok {
			return at
		}
		i := strings.LastIndexByte(path, '.')
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return Pos{}
}

// Err returns the problems sorted by position (stable, unknown lines first)
// joined with [errors.Join], or nil when there are none.
func (p *Problems) Err() error {
	if len(p.list) == 0 {
		return nil
	}
	list := slices.Clone(p.list)
	slices.SortStableFunc(list, func(a, b *Error) int { return a.Line - b.Line })
	errs := make([]error, 0, len(list)+1)
	for _, e := range list {
		errs = append(errs, e)
	}
	if p.dropped > 0 {
		errs = append(errs, &Error{File: p.File, Kind: p.Kind, Msg: fmt.Sprintf("… and %d more problems; fix the ones above first", p.dropped)})
	}
	return errors.Join(errs...)
}
