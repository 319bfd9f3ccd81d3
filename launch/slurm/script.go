package slurm

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Options says what [Script] writes. Kits is required; every other zero
// value is documented on its field.
type Options struct {
	// Kits are the site kit directories, one per array task; task i runs
	// the agent of Kits[i] with Kits[i]/site.yaml.
	Kits []string
	// Cohort is the cohort binary the tasks run ("" → "cohort", from the
	// node's PATH).
	Cohort string
	// JobName is sbatch's --job-name ("" → "cohort-sites").
	JobName string
	// Partition is sbatch's --partition ("" → the cluster's default).
	Partition string
	// Time is sbatch's --time, in a Slurm format such as 90, 1:00:00 or
	// 2-00:00:00 ("" → the partition's default).
	Time string
	// CPUsPerTask is sbatch's --cpus-per-task (0 → 1).
	CPUsPerTask int
	// GPUs asks for --gres=gpu:GPUs per task (0 → none).
	GPUs int
	// Output is the directory of the tasks' logs, one file per task named
	// cohort-site-JOB_TASK.out ("" → the submission's working directory).
	Output string
}

// The values that go into #SBATCH lines, which sbatch reads without a
// shell: no spaces, quotes or newlines.
var (
	jobNameRE   = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)
	partitionRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$`)
	timeRE      = regexp.MustCompile(`^(\d+-\d+(:\d+){0,2}|\d+(:\d+){0,2})$`)
	pathRE      = regexp.MustCompile(`^[A-Za-z0-9_./+@:=-]+$`)
)

// Script renders the sbatch script for opts, or returns every problem of
// opts joined, each naming the option and what it takes.
func Script(opts Options) ([]byte, error) {
	if opts.Cohort == "" {
		opts.Cohort = "cohort"
	}
	if opts.JobName == "" {
		opts.JobName = "cohort-sites"
	}
	if opts.CPUsPerTask == 0 {
		opts.CPUsPerTask = 1
	}
	if err := opts.validate(); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("#!/bin/bash\n")
	b.WriteString("# Cohort site agents, one per array task, written by cohort launch slurm.\n")
	fmt.Fprintf(&b, "#SBATCH --job-name=%s\n", opts.JobName)
	fmt.Fprintf(&b, "#SBATCH --array=0-%d\n", len(opts.Kits)-1)
	fmt.Fprintf(&b, "#SBATCH --ntasks=1\n")
	fmt.Fprintf(&b, "#SBATCH --cpus-per-task=%d\n", opts.CPUsPerTask)
	if opts.Partition != "" {
		fmt.Fprintf(&b, "#SBATCH --partition=%s\n", opts.Partition)
	}
	if opts.Time != "" {
		fmt.Fprintf(&b, "#SBATCH --time=%s\n", opts.Time)
	}
	if opts.GPUs > 0 {
		fmt.Fprintf(&b, "#SBATCH --gres=gpu:%d\n", opts.GPUs)
	}
	out := "cohort-site-%A_%a.out"
	if opts.Output != "" {
		out = strings.TrimSuffix(opts.Output, "/") + "/" + out
	}
	fmt.Fprintf(&b, "#SBATCH --output=%s\n", out)
	b.WriteString("set -eu\n")
	b.WriteString("kits=(\n")
	for _, k := range opts.Kits {
		fmt.Fprintf(&b, "  %s\n", Quote(k))
	}
	b.WriteString(")\n")
	b.WriteString("kit=\"${kits[$SLURM_ARRAY_TASK_ID]}\"\n")
	b.WriteString("# exec: scancel's SIGTERM reaches the agent, which drains before it leaves.\n")
	fmt.Fprintf(&b, "exec %s site -c \"$kit/site.yaml\"\n", Quote(opts.Cohort))
	return b.Bytes(), nil
}

func (o Options) validate() error {
	var errs []error
	if len(o.Kits) == 0 {
		errs = append(errs, errors.New("kits: no site kit given; name at least one kit directory"))
	}
	for i, k := range o.Kits {
		if k == "" || strings.ContainsRune(k, 0) {
			errs = append(errs, fmt.Errorf("kits[%d]: %q is not a directory name; give the kit's path", i, k))
		}
	}
	if strings.ContainsRune(o.Cohort, 0) {
		errs = append(errs, fmt.Errorf("cohort: %q holds a NUL byte; give the binary's path", o.Cohort))
	}
	if !jobNameRE.MatchString(o.JobName) {
		errs = append(errs, fmt.Errorf("job name %q: use letters, digits, '_', '.' and '-' only", o.JobName))
	}
	if o.Partition != "" && !partitionRE.MatchString(o.Partition) {
		errs = append(errs, fmt.Errorf("partition %q: use a partition name (letters, digits, '_', '.', '-'), or several separated by commas", o.Partition))
	}
	if o.Time != "" && !timeRE.MatchString(o.Time) {
		errs = append(errs, fmt.Errorf("time %q: use a Slurm time limit such as 90 (minutes), 1:00:00 or 2-00:00:00", o.Time))
	}
	if o.CPUsPerTask < 0 {
		errs = append(errs, fmt.Errorf("cpus per task %d is negative; give 1 or more", o.CPUsPerTask))
	}
	if o.GPUs < 0 {
		errs = append(errs, fmt.Errorf("gpus %d is negative; give 0 for none or the GPUs each site needs", o.GPUs))
	}
	if o.Output != "" && !pathRE.MatchString(o.Output) {
		errs = append(errs, fmt.Errorf("output %q: sbatch reads it without a shell, so it may hold letters, digits and _./+@:=- only (no spaces, quotes or %%); pick another directory", o.Output))
	}
	return errors.Join(errs...)
}

// Quote returns s as one word for bash: in single quotes, each single quote
// of s written as '\”. Nothing in it is expanded.
func Quote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
