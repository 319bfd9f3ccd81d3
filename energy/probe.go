package energy

import (
	"context"
	"fmt"
	"io"
	"math"
	"time"
)

// Probe writes which energy sources this machine has, why the missing
// ones are missing and what would fix them, then a reading of every source
// over d: what an institute's IT runs first (`cohort energy probe`). It
// fails for invalid options, a non-positive d, a failed write, or ctx
// ending before d has passed (after writing what it read so far).
func Probe(ctx context.Context, w io.Writer, d time.Duration, opts Options) error {
	if d <= 0 {
		return fmt.Errorf("probing energy sources: reading time %s must be positive (5s is a good start)", d)
	}
	m, err := NewMeter(opts)
	if err != nil {
		return fmt.Errorf("probing energy sources: %w", err)
	}
	defer m.Close()
	ew := &errWriter{w: w}
	writeSources(ew, m.Sources())
	ew.printf("reading every source for %s (power every %s, counters every %s) …\n", d, m.opts.Interval, m.opts.CounterInterval)
	x, err := m.Start(ctx)
	if err != nil {
		return fmt.Errorf("probing energy sources: %w", err)
	}
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
	r := x.Stop()
	writeReading(ew, r)
	if ew.err != nil {
		return fmt.Errorf("probing energy sources: writing the result: %w", ew.err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("probing energy sources: interrupted after %.1fs: %w", r.Seconds, err)
	}
	return nil
}

func writeSources(w *errWriter, sources []SourceInfo) {
	w.printf("energy sources:\n")
	for _, s := range sources {
		state := "no "
		if s.Available {
			state = "yes"
		}
		w.printf("  %-8s %s  %s", s.Kind, state, s.Name)
		if s.Reason != "" {
			w.printf(" — %s", s.Reason)
		}
		w.printf("\n")
	}
}

func writeReading(w *errWriter, r Report) {
	for _, g := range r.GPUs {
		w.printf("  gpu %d %s (%s): %.1f J by %s", g.Index, g.Name, g.UUID, g.Joules, g.Method)
		if g.Method == MethodCounter && g.Joules > 0 {
			w.printf(" (∫ %s power %.1f J, %.1f%% apart)", g.PowerSource, g.IntegratedJ, 100*math.Abs(g.IntegratedJ-g.Joules)/g.Joules)
		}
		w.printf("; power avg %.1f W, max %.1f W; utilization %.0f%%; memory max %.0f MiB; %d samples",
			g.PowerAvgW, g.PowerMaxW, g.UtilAvgPct, float64(g.MemMaxBytes)/(1<<20), g.Samples)
		if g.Shared {
			w.printf("; MIG: shared whole-GPU figures")
		}
		if g.Resets > 0 {
			w.printf("; %d counter resets", g.Resets)
		}
		w.printf("\n")
		for _, n := range g.Notes {
			w.printf("    note: %s\n", n)
		}
	}
	for _, c := range r.CPU {
		watts := 0.0
		if r.Seconds > 0 {
			watts = c.Joules / r.Seconds
		}
		w.printf("  rapl %s: %.1f J by %s (%.1f W average)", c.Name, c.Joules, c.Method, watts)
		if c.Wraps > 0 {
			w.printf("; %d wrap-arounds", c.Wraps)
		}
		w.printf("\n")
		for _, n := range c.Notes {
			w.printf("    note: %s\n", n)
		}
	}
	e := r.Estimated
	w.printf("  estimate: %.3f CPU s × %g W a core = %.2f J (estimated, never summed with measured figures)\n", e.CPUSeconds, e.WattsPerCore, e.Joules)
	if r.Method() == MethodMeasured {
		w.printf("measured energy: %s, %.1f J over %.1f s (GPU %.1f J, CPU %.1f J)\n", r.Method(), r.MeasuredJoules(), r.Seconds, r.GPUJoules(), r.CPUJoules())
	} else {
		w.printf("measured energy: %s (no GPU and no readable RAPL; reports will carry the estimate, labelled so)\n", r.Method())
	}
}

// errWriter keeps the first write error.
type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) printf(format string, args ...any) {
	if e.err == nil {
		_, e.err = fmt.Fprintf(e.w, format, args...)
	}
}
