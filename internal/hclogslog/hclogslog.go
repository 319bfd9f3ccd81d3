package hclogslog

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"runtime"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
)

// DefaultLevel is the level a [New] adapter starts at when [Options.Level]
// is zero: raft's INFO and above (leadership changes, elections, snapshots),
// none of its DEBUG chatter.
const DefaultLevel = hclog.Info

// LevelTrace is the slog level hclog's TRACE maps to: one step below
// [slog.LevelDebug]. DEBUG, INFO, WARN and ERROR map to slog's own levels.
const LevelTrace = slog.LevelDebug - 4

// Options configures a logger returned by [New]. The zero value is usable.
type Options struct {
	// Name is the logger's name, logged under the "logger" key (hclog's
	// "@module"); [hclog.Logger.Named] appends to it with a dot.
	Name string
	// Level is the lowest hclog level passed on to slog; zero
	// (hclog.NoLevel) means [DefaultLevel]. hclog.Off silences the logger.
	Level hclog.Level
}

// logger implements hclog.Logger on top of a *slog.Logger. Loggers derived
// with With, Named and ResetNamed share their parent's level, as hclog's own
// loggers do.
type logger struct {
	base  *slog.Logger // the logger New was given
	sl    *slog.Logger // base with the name and implied args attached
	name  string
	args  []any
	level *atomic.Int32
}

var _ hclog.Logger = (*logger)(nil)

// New returns an hclog.Logger that writes every record at or above
// opts.Level to l; a nil l discards everything. The returned logger, and
// every logger derived from it, is safe for concurrent use, as hclog
// requires.
func New(l *slog.Logger, opts Options) hclog.Logger {
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	lv := opts.Level
	if lv == hclog.NoLevel {
		lv = DefaultLevel
	}
	level := new(atomic.Int32)
	level.Store(int32(lv))
	return derive(l, opts.Name, nil, level)
}

func derive(base *slog.Logger, name string, args []any, level *atomic.Int32) *logger {
	sl := base
	if name != "" {
		sl = sl.With("logger", name)
	}
	if len(args) > 0 {
		sl = sl.With(convertArgs(args)...)
	}
	return &logger{base: base, sl: sl, name: name, args: args, level: level}
}

// toSlog maps an hclog level to a slog level.
func toSlog(l hclog.Level) slog.Level {
	switch {
	case l <= hclog.Trace:
		return LevelTrace
	case l == hclog.Debug:
		return slog.LevelDebug
	case l == hclog.Info:
		return slog.LevelInfo
	case l == hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

// enabled reports whether a record at l would be written: the adapter's own
// level and the slog handler's both let it through.
func (g *logger) enabled(l hclog.Level) bool {
	min := hclog.Level(g.level.Load())
	if min == hclog.Off || l == hclog.Off || l < min {
		return false
	}
	return g.sl.Enabled(context.Background(), toSlog(l))
}

// emit writes one record; skip is the number of frames between the caller
// of the public method and runtime.Callers.
func (g *logger) emit(l hclog.Level, msg string, args []any, skip int) {
	if l == hclog.NoLevel {
		l = hclog.Info
	}
	if !g.enabled(l) {
		return
	}
	var pcs [1]uintptr
	runtime.Callers(skip, pcs[:])
	r := slog.NewRecord(time.Now(), toSlog(l), msg, pcs[0])
	r.Add(convertArgs(args)...)
	_ = g.sl.Handler().Handle(context.Background(), r)
}

// convertArgs turns hclog's key/value list into slog's: keys become
// strings, hclog's formatting wrappers are applied, and a trailing key
// without a value is logged under "EXTRA_VALUE_AT_END" as hclog does.
func convertArgs(args []any) []any {
	out := make([]any, 0, len(args)+1)
	for i := 0; i < len(args); i += 2 {
		if i+1 == len(args) {
			out = append(out, slog.Any("EXTRA_VALUE_AT_END", convertValue(args[i])))
			break
		}
		key, ok := args[i].(string)
		if !ok {
			key = fmt.Sprint(args[i])
		}
		out = append(out, slog.Any(key, convertValue(args[i+1])))
	}
	return out
}

func convertValue(v any) any {
	switch v := v.(type) {
	case hclog.Format:
		if len(v) == 0 {
			return ""
		}
		f, ok := v[0].(string)
		if !ok {
			return fmt.Sprint(v...)
		}
		return fmt.Sprintf(f, v[1:]...)
	case hclog.Hex:
		return fmt.Sprintf("0x%x", int(v))
	case hclog.Octal:
		return fmt.Sprintf("0%o", int(v))
	case hclog.Binary:
		return fmt.Sprintf("0b%b", int(v))
	case hclog.Quote:
		return fmt.Sprintf("%q", string(v))
	case error:
		if v == nil {
			return nil
		}
		return v.Error()
	default:
		return v
	}
}

// Log writes msg at level. Safe for concurrent use.
func (g *logger) Log(level hclog.Level, msg string, args ...any) { g.emit(level, msg, args, 3) }

// Trace writes msg at TRACE. Safe for concurrent use.
func (g *logger) Trace(msg string, args ...any) { g.emit(hclog.Trace, msg, args, 3) }

// Debug writes msg at DEBUG. Safe for concurrent use.
func (g *logger) Debug(msg string, args ...any) { g.emit(hclog.Debug, msg, args, 3) }

// Info writes msg at INFO. Safe for concurrent use.
func (g *logger) Info(msg string, args ...any) { g.emit(hclog.Info, msg, args, 3) }

// Warn writes msg at WARN. Safe for concurrent use.
func (g *logger) Warn(msg string, args ...any) { g.emit(hclog.Warn, msg, args, 3) }

// Error writes msg at ERROR. Safe for concurrent use.
func (g *logger) Error(msg string, args ...any) { g.emit(hclog.Error, msg, args, 3) }

// IsTrace reports whether TRACE records are written. Safe for concurrent use.
func (g *logger) IsTrace() bool { return g.enabled(hclog.Trace) }

// IsDebug reports whether DEBUG records are written. Safe for concurrent use.
func (g *logger) IsDebug() bool { return g.enabled(hclog.Debug) }

// IsInfo reports whether INFO records are written. Safe for concurrent use.
func (g *logger) IsInfo() bool { return g.enabled(hclog.Info) }

// IsWarn reports whether WARN records are written. Safe for concurrent use.
func (g *logger) IsWarn() bool { return g.enabled(hclog.Warn) }

// IsError reports whether ERROR records are written. Safe for concurrent use.
func (g *logger) IsError() bool { return g.enabled(hclog.Error) }

// ImpliedArgs returns the key/value pairs added with With. Safe for
// concurrent use; the caller must not modify the slice.
func (g *logger) ImpliedArgs() []any { return g.args }

// With returns a logger that adds args to every record. Safe for concurrent
// use.
func (g *logger) With(args ...any) hclog.Logger {
	all := make([]any, 0, len(g.args)+len(args))
	all = append(all, g.args...)
	all = append(all, args...)
	return derive(g.base, g.name, all, g.level)
}

// Name returns the logger's name. Safe for concurrent use.
func (g *logger) Name() string { return g.name }

// Named returns a logger whose name is this one's with name appended after
// a dot. Safe for concurrent use.
func (g *logger) Named(name string) hclog.Logger {
	if g.name != "" {
		name = g.name + "." + name
	}
	return derive(g.base, name, g.args, g.level)
}

// ResetNamed returns a logger named name, whatever this one's name is. Safe
// for concurrent use.
func (g *logger) ResetNamed(name string) hclog.Logger {
	return derive(g.base, name, g.args, g.level)
}

// SetLevel changes the level of this logger and of every logger it shares
// its level with. Safe for concurrent use.
func (g *logger) SetLevel(level hclog.Level) {
	if level == hclog.NoLevel {
		level = DefaultLevel
	}
	g.level.Store(int32(level))
}

// GetLevel returns the logger's level. Safe for concurrent use.
func (g *logger) GetLevel() hclog.Level { return hclog.Level(g.level.Load()) }

// StandardLogger returns a standard-library logger writing through this
// one, for code that wants a *log.Logger. Safe for concurrent use.
func (g *logger) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(g.StandardWriter(opts), "", 0)
}

// StandardWriter returns a writer that logs each line written to it. With
// opts.InferLevels a leading "[DEBUG]", "[WARN]", … picks the line's level
// (INFO otherwise); opts.ForceLevel overrides it. Safe for concurrent use.
func (g *logger) StandardWriter(opts *hclog.StandardLoggerOptions) io.Writer {
	if opts == nil {
		opts = &hclog.StandardLoggerOptions{}
	}
	return &stdWriter{g: g, opts: *opts}
}

type stdWriter struct {
	g    *logger
	opts hclog.StandardLoggerOptions
}

var levelPrefixes = []struct {
	prefix string
	level  hclog.Level
}{
	{"[TRACE]", hclog.Trace}, {"[DEBUG]", hclog.Debug}, {"[INFO]", hclog.Info},
	{"[WARN]", hclog.Warn}, {"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error},
}

// Write logs every line of p as one record.
func (w *stdWriter) Write(p []byte) (int, error) {
	for _, line := range bytes.Split(bytes.TrimRight(p, "\n"), []byte("\n")) {
		s := strings.TrimSpace(string(line))
		if s == "" {
			continue
		}
		level := hclog.Info
		if w.opts.InferLevels || w.opts.InferLevelsWithTimestamp {
			probe := s
			if w.opts.InferLevelsWithTimestamp {
				if i := strings.Index(probe, "["); i > 0 {
					probe = probe[i:]
				}
			}
			for _, lp := range levelPrefixes {
				if strings.HasPrefix(probe, lp.prefix) {
					level = lp.level
					s = strings.TrimSpace(strings.TrimPrefix(probe, lp.prefix))
					break
				}
			}
		}
		if w.opts.ForceLevel != hclog.NoLevel {
			level = w.opts.ForceLevel
		}
		w.g.emit(level, s, nil, 3)
	}
	return len(p), nil
}
