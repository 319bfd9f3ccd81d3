package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

var soak = flag.Duration("soak", 0, "run TestClusterSoak for this long, e.g. -soak 10m")

// TestClusterSoak is the sustained load of issue 14: three `cohort
// coordinator` processes with their default Raft timeouts replicate over
// mutual TLS while 20 site processes send a 10M-parameter model (40 MB)
// back every round, for -soak. It fails if a leader steps down or a round
// fails, and logs the rounds it committed.
//
//	go test -run ClusterSoak -soak 10m -timeout 30m ./cmd/cohort
func TestClusterSoak(t *testing.T) {
	if *soak == 0 {
		t.Skip("run with -soak 10m: three coordinators, 20 sites, a 10M-parameter model")
	}
	const sites = 20
	bin := buildCohort(t)
	dir := t.TempDir()
	coords, addrs, socks := threeCoordinators(t)
	var names []string
	for i := range sites {
		names = append(names, fmt.Sprintf("site-%02d", i+1))
	}
	project := filepath.Join(dir, "project.yaml")
	os.WriteFile(project, []byte(fmt.Sprintf("name: soak\ncoordinators: [%s]\nsites: [{name: %s}]\nadmins: [{name: alice}]\n",
		strings.Join(coords, ", "), strings.Join(names, "}, {name: "))), 0o600)
	kits := provisionKits(t, project, filepath.Join(dir, "kits"), time.Now())
	var procs []*proc
	for i := range 3 {
		name := fmt.Sprintf("coord-%d", i+1)
		procs = append(procs, startServing(t, socks[name], name, dir, bin, "coordinator", "-c", filepath.Join(kits, "coordinators", name, "coordinator.yaml")))
	}
	for _, p := range procs {
		waitFor(t, p.name+" to listen", 30*time.Second, func() bool { return strings.Contains(p.output(), "listening") })
	}
	for _, s := range names {
		startProc(t, s, dir, bin, "site", "-c", filepath.Join(kits, "sites", s, "site.yaml"))
	}
	jobFile := filepath.Join(dir, "job.yaml")
	os.WriteFile(jobFile, []byte(fmt.Sprintf(`name: soak
seed: 1
tracking: {experiment: soak}
data: {dataset: synthetic, test_fraction: 0, synthetic: {samples_per_site: 100}}
model: {kind: transfer, params: 10000000}
sites: {names: [%s]}
rounds: 100000
arms: [{name: fedavg, strategy: fedavg}]
`, strings.Join(names, ", "))), 0o600)
	adminYAML := filepath.Join(kits, "admins", "alice", "admin.yaml")
	out := cohortIn(t, "submit", "-c", adminYAML, jobFile)
	m := regexp.MustCompile(`job (\w+) submitted`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submit printed no job id:\n%s", out)
	}
	id := m[1]
	admin := kitTLS(kits, "admin", "alice", "admin")
	clients := make([]pb.JobsServiceClient, len(addrs))
	for i, a := range addrs {
		clients[i] = jobsClient(t, a, admin)
	}
	job := func() *pb.Job {
		for _, c := range clients {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			r, err := c.GetJob(ctx, &pb.GetJobRequest{JobId: id})
			cancel()
			if err == nil {
				return r.GetJob()
			}
		}
		return nil
	}
	waitFor(t, "round 1 to start", 2*time.Minute, func() bool { j := job(); return j != nil && j.GetRound() >= 1 })
	start := time.Now()
	first := job().GetRound()
	deadline := time.After(*soak)
	tick := time.NewTicker(10 * time.Second)
	defer tick.Stop()
	var last *pb.Job
wait:
	for {
		select {
		case <-deadline:
			break wait
		case <-tick.C:
			if j := job(); j != nil {
				last = j
				if s := j.GetState(); s != pb.JobState_JOB_STATE_RUNNING && s != pb.JobState_JOB_STATE_QUEUED {
					t.Fatalf("the job ended during the soak: %s %s", s, j.GetError())
				}
			}
		}
	}
	elapsed := time.Since(start)
	stepDowns, failed := 0, 0
	for _, p := range procs {
		o := p.output()
		stepDowns += strings.Count(o, "stepped_down")
		failed += strings.Count(o, "round_failed")
	}
	rounds := int32(0)
	if last != nil {
		rounds = last.GetRound() - first
	}
	t.Logf("soak: %s, %d sites, 10M parameters: %d rounds (%.1f s/round), %d leader step-downs, %d failed rounds",
		elapsed.Round(time.Second), sites, rounds, elapsed.Seconds()/float64(max(rounds, 1)), stepDowns, failed)
	if stepDowns > 0 {
		for _, p := range procs {
			for _, l := range strings.Split(p.output(), "\n") {
				if strings.Contains(l, "stepped_down") || strings.Contains(l, "leading") {
					t.Logf("%s: %s", p.name, l)
				}
			}
		}
		t.Errorf("%d leader step-downs in %s; want 0", stepDowns, elapsed.Round(time.Second))
	}
	if rounds < 2 {
		t.Errorf("%d rounds in %s; want the job to progress", rounds, elapsed.Round(time.Second))
	}
}
