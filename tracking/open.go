package tracking

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
)

// Backend is an open tracking backend, such as a [*SQLiteStore] or a
// remote MLflow server's client. Every backend logs experiments and runs;
// the coordinator asks for the rest of what it needs with an interface of
// its own.
type Backend interface {
	EnsureExperiment(ctx context.Context, name string) (string, error)
	CreateRun(ctx context.Context, req CreateRun) (Run, error)
}

// OpenOptions are what [Open] passes to a backend.
type OpenOptions struct {
	// Logger receives the backend's logs; nil discards them.
	Logger *slog.Logger
}

// Opener opens the backend a URI of its scheme names. close flushes what
// the backend still holds and releases it.
type Opener func(ctx context.Context, uri string, opts OpenOptions) (b Backend, close func(context.Context) error, err error)

var (
	openersMu sync.RWMutex
	openers   = map[string]Opener{"sqlite": openSQLite}
)

// RegisterScheme makes [Open] hand URIs of scheme ("http" for
// "http://host") to open, as database/sql drivers register themselves:
// tracking/mlflowclient registers http and https when it is imported. It
// panics when scheme is registered twice or open is nil, a mistake of the
// program, not of its input.
func RegisterScheme(scheme string, open Opener) {
	openersMu.Lock()
	defer openersMu.Unlock()
	if open == nil {
		panic("tracking: RegisterScheme of a nil opener for " + scheme)
	}
	if _, dup := openers[scheme]; dup {
		panic("tracking: RegisterScheme called twice for " + scheme)
	}
	openers[scheme] = open
}

// Schemes returns the registered URI schemes, sorted.
func Schemes() []string {
	openersMu.RLock()
	defer openersMu.RUnlock()
	var out []string
	for s := range openers {
		out = append(out, s)
	}
	slices.Sort(out)
	return out
}

// ErrUnknownScheme is returned by [Open] when no backend is registered for
// a URI's scheme.
var ErrUnknownScheme = errors.New("unknown tracking URI scheme")

// Open opens the tracking backend uri names: "sqlite:FILE" (or a plain
// path) for the embedded SQLite store, "http(s)://HOST" for an MLflow server
// (registered by importing tracking/mlflowclient), or any scheme registered
// with [RegisterScheme]. close releases the backend; call it when done.
func Open(ctx context.Context, uri string, opts OpenOptions) (Backend, func(context.Context) error, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	scheme := "sqlite"
	if s, _, ok := strings.Cut(uri, ":"); ok && len(s) > 1 && isScheme(s) {
		scheme = s
	}
	openersMu.RLock()
	open := openers[scheme]
	openersMu.RUnlock()
	if open == nil {
		hint := ""
		if scheme == "http" || scheme == "https" {
			hint = "; import github.com/cohortfl/cohort/tracking/mlflowclient to register http and https"
		}
		return nil, nil, fmt.Errorf("tracking URI %q: %w %q; use one of %s%s", uri, ErrUnknownScheme, scheme, strings.Join(Schemes(), ", "), hint)
	}
	return open(ctx, uri, opts)
}

// isScheme reports whether s is a URI scheme (RFC 3986: a letter, then
// letters, digits, '+', '-' or '.').
func isScheme(s string) bool {
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z':
		case i > 0 && (r >= '0' && r <= '9' || r == '+' || r == '-' || r == '.'):
		default:
			return false
		}
	}
	return s != ""
}

func openSQLite(ctx context.Context, uri string, _ OpenOptions) (Backend, func(context.Context) error, error) {
	st, err := OpenSQLiteURI(ctx, uri)
	if err != nil {
		return nil, nil, err
	}
	return st, func(context.Context) error { return st.Close() }, nil
}

// OpenSQLiteURI opens the embedded store "sqlite:FILE" (or a plain path)
// names, creating FILE's folder when it is missing.
func OpenSQLiteURI(ctx context.Context, uri string) (*SQLiteStore, error) {
	p := strings.TrimPrefix(uri, "sqlite:")
	if p == "" {
		return nil, fmt.Errorf("tracking URI %q: name the database file, such as sqlite:cohort.db", uri)
	}
	if dir := filepath.Dir(p); dir != "." {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("tracking store folder %s: %w", dir, err)
		}
	}
	st, err := OpenSQLite(ctx, p)
	if err != nil {
		return nil, fmt.Errorf("opening tracking store %s: %w", p, err)
	}
	return st, nil
}
