package energy

import (
	"context"
	"fmt"
	"io"
	"time"
)

// Probe writes which energy sources this machine has, why the missing
// ones are missing, and a reading of each over d: what an institute's IT
// runs first (`cohort energy probe`).
func Probe(ctx context.Context, w io.Writer, d time.Duration, opts Options) error {
	m, err := NewMeter(opts)
	if err != nil {
		return err
	}
	defer m.Close()
	fmt.Fprintln(w, "energy sources:")
	for _, s := range m.Sources() {
		state := "no "
		if s.Available {
			state = "yes"
		}
		line := fmt.Sprintf("  %-8s %s  %s", s.Kind, state, s.Name)
		if s.Reason != "" {
			line += " — " + s.Reason
		}
		fmt.Fprintln(w, line)
	}
	fmt.Fprintf(w, "reading for %s at %s intervals …\n", d, m.opts.Interval)
	x, err := m.Start(ctx)
	if err != nil {
		return err
	}
	t := time.NewTimer(d)
	select {
	case <-ctx.Done():
	case <-t.C:
	}
	t.Stop()
	r := x.Stop()
	for _, g := range r.GPUs {
		fmt.Fprintf(w, "  gpu %d %s (%s, driver %s): %.1f J by %s; ∫ %s power %.1f J; power avg %.1f W max %.1f W; util %.0f%%; memory max %.0f MiB; %d samples\n",
			g.Index, g.Name, g.UUID, g.DriverVersion, g.Joules, g.Method, g.PowerSource, g.IntegratedJ, g.PowerAvgW, g.PowerMaxW, g.UtilAvgPct, float64(g.MemMaxBytes)/(1<<20), g.Samples)
	}
	for _, c := range r.CPU {
		fmt.Fprintf(w, "  rapl %s: %.1f J (%.1f W)\n", c.Name, c.Joules, c.Joules/r.Seconds)
	}
	fmt.Fprintf(w, "  estimate: %.2f CPU s × %.1f W/core = %.1f J\n", r.Estimated.CPUSeconds, r.Estimated.WattsPerCore, r.Estimated.Joules)
	fmt.Fprintf(w, "measured energy: %s\n", r.Method())
	return ctx.Err()
}
