package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/plot"
)

// compareCmd prints a job's comparison and writes its plot.
func compareCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(stderr)
	db := fs.String("db", "cohort.db", "the tracking database (SQLite)")
	out := fs.String("out", "comparison.png", "the plot's file: .png or .svg; empty writes none")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: cohort compare [--db cohort.db] [--out comparison.png] JOB_RUN_ID|EXPERIMENT")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return errors.New("compare takes one job run ID or experiment name")
	}
	format := ""
	if *out != "" {
		format = strings.TrimPrefix(strings.ToLower(filepath.Ext(*out)), ".")
		if format != "png" && format != "svg" {
			return fmt.Errorf("--out %q: the plot is .png or .svg", *out)
		}
	}
	if _, err := os.Stat(*db); err != nil {
		return fmt.Errorf("tracking database %s: %w; name it with --db", *db, err)
	}
	store, err := tracking.OpenSQLite(ctx, *db)
	if err != nil {
		return fmt.Errorf("opening tracking store %s: %w", *db, err)
	}
	defer store.Close()
	jobRunID, err := findJobRun(ctx, store, fs.Arg(0))
	if err != nil {
		return err
	}
	cmp, err := tracking.Compare(ctx, store, jobRunID)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "job run %s\n", jobRunID)
	if err := cmp.WriteTable(stdout); err != nil {
		return err
	}
	if *out == "" {
		return nil
	}
	var buf bytes.Buffer
	if err := plot.Comparison(ctx, store, jobRunID, format, &buf); err != nil {
		return err
	}
	if err := os.WriteFile(*out, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing the plot: %w", err)
	}
	fmt.Fprintf(stdout, "plot: %s\n", *out)
	return nil
}

// findJobRun takes a job run's ID, or an experiment's name (its latest job
// run).
func findJobRun(ctx context.Context, store *tracking.SQLiteStore, arg string) (string, error) {
	if run, err := store.GetRun(ctx, arg); err == nil {
		return run.Info.RunID, nil
	}
	exp, err := store.GetExperimentByName(ctx, arg)
	if err != nil {
		return "", fmt.Errorf("%q is neither a run ID nor an experiment's name in this store", arg)
	}
	runs, _, err := store.SearchRuns(ctx, tracking.RunQuery{
		ExperimentIDs: []string{exp.ExperimentID},
		Filter:        fmt.Sprintf("tags.`%s` = 'job'", tracking.TagKind),
		MaxResults:    1,
	})
	if err != nil {
		return "", err
	}
	if len(runs) == 0 {
		return "", fmt.Errorf("experiment %q has no job run yet", arg)
	}
	return runs[0].Info.RunID, nil
}
