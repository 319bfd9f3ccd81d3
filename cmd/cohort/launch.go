package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/cohortfl/cohort/launch/slurm"
)

func launchCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || isHelp(args[0]) {
		fmt.Fprint(stdout, "Usage: cohort launch slurm --kits DIR [flags]\n  start the site agents of a provisioned kit folder as a Slurm job array\n")
		if len(args) == 0 {
			return errors.New("launch needs an engine: cohort launch slurm --kits DIR")
		}
		return flag.ErrHelp
	}
	if args[0] != "slurm" {
		return fmt.Errorf("launch: unknown engine %q; the one engine is slurm (cohort launch slurm --kits DIR)", args[0])
	}
	return launchSlurmCmd(ctx, args[1:], stdout, stderr, &slurm.Client{}, time.Second)
}

// launchSlurmCmd is cohort launch slurm; client and poll are the tests'.
func launchSlurmCmd(ctx context.Context, args []string, stdout, stderr io.Writer, client *slurm.Client, poll time.Duration) error {
	fs := flag.NewFlagSet("launch slurm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kitsDir := fs.String("kits", "", "the folder cohort provision wrote (its sites/NAME/site.yaml are the agents)")
	sites := fs.String("sites", "", "the sites to start, comma-separated (default: every site under --kits)")
	var opts slurm.Options
	fs.StringVar(&opts.Partition, "partition", "", "Slurm partition (default: the cluster's default)")
	fs.StringVar(&opts.Time, "time", "", "time limit per agent, e.g. 1:00:00 or 2-00:00:00 (default: the partition's)")
	fs.IntVar(&opts.GPUs, "gpus", 0, "GPUs per agent (--gres=gpu:K)")
	fs.IntVar(&opts.CPUsPerTask, "cpus", 1, "CPUs per agent")
	fs.StringVar(&opts.JobName, "job-name", "cohort-sites", "Slurm job name")
	fs.StringVar(&opts.Output, "output", "", "folder of the agents' logs, one cohort-site-JOB_TASK.out each (default: the current folder)")
	fs.StringVar(&opts.Cohort, "cohort", "", "the cohort binary the nodes run (default: this one's absolute path; it must be there on the nodes)")
	dryRun := fs.Bool("dry-run", false, "print the sbatch script instead of submitting it")
	wait := fs.Bool("wait", false, "follow the job until every agent has ended; Ctrl-C cancels it")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("launch slurm takes no arguments, got %q; the kit folder goes after --kits", fs.Args())
	}
	if *kitsDir == "" {
		return errors.New("launch slurm: --kits is required: the folder cohort provision -o wrote")
	}
	kits, err := siteKits(*kitsDir, *sites)
	if err != nil {
		return err
	}
	opts.Kits = kits
	if opts.Cohort == "" {
		if opts.Cohort, err = os.Executable(); err != nil {
			return fmt.Errorf("launch slurm: finding this binary's path: %w; give it with --cohort", err)
		}
	}
	script, err := slurm.Script(opts)
	if err != nil {
		return fmt.Errorf("launch slurm: %w", err)
	}
	if *dryRun {
		_, err := stdout.Write(script)
		return err
	}
	id, err := client.Submit(ctx, script)
	if err != nil {
		return fmt.Errorf("launch slurm: %w", err)
	}
	fmt.Fprintf(stdout, "submitted job %s: %d site agents\ncancel with: scancel %s\n", id, len(kits), id)
	if !*wait {
		return nil
	}
	states, err := client.Wait(ctx, id, poll, func(s []string) {
		fmt.Fprintf(stderr, "job %s: %s\n", id, strings.Join(s, " "))
	})
	if ctx.Err() != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if cerr := client.Cancel(cctx, id); cerr != nil {
			return fmt.Errorf("launch slurm: interrupted, and cancelling job %s failed: %w; cancel it with scancel %s", id, cerr, id)
		}
		fmt.Fprintf(stderr, "job %s cancelled: the agents drain and leave\n", id)
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("launch slurm: following job %s: %w", id, err)
	}
	for _, s := range states {
		if s != "COMPLETED" {
			return fmt.Errorf("launch slurm: job %s ended %s; see the agents' logs (cohort-site-%s_*.out)", id, strings.Join(states, " "), id)
		}
	}
	fmt.Fprintf(stdout, "job %s completed\n", id)
	return nil
}

// siteKits returns the absolute paths of the site kits under dir/sites (each
// a folder with a site.yaml), sorted, or only those named in names.
func siteKits(dir, names string) ([]string, error) {
	abs, err := filepath.Abs(filepath.Join(dir, "sites"))
	if err != nil {
		return nil, fmt.Errorf("launch slurm: %w", err)
	}
	found, err := filepath.Glob(filepath.Join(globQuote(abs), "*", "site.yaml"))
	if err != nil {
		return nil, fmt.Errorf("launch slurm: %w", err)
	}
	byName := map[string]string{}
	var all []string
	for _, f := range found {
		kit := filepath.Dir(f)
		byName[filepath.Base(kit)] = kit
		all = append(all, filepath.Base(kit))
	}
	slices.Sort(all)
	if len(all) == 0 {
		return nil, fmt.Errorf("launch slurm: no site kit under %s (no sites/NAME/site.yaml); give --kits the folder cohort provision -o wrote", dir)
	}
	want := all
	if names != "" {
		want = strings.Split(names, ",")
	}
	var kits []string
	for _, n := range want {
		n = strings.TrimSpace(n)
		k, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("launch slurm: --sites names %q, which has no kit under %s; the sites there are %s", n, abs, strings.Join(all, ", "))
		}
		if slices.Contains(kits, k) {
			return nil, fmt.Errorf("launch slurm: --sites names %q twice; one agent per site (a second is refused by the coordinator)", n)
		}
		kits = append(kits, k)
	}
	return kits, nil
}

// globQuote escapes the characters filepath.Glob treats as a pattern.
func globQuote(s string) string {
	var b strings.Builder
	for _, r := range s {
		if strings.ContainsRune(`*?[\`, r) {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}
