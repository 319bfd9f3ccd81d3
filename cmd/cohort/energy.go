package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/energy"
	"github.com/cohortfl/cohort/server"
)

func energyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		args = []string{"probe", "--help"}
	}
	if len(args) == 0 || args[0] != "probe" {
		fmt.Fprintln(stderr, "Usage: cohort energy probe [--seconds N] [--interval D]")
		return fmt.Errorf("energy: unknown sub-command; use `cohort energy probe`")
	}
	fs := flag.NewFlagSet("energy probe", flag.ContinueOnError)
	fs.SetOutput(stderr)
	secs := fs.Float64("seconds", 5, "how long to read the sources")
	interval := fs.Duration("interval", 100*time.Millisecond, "power sampling interval")
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
	}
	if *secs <= 0 {
		return fmt.Errorf("--seconds %v: must be positive", *secs)
	}
	return energy.Probe(ctx, stdout, time.Duration(*secs*float64(time.Second)), energy.Options{Interval: *interval})
}

// newMeter opens the machine's energy sources for the sites of `cohort run`
// and the coordinator; missing hardware is logged, not fatal.
func newMeter(log *slog.Logger) (client.Meter, server.Meter, func()) {
	m, err := energy.NewMeter(energy.Options{Logger: log})
	if err != nil {
		log.Warn("energy_meter_unavailable", "err", err)
		return nil, nil, func() {}
	}
	for _, s := range m.Sources() {
		log.Info("energy_source", "kind", s.Kind, "name", s.Name, "available", s.Available, "reason", s.Reason)
	}
	return client.EnergyMeter(m), coordinatorMeter{m}, func() { m.Close() }
}

// IdleWatts measures the machine's idle power over d: the devices the
// sites of `cohort run` train on.
func (c coordinatorMeter) IdleWatts(ctx context.Context, d time.Duration) (float64, error) {
	r, err := c.m.Idle(ctx, d)
	if err != nil {
		return 0, err
	}
	if r.Method == energy.MethodNone {
		return 0, nil
	}
	return r.Watts, nil
}

var _ server.IdleMeter = coordinatorMeter{}

// coordinatorMeter meters the coordinator's aggregation.
type coordinatorMeter struct{ m *energy.Meter }

func (c coordinatorMeter) Measure(ctx context.Context) func() (float64, string) {
	x, err := c.m.Start(ctx)
	if err != nil {
		return func() (float64, string) { return 0, "" }
	}
	return func() (float64, string) {
		r := x.Stop()
		if r.Method() == energy.MethodMeasured {
			return r.MeasuredJoules(), "measured"
		}
		return r.Estimated.Joules, "estimated"
	}
}
