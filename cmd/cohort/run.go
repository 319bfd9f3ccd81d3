package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/cohortfl/cohort/internal/federation"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/server"
)

func runJob(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	db := fs.String("db", "", "tracking database file (default: the job's tracking.uri, sqlite:cohort.db)")
	level := fs.String("log-level", "warn", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: cohort run [flags] JOB.yaml")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("run takes one job file, got %d arguments", fs.NArg())
	}
	path := fs.Arg(0)
	src, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("reading the job file: %w", err)
	}
	// Parsed here too so that its problems name the file (job.yaml:14:3).
	if _, err := job.ParseFile(path, src); err != nil {
		return err
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	siteMeter, coordMeter, closeMeter := newMeter(log)
	defer closeMeter()
	res, err := federation.Run(ctx, src, federation.Options{
		BaseDir:    filepath.Dir(path),
		DBPath:     *db,
		Progress:   stdout,
		Logger:     log,
		Meter:      siteMeter,
		CoordMeter: coordMeter,
		Version:    version,
		OpenTracker: func(ctx context.Context, uri string) (server.Tracker, func(context.Context) error, error) {
			return openTracker(ctx, uri, log)
		},
	})
	if res != nil && len(res.Comparison.Arms) > 0 {
		fmt.Fprintln(stdout)
		if werr := res.Comparison.WriteTable(stdout); werr != nil && err == nil {
			err = werr
		}
	}
	if res != nil {
		fmt.Fprintf(stdout, "\ntracking: %s (job run %s)\n", res.DBPath, res.Job.GetTrackingRunId())
	}
	return err
}
