// Command cohort is Cohort's one binary: a federated learning orchestrator
// with experiment tracking and energy measurement. Each sub-command only
// wires flags to the packages that do the work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

const usage = `cohort — federated learning with tracking and energy, in one binary

Usage:
  cohort run [flags] JOB.yaml     run a job on this machine: a coordinator and one site
                                  per partition over loopback gRPC, tracking in ./cohort.db
  cohort provision [-o DIR] project.yaml
                                  a CA, certificates and startup kits for a deployment
  cohort coordinator -c coordinator.yaml
                                  a coordinator: job queue, sites over mutual TLS, jobs in a Raft
                                  log (with the peers of its cluster: section, if any)
  cohort site -c site.yaml        a site agent at an institute (dials out only)
  cohort launch slurm --kits DIR [--sites a,b] [--partition P] [--time 1:00:00] [--gpus K] [--dry-run] [--wait]
                                  the site agents of a kit folder as a Slurm job array
  cohort submit [--watch] JOB.yaml | jobs | status [-f] ID | cancel ID | logs [-f] ID
                                  talk to a coordinator with an admin kit (-c admin.yaml)
  cohort cluster status           each coordinator's view of the Raft cluster: leader, term, indexes
  cohort data split --out DIR SITE...
                                  one folder of Fashion-MNIST per site, for a walk-through
  cohort ui [--db cohort.db] [--addr 127.0.0.1:5000]
                                  the MLflow REST API and the web UI over a tracking store
  cohort compare JOB_RUN_ID|EXPERIMENT [--db cohort.db] [--out comparison.png]
                                  the comparison table and plot of a job's arms
  cohort models list | show | alias | download [--tracking URI]
                                  the model registry: the models jobs registered (register:)
  cohort energy probe [--seconds N]
                                  which energy sources this machine has, and a short reading
  cohort version                  print the version

Run 'cohort COMMAND -h' for a command's flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitStatus(err, os.Stderr))
}

// exitStatus returns the process's exit status for run's error, printing
// the error to stderr: 0 for none and for a usage that was asked for (-h,
// --help: printed to stdout), 1 otherwise.
func exitStatus(err error, stderr io.Writer) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return 0
	}
	fmt.Fprintln(stderr, "cohort:", err)
	return 1
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no command given")
	}
	switch args[0] {
	case "run":
		return runJob(ctx, args[1:], stdout, stderr)
	case "provision":
		return provisionCmd(ctx, args[1:], stdout, stderr)
	case "coordinator":
		return coordinatorCmd(ctx, args[1:], stdout, stderr)
	case "site":
		return siteCmd(ctx, args[1:], stdout, stderr)
	case "launch":
		return launchCmd(ctx, args[1:], stdout, stderr)
	case "submit":
		return submitCmd(ctx, args[1:], stdout, stderr)
	case "jobs":
		return jobsCmd(ctx, args[1:], stdout, stderr)
	case "status":
		return statusCmd(ctx, args[1:], stdout, stderr)
	case "cluster":
		return clusterCmd(ctx, args[1:], stdout, stderr)
	case "cancel":
		return cancelCmd(ctx, args[1:], stdout, stderr)
	case "logs":
		return logsCmd(ctx, args[1:], stdout, stderr)
	case "ui":
		return uiCmd(ctx, args[1:], stdout, stderr)
	case "models":
		return modelsCmd(ctx, args[1:], stdout, stderr)
	case "compare":
		return compareCmd(ctx, args[1:], stdout, stderr)
	case "data":
		return dataCmd(ctx, args[1:], stdout, stderr)
	case "energy":
		return energyCmd(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "cohort", version)
		return nil
	case "help", "-h", "-help", "--help":
		if len(args) > 1 && args[0] == "help" { // cohort help run
			return run(ctx, []string{args[1], "--help"}, stdout, stderr)
		}
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown command %q", args[0])
	}
}

// isHelp reports whether arg asks for a command's usage.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help" || arg == "help"
}

// newLogger returns the logger the flags ask for.
func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q: use debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: use text or json", format)
	}
}
