package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/deploy"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/tracking"
)

// TestClusterFailoverProcesses is the HA walk-through with real
// processes: three `cohort coordinator` processes replicate over mutual
// TLS, two sites list all three, the admin kit submits to whichever
// leads; the leader is SIGKILLed mid-job and the job finishes on the new
// leader, the sites having moved by themselves, every round committed
// once, in the same tracking runs.
func TestClusterFailoverProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs five processes")
	}
	t.Parallel() // its own processes, folder and sockets
	bin := buildCohort(t)
	dir := t.TempDir()
	coords, addrs, socks := threeCoordinators(t)
	project := filepath.Join(dir, "project.yaml")
	os.WriteFile(project, []byte(fmt.Sprintf(`name: ha
coordinators: [%s]
sites: [{name: kit}, {name: unibo}]
admins: [{name: alice}]
`, strings.Join(coords, ", "))), 0o600)
	kits, subset := twoSiteKits(t, dir, project)
	procs := map[string]*proc{}
	for i := range 3 {
		name := fmt.Sprintf("coord-%d", i+1)
		cfg := filepath.Join(kits, "coordinators", name, "coordinator.yaml")
		// Shorter Raft timeouts than the default 1 s keep the test quick.
		b, _ := os.ReadFile(cfg)
		b = []byte(strings.Replace(string(b), "  peers:\n", "  heartbeat_timeout: 300ms\n  election_timeout: 300ms\n  peers:\n", 1))
		os.WriteFile(cfg, b, 0o600)
		appendLine(t, cfg, fmt.Sprintf("data: {fashion-mnist: %q}", subset))
		if _, err := deploy.LoadCoordinatorConfig(cfg); err != nil {
			t.Fatal(err)
		}
		procs[name] = startServing(t, socks[name], name, dir, bin, "coordinator", "-c", cfg)
	}
	for name, p := range procs {
		waitFor(t, name+" to listen", 30*time.Second, func() bool { return strings.Contains(p.output(), "listening") })
	}
	for _, s := range []string{"kit", "unibo"} {
		startProc(t, s, dir, bin, "site", "-c", filepath.Join(kits, "sites", s, "site.yaml"))
	}
	adminYAML := filepath.Join(kits, "admins", "alice", "admin.yaml")
	admin := kitTLS(kits, "admin", "alice", "admin")
	clients := map[string]pb.JobsServiceClient{}
	for _, a := range addrs {
		clients[a] = jobsClient(t, a, admin)
	}
	// leader returns the address whose coordinator leads, and its name.
	leader := func() (string, string) {
		for _, a := range addrs {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			st, err := clients[a].ClusterStatus(ctx, &pb.ClusterStatusRequest{})
			cancel()
			if err == nil && st.GetState() == "leader" {
				return a, st.GetNodeId()
			}
		}
		return "", ""
	}
	waitFor(t, "a leader", 30*time.Second, func() bool { a, _ := leader(); return a != "" })
	out := cohortIn(t, "cluster", "status", "-c", adminYAML)
	if strings.Count(out, " leader ") != 1 || strings.Count(out, " follower ") != 2 {
		t.Errorf("cluster status, want one leader and two followers:\n%s", out)
	}

	// A follower refuses admin calls, naming the leader.
	leaderAddr, leaderName := leader()
	for _, a := range addrs {
		if a == leaderAddr {
			continue
		}
		_, err := clients[a].ListJobs(context.Background(), &pb.ListJobsRequest{})
		if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), leaderAddr) {
			t.Errorf("ListJobs on follower %s = %v, want Unavailable naming %s", a, err, leaderAddr)
		}
	}

	id := submitHAJob(t, dir, adminYAML)
	job := func(addr string) *pb.Job {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := clients[addr].GetJob(ctx, &pb.GetJobRequest{JobId: id})
		if err != nil {
			return nil
		}
		return r.GetJob()
	}
	waitFor(t, "round 3 to start", 2*time.Minute, func() bool {
		j := job(leaderAddr)
		return j != nil && j.GetRound() >= 3
	})
	// An admin following the job (cohort status -f) follows it across
	// the failover.
	follower := startProc(t, "status -f", dir, bin, "status", "-c", adminYAML, "-f", id)
	waitFor(t, "status -f to print the job", 30*time.Second, func() bool { return strings.Contains(follower.output(), "job "+id) })
	procs[leaderName].stop(syscall.SIGKILL)
	// As when its machine is gone: its ports refuse connections (held
	// open, they would queue them unanswered).
	closeListeners(socks[leaderName])
	killed := time.Now()
	var done *pb.Job
	waitFor(t, "the job to end on the new leader", 2*time.Minute, func() bool {
		for _, a := range addrs {
			if a == leaderAddr {
				continue
			}
			if j := job(a); j != nil && (j.GetState() == pb.JobState_JOB_STATE_SUCCEEDED || j.GetState() == pb.JobState_JOB_STATE_FAILED) {
				done = j
				return true
			}
		}
		return false
	})
	t.Logf("leader %s killed in round 3; the job ended %.1fs later", leaderName, time.Since(killed).Seconds())
	if done.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after the failover: %s %s", done.GetState(), done.GetError())
	}
	select {
	case <-follower.done:
	case <-time.After(30 * time.Second):
		t.Fatal("status -f did not end with the job")
	}
	t.Logf("cohort status -f across the failover:\n%s", follower.output())
	if code := follower.cmd.ProcessState.ExitCode(); code != 0 || !strings.Contains(follower.output(), "following job "+id+" on the next leader") || !strings.Contains(follower.output(), "resumes on coordinator") {
		t.Errorf("status -f across the failover: exit %d, output:\n%s", code, follower.output())
	}
	out = cohortIn(t, "cluster", "status", "-c", adminYAML)
	t.Logf("cohort cluster status after the kill:\n%s", out)
	if !strings.Contains(out, "unreachable") || strings.Count(out, " leader ") != 1 {
		t.Errorf("cluster status after the kill, want the dead node unreachable and one leader:\n%s", out)
	}

	// Tracking (the coordinators share ./cohort.db): one arm run, rounds
	// 1..8 once each (or marked as committed before the kill), the
	// failover on the arm and site runs.
	checkResumedRuns(t, filepath.Join(dir, "cohort.db"), done.GetTrackingRunId(), 8)
}

// checkResumedRuns asserts the tracking of a job that survived one
// coordinator failure: one arm run with rounds 1..rounds logged once each
// (or marked as committed just before the kill) and one failover point on
// the arm run and on each of the two site runs.
func checkResumedRuns(t *testing.T, db, jobRunID string, rounds int64) {
	t.Helper()
	store, err := tracking.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := context.Background()
	arms, err := store.ChildRuns(ctx, jobRunID)
	if err != nil || len(arms) != 1 {
		t.Fatalf("arm runs: %d, %v; want 1", len(arms), err)
	}
	hist, _ := store.GetMetricHistory(ctx, arms[0].Info.RunID, tracking.MetricRoundSeconds)
	per := map[int64]int{}
	for _, m := range hist {
		per[m.Step]++
	}
	for r := int64(1); r <= rounds; r++ {
		_, marked := arms[0].Data.Tag(fmt.Sprintf("cohort.round_%d.status", r))
		if per[r] != 1 && !(per[r] == 0 && marked) {
			t.Errorf("round %d logged %d times on the arm run, want once", r, per[r])
		}
	}
	if fo, _ := store.GetMetricHistory(ctx, arms[0].Info.RunID, server.MetricFailover); len(fo) != 1 {
		t.Errorf("failover metric on the arm run: %v, want one point", fo)
	}
	sites, _ := store.ChildRuns(ctx, arms[0].Info.RunID)
	if len(sites) != 2 {
		t.Errorf("%d site runs, want 2", len(sites))
	}
	for _, s := range sites {
		if fo, _ := store.GetMetricHistory(ctx, s.Info.RunID, server.MetricFailover); len(fo) != 1 {
			t.Errorf("failover metric on site run %s: %v", s.Info.RunName, fo)
		}
	}
}

// threeCoordinators returns the project.yaml entries of three
// coordinators, coord-1…3, on loopback sockets held open for them
// ([loopbackSockets]), their gRPC addresses and their sockets by name.
func threeCoordinators(t *testing.T) (entries, addrs []string, socks map[string]map[string]net.Listener) {
	t.Helper()
	socks = map[string]map[string]net.Listener{}
	for i := range 3 {
		name := fmt.Sprintf("coord-%d", i+1)
		socks[name] = loopbackSockets(t, socketGRPC, socketRaft)
		grpcAddr, raftAddr := socks[name][socketGRPC].Addr().String(), socks[name][socketRaft].Addr().String()
		entries = append(entries, fmt.Sprintf("{name: %s, address: %q, raft: %q}", name, grpcAddr, raftAddr))
		addrs = append(addrs, grpcAddr)
	}
	return entries, addrs, socks
}

// submitHAJob submits an 8-round job with the admin kit and returns its id.
func submitHAJob(t *testing.T, dir, adminYAML string) string {
	t.Helper()
	jobFile := filepath.Join(dir, "job.yaml")
	os.WriteFile(jobFile, []byte(`name: ha-job
seed: 3
tracking: {experiment: ha}
data: {dataset: fashion-mnist}
model: {kind: mlp, hidden: [32]}
sites: {names: [kit, unibo]}
rounds: 8
train: {epochs: 2, batch_size: 32, lr: 0.05}
arms: [{name: fedavg, strategy: fedavg}]
`), 0o600)
	out := cohortIn(t, "submit", "-c", adminYAML, jobFile)
	m := regexp.MustCompile(`job (\w+) submitted`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submit printed no job id:\n%s", out)
	}
	return m[1]
}

// TestCoordinatorRestartProcess SIGKILLs a lone `cohort coordinator`
// (a one-voter cluster) mid-job and starts it again on the same config:
// the job resumes at the round after the last committed one and
// finishes, in the same tracking runs.
func TestCoordinatorRestartProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs four processes")
	}
	t.Parallel() // its own processes, folder and sockets
	bin := buildCohort(t)
	dir := t.TempDir()
	socks := loopbackSockets(t, socketGRPC)
	addr := socks[socketGRPC].Addr().String()
	project := filepath.Join(dir, "project.yaml")
	os.WriteFile(project, []byte(fmt.Sprintf("name: solo\ncoordinators: [{name: coord, address: %q}]\nsites: [{name: kit}, {name: unibo}]\nadmins: [{name: alice}]\n", addr)), 0o600)
	kits, subset := twoSiteKits(t, dir, project)
	cfg := filepath.Join(kits, "coordinators", "coord", "coordinator.yaml")
	appendLine(t, cfg, fmt.Sprintf("data: {fashion-mnist: %q}", subset))
	coord := startServing(t, socks, "coordinator", dir, bin, "coordinator", "-c", cfg)
	waitFor(t, "the coordinator to listen", 30*time.Second, func() bool { return strings.Contains(coord.output(), "listening") })
	for _, s := range []string{"kit", "unibo"} {
		startProc(t, s, dir, bin, "site", "-c", filepath.Join(kits, "sites", s, "site.yaml"))
	}
	adminYAML := filepath.Join(kits, "admins", "alice", "admin.yaml")
	jobs := jobsClient(t, addr, kitTLS(kits, "admin", "alice", "admin"))
	id := submitHAJob(t, dir, adminYAML)
	job := func() *pb.Job {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		r, err := jobs.GetJob(ctx, &pb.GetJobRequest{JobId: id})
		if err != nil {
			return nil
		}
		return r.GetJob()
	}
	waitFor(t, "round 3 to start", 2*time.Minute, func() bool { j := job(); return j != nil && j.GetRound() >= 3 })
	coord.stop(syscall.SIGKILL)
	// The same socket, as systemd keeps it: connections made meanwhile
	// queue until the restarted coordinator accepts them.
	coord = startServing(t, socks, "coordinator (restarted)", dir, bin, "coordinator", "-c", cfg)
	var done *pb.Job
	waitFor(t, "the job to end after the restart", 2*time.Minute, func() bool {
		j := job()
		if j != nil && (j.GetState() == pb.JobState_JOB_STATE_SUCCEEDED || j.GetState() == pb.JobState_JOB_STATE_FAILED) {
			done = j
		}
		return done != nil
	})
	if done.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job after the restart: %s %s", done.GetState(), done.GetError())
	}
	checkResumedRuns(t, coordinatorDB(t, dir, kits), done.GetTrackingRunId(), 8)
}

// twoSiteKits provisions project's kits in dir/kits and gives its two
// sites, kit and unibo, a half each of the Fashion-MNIST subset, which it
// returns.
func twoSiteKits(t *testing.T, dir, project string) (kits, subset string) {
	t.Helper()
	kits = provisionKits(t, project, filepath.Join(dir, "kits"), time.Now())
	subset, err := data.FindFashionMNISTSubset(".")
	if err != nil {
		t.Fatal(err)
	}
	cohortIn(t, "data", "split", "--from", subset, "--out", filepath.Join(dir, "data"), "kit", "unibo")
	for _, s := range []string{"kit", "unibo"} {
		setSiteData(t, filepath.Join(kits, "sites", s, "site.yaml"), filepath.Join(dir, "data", s))
	}
	return kits, subset
}
