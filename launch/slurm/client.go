package slurm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"time"
)

// ErrRefused is returned when sbatch or scancel exits with an error: the
// error holds the command's stderr, which says why.
var ErrRefused = errors.New("slurm refused")

// ErrUnknownJob is returned by [Client.State] when neither squeue nor sacct
// knows the job.
var ErrUnknownJob = errors.New("slurm knows no such job")

// RunFunc runs the command name with args, stdin on its standard input, and
// returns its standard output and error. err is non-nil when it did not run
// or exited non-zero.
type RunFunc func(ctx context.Context, stdin []byte, name string, args ...string) (stdout, stderr []byte, err error)

// Client talks to Slurm through its commands. The zero value runs them from
// PATH with this process's environment (SLURM_CONF included). A Client is
// safe for concurrent use.
type Client struct {
	// Run runs a command (nil → [os/exec]).
	Run RunFunc
	// Env, if not nil, is the commands' environment instead of this
	// process's.
	Env []string
}

func (c *Client) run(ctx context.Context, stdin []byte, name string, args ...string) ([]byte, []byte, error) {
	if c.Run != nil {
		return c.Run(ctx, stdin, name, args...)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = c.Env
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

var jobIDRE = regexp.MustCompile(`^[0-9]+$`)

// Submit submits script with sbatch --parsable and returns the job's id.
// A refusal is an [ErrRefused] that carries sbatch's message.
func (c *Client) Submit(ctx context.Context, script []byte) (string, error) {
	out, stderr, err := c.run(ctx, script, "sbatch", "--parsable")
	if err != nil {
		return "", refused("submitting the job with sbatch", stderr, err)
	}
	// --parsable prints "ID" or "ID;CLUSTER".
	line := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(line, '\n'); i >= 0 {
		line = line[i+1:] // warnings may come first
	}
	id, _, _ := strings.Cut(line, ";")
	if !jobIDRE.MatchString(id) {
		return "", fmt.Errorf("submitting the job with sbatch: its answer %q holds no job id; is sbatch Slurm's?", strings.TrimSpace(string(out)))
	}
	return id, nil
}

// Cancel cancels the job id (every task of an array) with scancel, which
// sends the tasks SIGTERM and, after Slurm's KillWait, SIGKILL.
func (c *Client) Cancel(ctx context.Context, id string) error {
	if !jobIDRE.MatchString(id) {
		return fmt.Errorf("cancelling job %q: not a Slurm job id (digits only)", id)
	}
	if _, stderr, err := c.run(ctx, nil, "scancel", id); err != nil {
		return refused("cancelling job "+id+" with scancel", stderr, err)
	}
	return nil
}

// State returns the states of the job id's tasks (PENDING, RUNNING,
// COMPLETED, …), one per line squeue prints, or from sacct once squeue has
// forgotten the job. It returns [ErrUnknownJob] when neither knows it.
func (c *Client) State(ctx context.Context, id string) ([]string, error) {
	if !jobIDRE.MatchString(id) {
		return nil, fmt.Errorf("reading job %q's state: not a Slurm job id (digits only)", id)
	}
	out, sqErr, err := c.run(ctx, nil, "squeue", "-h", "-t", "all", "-j", id, "-o", "%T")
	squeue := "squeue no longer lists it"
	if err == nil {
		if s := states(out); len(s) > 0 {
			return s, nil
		}
	} else {
		squeue = "squeue failed (" + msg(sqErr, err) + ")"
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	out, stderr, err := c.run(ctx, nil, "sacct", "-n", "-X", "-P", "-j", id, "-o", "State")
	if err != nil {
		return nil, fmt.Errorf("reading job %s's state: %s and sacct failed (%s): %w", id, squeue, msg(stderr, err), ErrUnknownJob)
	}
	s := states(out)
	if len(s) == 0 {
		return nil, fmt.Errorf("reading job %s's state: %s and sacct does not list it: %w", id, squeue, ErrUnknownJob)
	}
	return s, nil
}

// states reads one state a line, keeping the first word ("CANCELLED by 0"
// → CANCELLED).
func states(out []byte) []string {
	var s []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			s = append(s, strings.TrimSuffix(f[0], "+"))
		}
	}
	return s
}

// Done reports whether every state is final: the tasks have ended.
func Done(states []string) bool {
	if len(states) == 0 {
		return false
	}
	for _, s := range states {
		switch s {
		case "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
			"PREEMPTED", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT":
		default:
			return false
		}
	}
	return true
}

// Wait polls the job's state every interval until [Done] and returns the
// final states. It returns ctx's error when ctx ends first; the job keeps
// running then (cancel it with [Client.Cancel]).
func (c *Client) Wait(ctx context.Context, id string, interval time.Duration, progress func([]string)) ([]string, error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	var last string
	for {
		s, err := c.State(ctx, id)
		if err != nil {
			return nil, err
		}
		if progress != nil && strings.Join(s, ",") != last {
			last = strings.Join(s, ",")
			progress(s)
		}
		if Done(s) {
			return s, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.C:
		}
	}
}

func refused(doing string, stderr []byte, err error) error {
	return fmt.Errorf("%s: %w: %s", doing, ErrRefused, msg(stderr, err))
}

func msg(stderr []byte, err error) string {
	if m := strings.TrimSpace(string(stderr)); m != "" {
		return m + " (" + err.Error() + ")"
	}
	return err.Error()
}
