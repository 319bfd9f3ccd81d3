package slurm_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/launch/slurm"
	"github.com/cohortfl/cohort/launch/slurm/slurmtest"
)

// TestSlurmRealCluster brings up a one-node Slurm cluster of its own (munged,
// slurmctld and slurmd from Debian's munge and slurm-wlm packages, every file
// in a temporary directory, ports picked free), submits a two-task array
// from [Script] through [Client.Submit] (a fake cohort as the agent, one kit
// path with a space and a quote), follows it with [Client.Wait], checks each task's
// output and cancels a sleeping job with [Client.Cancel].
func TestSlurmRealCluster(t *testing.T) {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	c := &slurm.Client{Env: slurmtest.Start(t)}

	// Script's array of two site agents, each from its kit (one with a space
	// and a quote in its path), the agent a fake cohort that records its
	// arguments in its kit.
	outDir := filepath.Join(dir, "out")
	kits := []string{filepath.Join(dir, "sites", "a"), filepath.Join(dir, "sites", "b's kit")}
	for _, d := range append(kits, outDir) {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	fake := filepath.Join(dir, "cohort")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\n' \"$*\" > \"$(dirname \"$3\")/ran\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	script, err := slurm.Script(slurm.Options{Kits: kits, Cohort: fake, JobName: "cohort-test", Time: "5", Output: outDir})
	if err != nil {
		t.Fatal(err)
	}
	id, err := c.Submit(ctx, script)
	if err != nil {
		t.Fatalf("Submit = %v", err)
	}
	states, err := c.Wait(ctx, id, 100*time.Millisecond, func(s []string) { t.Logf("job %s: %v", id, s) })
	if err != nil {
		t.Fatalf("Wait(%s) = %v", id, err)
	}
	if fmt.Sprint(states) != "[COMPLETED COMPLETED]" {
		t.Errorf("array %s ended %v, want [COMPLETED COMPLETED]", id, states)
	}
	for _, k := range kits {
		b, err := os.ReadFile(filepath.Join(k, "ran"))
		if want := "site -c " + k + "/site.yaml\n"; err != nil || string(b) != want {
			t.Errorf("the agent of kit %s ran with %q, %v, want %q", k, b, err, want)
		}
	}
	logs, _ := filepath.Glob(filepath.Join(outDir, "cohort-site-"+id+"_*.out"))
	if len(logs) != 2 {
		t.Errorf("task logs %v, want two cohort-site-%s_*.out in %s", logs, id, outDir)
	}

	// A sleeping job, cancelled: its SIGTERM reaches the exec'd command.
	// It says when its trap is set: Slurm reports RUNNING before bash has
	// read the trap line, and a SIGTERM then kills it silently (a CI
	// failure).
	sleeper := fmt.Sprintf("#!/bin/bash\n#SBATCH --output=%s/sleeper.log\ntrap 'echo got TERM > %s/term; exit 0' TERM\ntouch %s/trapped\nsleep 300 & wait\n", outDir, slurm.Quote(outDir), slurm.Quote(outDir))
	sid, err := c.Submit(ctx, []byte(sleeper))
	if err != nil {
		t.Fatalf("Submit(sleeper) = %v", err)
	}
	slurmtest.WaitFor(ctx, t, "the sleeper running with its trap set", func() (bool, string) {
		s, err := c.State(ctx, sid)
		_, terr := os.Stat(filepath.Join(outDir, "trapped"))
		return err == nil && fmt.Sprint(s) == "[RUNNING]" && terr == nil, fmt.Sprint(s, err, terr)
	})
	if err := c.Cancel(ctx, sid); err != nil {
		t.Fatalf("Cancel(%s) = %v", sid, err)
	}
	states, err = c.Wait(ctx, sid, 100*time.Millisecond, nil)
	if err != nil || fmt.Sprint(states) != "[CANCELLED]" {
		t.Errorf("after Cancel, Wait(%s) = %v, %v, want [CANCELLED]", sid, states, err)
	}
	if b, err := os.ReadFile(filepath.Join(outDir, "term")); err != nil || string(b) != "got TERM\n" {
		t.Errorf("the cancelled job's trap wrote %q, %v, want \"got TERM\\n\": scancel's SIGTERM did not reach it", b, err)
	}

	// A refusal: a partition the cluster does not have.
	_, err = c.Submit(ctx, []byte("#!/bin/bash\n#SBATCH --partition=nosuch\ntrue\n"))
	if err == nil || !strings.Contains(err.Error(), "invalid partition") {
		t.Errorf("Submit to partition nosuch = %v, want sbatch's refusal naming the partition", err)
	}
	t.Logf("real cluster test took %s", time.Since(start).Round(time.Millisecond))
}
