package main

import (
	"bytes"
	"cmp"
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/internal/federation"
	"github.com/cohortfl/cohort/launch/slurm"
	"github.com/cohortfl/cohort/launch/slurm/slurmtest"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// TestLaunchSlurmRealCluster starts two provisioned site agents with cohort
// launch slurm on a real one-node Slurm cluster, sees both join the
// coordinator, runs a simulation of a million virtual clients on them as
// its two workers and checks it gives `cohort run`'s accuracy curve for
// the same seed (issue 17), then cancels the array and sees both agents
// stop on scancel's SIGTERM and leave the coordinator cleanly.
func TestLaunchSlurmRealCluster(t *testing.T) {
	env := slurmtest.Start(t) // skips without slurm-wlm and munge
	start := time.Now()
	bin := buildCohort(t)
	dir := t.TempDir()
	socks := loopbackSockets(t, socketGRPC)
	project := filepath.Join(dir, "project.yaml")
	if err := os.WriteFile(project, []byte(fmt.Sprintf(`name: slurm-e2e
coordinators: [{name: coord, address: %q}]
sites: [{name: worker-1}, {name: worker-2}]
admins: [{name: alice}]
`, socks[socketGRPC].Addr().String())), 0o600); err != nil {
		t.Fatal(err)
	}
	kits := provisionKits(t, project, filepath.Join(dir, "kits"), time.Now())
	// The workers draw their virtual clients' partitions from the
	// Fashion-MNIST subset; the coordinator evaluates on its test split.
	subset, err := data.FindFashionMNISTSubset(".")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"worker-1", "worker-2"} {
		setSiteData(t, filepath.Join(kits, "sites", s, "site.yaml"), subset)
	}
	appendLine(t, filepath.Join(kits, "coordinators", "coord", "coordinator.yaml"), fmt.Sprintf("data: {fashion-mnist: %q}", subset))
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
	for _, s := range []string{"worker-1", "worker-2"} {
		waitFor(t, s+" to join the coordinator", 60*time.Second, func() bool {
			return regexp.MustCompile(`msg=site_connected .*site=` + s + `\b`).MatchString(coord.output())
		})
	}
	t.Logf("both agents joined %s after the cluster was up", time.Since(start).Round(time.Millisecond))

	// The two agents are the workers of a virtual-client simulation: the
	// same job run by `cohort run` with one worker gives the same accuracy
	// every round.
	jobs := jobsClient(t, socks[socketGRPC].Addr().String(), kitTLS(kits, "admin", "alice", "admin"))
	resp, err := jobs.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: []byte(virtualSlurmJob(2, ""))})
	if err != nil {
		t.Fatalf("submitting the virtual-client job: %v", err)
	}
	var progress strings.Builder
	vj, err := federation.WatchJob(ctx, jobs, resp.GetJob().GetJobId(), &progress, false)
	if err != nil || vj.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("the virtual-client job over Slurm workers: %v %s %s\n%s", err, vj.GetState(), vj.GetError(), progress.String())
	}
	local, err := federation.Run(ctx, []byte(virtualSlurmJob(1, subset)), federation.Options{DBPath: filepath.Join(dir, "local.db"), Version: "test"})
	if err != nil {
		t.Fatalf("cohort run of the same job: %v", err)
	}
	overSlurm := armAccuracy(t, coordinatorDB(t, dir, kits), vj.GetTrackingRunId())
	inProcess := armAccuracy(t, local.DBPath, local.Job.GetTrackingRunId())
	if len(overSlurm) != 4 || len(inProcess) != 4 || inProcess[3] < 0.3 || inProcess[3] > 0.95 {
		t.Fatalf("accuracy per round: %v over Slurm, %v in process; want the initial model's and 3 rounds' each, the last between 0.3 and 0.95 (learning, not saturated)", overSlurm, inProcess)
	}
	for r := range overSlurm {
		if math.Abs(overSlurm[r]-inProcess[r]) > 1e-6 {
			t.Errorf("round %d: accuracy %.9f over 2 Slurm workers, %.9f in one process; want the same", r, overSlurm[r], inProcess[r])
		}
	}
	t.Logf("virtual clients, accuracy per round: %v over 2 Slurm workers, %v in one process", overSlurm, inProcess)

	if err := client.Cancel(ctx, id); err != nil {
		t.Fatalf("Cancel(%s) = %v", id, err)
	}
	states, err := client.Wait(ctx, id, 100*time.Millisecond, nil)
	if err != nil || slurm.Done(states) == false {
		t.Fatalf("after scancel, Wait = %v, %v", states, err)
	}
	for _, s := range []string{"worker-1", "worker-2"} {
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

// virtualSlurmJob is a simulation of a million virtual clients, 100 a
// round, on workers workers, over the Fashion-MNIST subset: at path for
// `cohort run`, in site.yaml and coordinator.yaml for a deployment (path
// "").
func virtualSlurmJob(workers int, path string) string {
	dataPath := ""
	if path != "" {
		dataPath = fmt.Sprintf(", path: %q", path)
	}
	return fmt.Sprintf(`name: slurm-virtual
seed: 11
tracking: {experiment: slurm}
data: {dataset: fashion-mnist%s, partition: {kind: dirichlet, alpha: 0.5}}
model: {kind: logreg}
sites: {virtual: 1000000, per_round: 100, workers: %d}
rounds: 3
train: {epochs: 1, batch_size: 16, lr: 0.05}
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 60s}
`, dataPath, workers)
}

// armAccuracy is the test accuracy per round of a job's only arm, read
// from the tracking file db.
func armAccuracy(t *testing.T, db, jobRunID string) []float64 {
	t.Helper()
	store, err := tracking.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	arms, err := store.ChildRuns(context.Background(), jobRunID)
	if err != nil || len(arms) != 1 {
		t.Fatalf("%s: arm runs of %s: %v, %v", db, jobRunID, arms, err)
	}
	hist, err := store.GetMetricHistory(context.Background(), arms[0].Info.RunID, tracking.MetricTestAccuracy)
	if err != nil {
		t.Fatal(err)
	}
	slices.SortFunc(hist, func(a, b tracking.Metric) int { return cmp.Compare(a.Step, b.Step) })
	var out []float64
	for _, m := range hist {
		out = append(out, m.Value)
	}
	return out
}
