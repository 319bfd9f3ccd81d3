package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/deploy"
	"github.com/cohortfl/cohort/internal/activation"
	"github.com/cohortfl/cohort/internal/federation"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

var (
	buildOnce sync.Once
	binDir    string // where buildCohort puts the binary; TestMain removes it
	cohortBin string
	buildErr  error
)

// TestMain removes the binary the multi-process tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		os.RemoveAll(binDir)
	}
	os.Exit(code)
}

// buildCohort builds this binary, once per test binary, for the
// multi-process tests, and returns its path.
func buildCohort(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if binDir, buildErr = os.MkdirTemp("", "cohort-test-"); buildErr != nil {
			return
		}
		cohortBin = filepath.Join(binDir, "cohort")
		if out, err := exec.Command("go", "build", "-o", cohortBin, ".").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return cohortBin
}

// proc is a cohort process whose output the test reads.
type proc struct {
	name string
	cmd  *exec.Cmd
	mu   sync.Mutex
	out  bytes.Buffer
	done chan struct{}
}

func (p *proc) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.Write(b)
}

func (p *proc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.out.String()
}

func startProc(t *testing.T, name, dir, bin string, args ...string) *proc {
	t.Helper()
	return startServing(t, nil, name, dir, bin, args...)
}

// startServing starts a process that inherits socks, as from systemd's
// socket activation, and serves on them.
func startServing(t *testing.T, socks map[string]net.Listener, name, dir, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = p, p
	if len(socks) > 0 {
		if err := activation.Pass(p.cmd, socks); err != nil {
			t.Fatal(err)
		}
	}
	err := p.cmd.Start()
	for _, f := range p.cmd.ExtraFiles { // the child has its own copies
		f.Close()
	}
	if err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(syscall.SIGTERM)
		if t.Failed() {
			t.Logf("--- %s output:\n%s", name, p.output())
		}
	})
	return p
}

// stop sends sig and waits for the process to end (SIGKILL after 10 s).
func (p *proc) stop(sig syscall.Signal) {
	_ = p.cmd.Process.Signal(sig)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// loopbackSockets binds one socket per name on a loopback port and holds
// them open until the test ends. A process started with them
// ([startServing]) serves on them instead of binding its address, so no
// other process can take a port between the test choosing it and the
// process serving on it; the sockets outlive the process, as with
// systemd, and queue connections across a restart.
func loopbackSockets(t *testing.T, names ...string) map[string]net.Listener {
	t.Helper()
	socks := map[string]net.Listener{}
	for _, name := range names {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		socks[name] = l
	}
	return socks
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func cohortIn(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("cohort %v: %v\n%s%s", args, err, out.String(), errOut.String())
	}
	return out.String()
}

// setSiteData points a kit's site.yaml at the site's own data folder.
func setSiteData(t *testing.T, path, dataDir string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^data:.*$`)
	line := fmt.Sprintf("data: {fashion-mnist: %q}", dataDir)
	if re.Match(b) {
		b = re.ReplaceAll(b, []byte(line))
	} else {
		b = append(b, []byte("\n"+line+"\n")...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := deploy.LoadSiteConfig(path); err != nil {
		t.Fatalf("site.yaml with data: %v", err)
	}
}

func jobsClient(t *testing.T, addr string, kit deploy.TLSFiles) pb.JobsServiceClient {
	t.Helper()
	tc, err := kit.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return pb.NewJobsServiceClient(cc)
}

// TestDeploymentOverTLS is the deployment walk-through as a test: it
// provisions a project, starts a coordinator and three site processes over
// mutual TLS on loopback, submits a job with the admin kit, kills one site
// mid-round and restarts it, and sees the job finish; a site certificate
// from another CA and an admin call with a site certificate are refused.
func TestDeploymentOverTLS(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs five processes")
	}
	t.Parallel() // its own processes, folder and sockets
	bin := buildCohort(t)
	dir := t.TempDir()
	socks := loopbackSockets(t, socketGRPC)
	addr := socks[socketGRPC].Addr().String()
	project := filepath.Join(dir, "project.yaml")
	os.WriteFile(project, []byte(fmt.Sprintf(`name: e2e
coordinators: [{name: coord, address: %q}]
sites: [{name: kit}, {name: unibo}, {name: inria}]
admins: [{name: alice}]
`, addr)), 0o600)
	kits := provisionKits(t, project, filepath.Join(dir, "kits"), time.Now())

	subset, err := data.FindFashionMNISTSubset(".")
	if err != nil {
		t.Fatal(err)
	}
	cohortIn(t, "data", "split", "--from", subset, "--out", filepath.Join(dir, "data"), "kit", "unibo", "inria")
	sites := []string{"kit", "unibo", "inria"}
	for _, s := range sites {
		setSiteData(t, filepath.Join(kits, "sites", s, "site.yaml"), filepath.Join(dir, "data", s))
	}

	appendLine(t, filepath.Join(kits, "coordinators", "coord", "coordinator.yaml"), fmt.Sprintf("data: {fashion-mnist: %q}", subset))
	coord := startServing(t, socks, "coordinator", dir, bin, "coordinator", "-c", filepath.Join(kits, "coordinators", "coord", "coordinator.yaml"), "--log-level", "info")
	waitFor(t, "the coordinator to listen", 30*time.Second, func() bool { return strings.Contains(coord.output(), "listening") })
	procs := map[string]*proc{}
	for _, s := range sites {
		procs[s] = startProc(t, s, dir, bin, "site", "-c", filepath.Join(kits, "sites", s, "site.yaml"), "--log-level", "info")
	}

	admin := deploy.TLSFiles{
		Cert: filepath.Join(kits, "admins", "alice", "admin.crt"),
		Key:  filepath.Join(kits, "admins", "alice", "admin.key"),
		CA:   filepath.Join(kits, "admins", "alice", "ca.crt"),
	}
	jobs := jobsClient(t, addr, admin)

	jobFile := filepath.Join(dir, "job.yaml")
	os.WriteFile(jobFile, []byte(`name: e2e-job
seed: 3
tracking: {experiment: e2e}
data: {dataset: fashion-mnist}
model: {kind: mlp, hidden: [64]}
sites: {names: [kit, unibo, inria], min_per_round: 2}
rounds: 6
train: {epochs: 8, batch_size: 32, lr: 0.05}
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 60s}
`), 0o600)
	out := cohortIn(t, "submit", "-c", filepath.Join(kits, "admins", "alice", "admin.yaml"), jobFile)
	m := regexp.MustCompile(`job (\w+) submitted`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("submit printed no job id:\n%s", out)
	}
	id := m[1]

	// Follow the job; kill unibo as round 3 starts (its task is out: it is
	// receiving or training it), restart it, and see the job through.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := jobs.WatchJob(ctx, &pb.WatchJobRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	killed, failedSeen := false, false
	for {
		ev, err := st.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("watching the job: %v", err)
		}
		if ev.GetKind() == "round_started" && ev.GetRound() == 3 && !killed {
			procs["unibo"].stop(syscall.SIGKILL)
			killed = true
			procs["unibo"] = startProc(t, "unibo (restarted)", dir, bin, "site", "-c", filepath.Join(kits, "sites", "unibo", "site.yaml"))
		}
		if ev.GetKind() == "site_failed" && ev.GetSite() == "unibo" && ev.GetRound() == 3 {
			failedSeen = true
		}
	}
	got, err := jobs.GetJob(context.Background(), &pb.GetJobRequest{JobId: id})
	if err != nil {
		t.Fatal(err)
	}
	if got.GetJob().GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", got.GetJob().GetState(), got.GetJob().GetError())
	}
	if !failedSeen {
		t.Errorf("no site_failed event for unibo in round 3: the kill did not land mid-round")
	}

	// Synthetic data generated at each site, and the coordinator's own
	// synthetic test set; then a transfer model, which has no accuracy and
	// says so instead of printing 0.
	for _, tc := range []struct{ model, want string }{
		{"{kind: logreg}", "arm fedavg done in"},
		{"{kind: transfer, params: 5000}", "no test set on the coordinator and no federated accuracy"},
	} {
		resp, err := jobs.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: []byte(`name: e2e-synthetic
seed: 4
tracking: {experiment: e2e}
data: {dataset: synthetic, synthetic: {alpha: 0, beta: 0, samples_per_site: 300}}
model: ` + tc.model + `
sites: {names: [kit, unibo, inria]}
rounds: 2
train: {epochs: 2, batch_size: 16, lr: 0.05}
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 60s}
`)})
		if err != nil {
			t.Fatalf("submitting a synthetic job with model %s: %v", tc.model, err)
		}
		var progress strings.Builder
		sj, err := federation.WatchJob(ctx, jobs, resp.GetJob().GetJobId(), &progress, false)
		if err != nil {
			t.Fatalf("model %s: %v\n%s", tc.model, err, progress.String())
		}
		out := progress.String()
		t.Logf("synthetic job, model %s:\n%s", tc.model, out)
		if sj.GetState() != pb.JobState_JOB_STATE_SUCCEEDED || !strings.Contains(out, tc.want) || strings.Contains(out, "accuracy 0.0000") {
			t.Errorf("synthetic job with model %s: %s %s; progress:\n%s", tc.model, sj.GetState(), sj.GetError(), out)
		}
		if tc.model == "{kind: logreg}" && (sj.GetNoTestSet() || sj.GetAccuracy() < 0.3) {
			// Synthetic(0,0), 10 classes: chance is about 0.1 to 0.3 (skewed labels).
			t.Errorf("synthetic logreg job: accuracy %.3f (no test set %v), want the coordinator's synthetic test set and ≥ 0.3; progress:\n%s", sj.GetAccuracy(), sj.GetNoTestSet(), out)
		}
	}

	// Tracking: the coordinator's store holds the run tree, unibo's run
	// records round 3 as not counted and takes part again afterwards.
	coord.stop(syscall.SIGTERM)
	store, err := tracking.OpenSQLite(context.Background(), coordinatorDB(t, dir, kits))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	arms, err := store.ChildRuns(context.Background(), got.GetJob().GetTrackingRunId())
	if err != nil || len(arms) != 1 {
		t.Fatalf("arm runs: %v, %v", arms, err)
	}
	acc, err := store.GetMetricHistory(context.Background(), arms[0].Info.RunID, tracking.MetricTestAccuracy)
	if err != nil {
		t.Fatal(err)
	}
	steps := map[int64]bool{}
	for _, m := range acc {
		steps[m.Step] = true
	}
	for r := int64(1); r <= 6; r++ {
		if !steps[r] {
			t.Errorf("round %d has no test_accuracy on the arm run: %v", r, acc)
		}
	}
	siteRuns, err := store.ChildRuns(context.Background(), arms[0].Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	var unibo *tracking.Run
	for i := range siteRuns {
		if v, _ := siteRuns[i].Data.Tag(tracking.TagSite); v == "unibo" {
			unibo = &siteRuns[i]
		}
	}
	if unibo == nil {
		t.Fatalf("no site run for unibo among %d", len(siteRuns))
	}
	if v, ok := unibo.Data.Tag("cohort.round_3.status"); !ok || v == "" {
		t.Errorf("unibo's site run has no round 3 status tag: %v", unibo.Data.Tags)
	}
	hist, err := store.GetMetricHistory(context.Background(), unibo.Info.RunID, "accepted")
	if err != nil {
		t.Fatal(err)
	}
	back := false
	for _, m := range hist {
		if m.Step > 3 && m.Value == 1 {
			back = true
		}
	}
	if !back {
		t.Errorf("the restarted unibo never counted in a later round: accepted %v", hist)
	}
}

// coordinatorDB finds the coordinator's tracking file from its config; a
// relative path is relative to the coordinator's working directory, dir.
func coordinatorDB(t *testing.T, dir, kits string) string {
	t.Helper()
	cfg, err := deploy.LoadCoordinatorConfig(filepath.Join(kits, "coordinators", "coord", "coordinator.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	p, ok := strings.CutPrefix(cfg.Tracking.URI, "sqlite:")
	if !ok {
		t.Fatalf("coordinator tracking %q is not sqlite", cfg.Tracking.URI)
	}
	if !filepath.IsAbs(p) {
		p = filepath.Join(dir, p)
	}
	return p
}

// provisionKits provisions a project file into out, as `cohort
// provision` does, and returns out.
func provisionKits(t *testing.T, project, out string, now time.Time) string {
	t.Helper()
	p, err := deploy.LoadProject(project)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := deploy.Provision(p, out, now); err != nil {
		t.Fatal(err)
	}
	return out
}

func appendLine(t *testing.T, path, line string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fmt.Fprintln(f, line); err != nil {
		t.Fatal(err)
	}
}

func kitTLS(kits, role, name, file string) deploy.TLSFiles {
	d := filepath.Join(kits, role+"s", name)
	return deploy.TLSFiles{Cert: filepath.Join(d, file+".crt"), Key: filepath.Join(d, file+".key"), CA: filepath.Join(d, "ca.crt")}
}

// TestDeploymentRefusals: a site certificate from another CA, a site
// certificate on the Jobs API and an admin certificate on the site
// session are refused, each with an answer that says why, and the
// coordinator logs the foreign certificate.
func TestDeploymentRefusals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel() // its own processes, folder and sockets
	bin := buildCohort(t)
	dir := t.TempDir()
	socks := loopbackSockets(t, socketGRPC)
	addr := socks[socketGRPC].Addr().String()
	project := filepath.Join(dir, "project.yaml")
	os.WriteFile(project, []byte(fmt.Sprintf("name: ours\ncoordinators: [{name: coord, address: %q}]\nsites: [{name: kit}]\nadmins: [{name: alice}]\n", addr)), 0o600)
	kits := provisionKits(t, project, filepath.Join(dir, "kits"), time.Now())
	other := filepath.Join(dir, "other.yaml")
	os.WriteFile(other, []byte(fmt.Sprintf("name: theirs\ncoordinators: [{name: coord, address: %q}]\nsites: [{name: kit}]\nadmins: [{name: mallory}]\n", addr)), 0o600)
	foreign := provisionKits(t, other, filepath.Join(dir, "foreign"), time.Now())
	// The coordinator's test set is named but not there yet.
	testSet := filepath.Join(dir, "coordinator-fmnist")
	appendLine(t, filepath.Join(kits, "coordinators", "coord", "coordinator.yaml"), fmt.Sprintf("data: {fashion-mnist: %q}", testSet))

	coord := startServing(t, socks, "coordinator", dir, bin, "coordinator", "-c", filepath.Join(kits, "coordinators", "coord", "coordinator.yaml"))
	waitFor(t, "the coordinator to listen", 30*time.Second, func() bool { return strings.Contains(coord.output(), "listening") })

	// Jobs a deployment cannot run are refused at submit, naming the fix;
	// a missing test set is looked for again at the next submission.
	admin := jobsClient(t, addr, kitTLS(kits, "admin", "alice", "admin"))
	submit := func(sites string) error {
		_, err := admin.SubmitJob(context.Background(), &pb.SubmitJobRequest{JobYaml: []byte("name: refused\ndata: {dataset: fashion-mnist}\nmodel: {kind: logreg}\nsites: " + sites + "\nrounds: 1\narms: [{name: fedavg, strategy: fedavg}]\n")})
		return err
	}
	for _, tc := range []struct{ sites, want string }{
		{"{count: 2}", "list them: sites: {names: [kit, unibo, ...]}"},
		{"{names: [kit]}", fmt.Sprintf("coordinator.yaml data.fashion-mnist %q", testSet)},
	} {
		if err := submit(tc.sites); status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
			t.Errorf("submitting a job with sites %s: %v, want InvalidArgument saying %q", tc.sites, err, tc.want)
		}
	}
	subset, err := data.FindFashionMNISTSubset(".")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(testSet, os.DirFS(subset)); err != nil {
		t.Fatal(err)
	}
	if err := submit("{names: [kit]}"); err != nil {
		t.Errorf("submitting after the coordinator's test set was put in place: %v, want queued", err)
	}

	// A site certificate on the Jobs API.
	site := kitTLS(kits, "site", "kit", "site")
	_, err = jobsClient(t, addr, site).ListJobs(context.Background(), &pb.ListJobsRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), deploy.RoleAdmin) {
		t.Errorf("ListJobs with a site certificate: %v, want PermissionDenied naming %s", err, deploy.RoleAdmin)
	}
	// An admin certificate on the site session.
	adm := kitTLS(kits, "admin", "alice", "admin")
	tc, err := adm.ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = pb.NewCoordinatorServiceClient(cc).Join(context.Background(), &pb.JoinRequest{SiteName: "alice"})
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("Join with an admin certificate: %v, want PermissionDenied", err)
	}
	// The admin kit does reach the Jobs API.
	if _, err := jobsClient(t, addr, adm).ListJobs(context.Background(), &pb.ListJobsRequest{}); err != nil {
		t.Errorf("ListJobs with the admin kit: %v", err)
	}
	// A site whose certificate another CA signed (it trusts our CA, so
	// it gets as far as presenting its certificate).
	// (deploy's own loader refuses such a kit outright, so this client is
	// put together by hand.)
	forged := kitTLS(foreign, "site", "kit", "site")
	pair, err := tls.LoadX509KeyPair(forged.Cert, forged.Key)
	if err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(site.CA)
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	tc = &tls.Config{Certificates: []tls.Certificate{pair}, RootCAs: roots, MinVersion: tls.VersionTLS13}
	fc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		t.Fatal(err)
	}
	defer fc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := pb.NewCoordinatorServiceClient(fc).Join(ctx, &pb.JoinRequest{SiteName: "kit"}); err == nil {
		t.Error("Join with a certificate from another CA succeeded")
	} else {
		t.Logf("Join with a certificate from another CA: %v", err)
	}
	waitFor(t, "the coordinator to log the foreign certificate", 10*time.Second, func() bool {
		return strings.Contains(coord.output(), "another CA")
	})
	// The site agent with the foreign kit as it is (trusting its own CA)
	// says the coordinator is not the one its kit knows.
	fsite := filepath.Join(foreign, "sites", "kit", "site.yaml")
	sp := startProc(t, "foreign site", dir, bin, "site", "-c", fsite)
	waitFor(t, "the foreign site to say why it cannot connect", 20*time.Second, func() bool {
		return strings.Contains(sp.output(), "not signed by the CA")
	})
}
