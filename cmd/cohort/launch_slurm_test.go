package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/launch/slurm"
	"github.com/cohortfl/cohort/launch/slurm/slurmtest"
)

// TestLaunchSlurmRealCluster starts two provisioned site agents with cohort
// launch slurm on a real one-node Slurm cluster, sees both join the
// coordinator, cancels the array and sees both agents stop on scancel's
// SIGTERM and leave the coordinator cleanly.
func TestLaunchSlurmRealCluster(t *testing.T) {
	env := slurmtest.Start(t) // skips without slurm-wlm and munge
	start := time.Now()
	bin := buildCohort(t)
	dir := t.TempDir()
	socks := loopbackSockets(t, socketGRPC)
	project := filepath.Join(dir, "project.yaml")
	if err := os.WriteFile(project, []byte(fmt.Sprintf(`name: slurm-e2e
coordinators: [{name: coord, address: %q}]
sites: [{name: hospital-a}, {name: hospital-b}]
admins: [{name: alice}]
`, socks[socketGRPC].Addr().String())), 0o600); err != nil {
		t.Fatal(err)
	}
	kits := provisionKits(t, project, filepath.Join(dir, "kits"), time.Now())
	coord := startServing(t, socks, "coordinator", dir, bin, "coordinator", "-c", filepath.Join(kits, "coordinators", "coord", "coordinator.yaml"), "--log-level", "info")
	waitFor(t, "the coordinator to listen", 30*time.Second, func() bool { return strings.Contains(coord.output(), "listening") })

	logs := filepath.Join(dir, "logs")
	if err := os.Mkdir(logs, 0o755); err != nil {
		t.Fatal(err)
	}
	client := &slurm.Client{Env: env}
	var out, errb bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := launchSlurmCmd(ctx, []string{"--kits", kits, "--cohort", bin, "--time", "10", "--output", logs}, &out, &errb, client, 100*time.Millisecond); err != nil {
		t.Fatalf("cohort launch slurm = %v\n%s", err, errb.String())
	}
	m := regexp.MustCompile(`submitted job (\d+): 2 site agents\ncancel with: scancel (\d+)\n`).FindStringSubmatch(out.String())
	if m == nil || m[1] != m[2] {
		t.Fatalf("cohort launch slurm printed %q, want the job id and its scancel command", out.String())
	}
	id := m[1]
	t.Cleanup(func() { _ = client.Cancel(context.Background(), id) })
	for _, s := range []string{"hospital-a", "hospital-b"} {
		waitFor(t, s+" to join the coordinator", 60*time.Second, func() bool {
			return regexp.MustCompile(`msg=site_connected .*site=` + s + `\b`).MatchString(coord.output())
		})
	}
	t.Logf("both agents joined %s after the cluster was up", time.Since(start).Round(time.Millisecond))

	if err := client.Cancel(ctx, id); err != nil {
		t.Fatalf("Cancel(%s) = %v", id, err)
	}
	states, err := client.Wait(ctx, id, 100*time.Millisecond, nil)
	if err != nil || slurm.Done(states) == false {
		t.Fatalf("after scancel, Wait = %v, %v", states, err)
	}
	for _, s := range []string{"hospital-a", "hospital-b"} {
		waitFor(t, s+" to leave the coordinator", 30*time.Second, func() bool {
			return regexp.MustCompile(`msg=site_left .*site=` + s + `\b`).MatchString(coord.output())
		})
	}
	for i := range 2 {
		b, err := os.ReadFile(filepath.Join(logs, fmt.Sprintf("cohort-site-%s_%d.out", id, i)))
		if err != nil || !strings.Contains(string(b), "site_stopping") {
			t.Errorf("agent %d's log (%v) lacks site_stopping, the agent's answer to SIGTERM:\n%s", i, err, b)
		}
	}
	t.Logf("cohort launch slurm end to end: %s after the cluster was up", time.Since(start).Round(time.Millisecond))
}
