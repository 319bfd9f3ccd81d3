package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/deploy"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

// torchPython is the interpreter the exec-trainer tests run; they skip
// where it lacks PyTorch.
const torchPython = "/usr/bin/python3"

func needTorch(t *testing.T) {
	t.Helper()
	if err := exec.Command(torchPython, "-c", "import torch").Run(); err != nil {
		t.Skipf("%s cannot import torch (%v): the exec trainer tests need PyTorch", torchPython, err)
	}
}

// TestDeployedExecJob runs an institute's own PyTorch trainer (the
// pytorch-fmnist example, made tiny) in a deployment over mutual TLS: the
// coordinator runs no Python; unibo makes the initial weights (an init
// task), inria evaluates every round's global model on its test set
// (evaluate tasks), and the centralized arm trains at kit, with one
// trainer process per site and arm (exec mode persistent); a job with
// uploaded initial weights runs a process per task. A job whose
// init site never connects fails naming it, and an exec job without
// model.init is refused at submit.
func TestDeployedExecJob(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs four processes with PyTorch")
	}
	needTorch(t)
	t.Parallel() // its own processes, folder and sockets
	bin := buildCohort(t)
	dir := t.TempDir()
	socks := loopbackSockets(t, socketGRPC)
	addr := socks[socketGRPC].Addr().String()
	project := filepath.Join(dir, "project.yaml")
	os.WriteFile(project, []byte(fmt.Sprintf(`name: e2e-exec
coordinators: [{name: coord, address: %q}]
sites: [{name: kit}, {name: unibo}, {name: inria}]
admins: [{name: alice}]
`, addr)), 0o600)
	kits := provisionKits(t, project, filepath.Join(dir, "kits"), time.Now())
	subset, err := data.FindFashionMNISTSubset(".")
	if err != nil {
		t.Fatal(err)
	}
	trainerDir, err := filepath.Abs(filepath.Join("..", "..", "examples", "pytorch-fmnist"))
	if err != nil {
		t.Fatal(err)
	}
	cohortIn(t, "data", "split", "--from", subset, "--out", filepath.Join(dir, "data"), "kit", "unibo", "inria")
	sites := []string{"kit", "unibo", "inria"}
	for _, s := range sites {
		cfg := filepath.Join(kits, "sites", s, "site.yaml")
		setSiteData(t, cfg, filepath.Join(dir, "data", s))
		setTopKey(t, cfg, "exec", fmt.Sprintf("{allow: true, workdir: %q}", trainerDir))
		if _, err := deploy.LoadSiteConfig(cfg); err != nil {
			t.Fatal(err)
		}
	}
	coordCfg := filepath.Join(kits, "coordinators", "coord", "coordinator.yaml")
	setTopKey(t, coordCfg, "site_wait", "4s")
	coord := startServing(t, socks, "coordinator", dir, bin, "coordinator", "-c", coordCfg, "--log-level", "info")
	waitFor(t, "the coordinator to listen", 30*time.Second, func() bool { return strings.Contains(coord.output(), "listening") })
	for _, s := range sites {
		startProc(t, s, dir, bin, "site", "-c", filepath.Join(kits, "sites", s, "site.yaml"), "--log-level", "info")
	}
	waitFor(t, "three sites to connect", 60*time.Second, func() bool {
		return strings.Count(coord.output(), "site_connected") >= 3
	})
	adminCfg := filepath.Join(kits, "admins", "alice", "admin.yaml")
	jobs := jobsClient(t, addr, kitTLS(kits, "admin", "alice", "admin"))

	const job = `name: e2e-exec
seed: 5
tracking: {experiment: e2e-exec}
data: {dataset: fashion-mnist}
model:
  kind: exec
  command: [%s, train.py]
  env: {FMNIST_CONV: "4,8", FMNIST_HIDDEN: "16", FMNIST_THREADS: "1", FMNIST_DEVICE: cpu}
  exec: {mode: persistent}
  %s
sites: {names: [kit, unibo, inria], min_per_round: 3}
rounds: 2
train: {epochs: 1, batch_size: 32, lr: 0.05}
eval: {every: 1, site: inria}
arms:
  - {name: central, centralized: {epochs: 1, site: kit}}
  - {name: fedavg, strategy: fedavg}
  - {name: fedprox, strategy: {name: fedprox, mu: 0.01}}
deadline: {round: 3m}
`
	submitOut := ""
	// submitWith submits the job with init as its model.init, after r's
	// replacements.
	submitWith := func(name string, r *strings.Replacer, init string) string {
		t.Helper()
		f := filepath.Join(dir, name+".yaml")
		os.WriteFile(f, []byte(r.Replace(fmt.Sprintf(job, torchPython, init))), 0o600)
		out := cohortIn(t, "submit", "-c", adminCfg, f)
		submitOut = out
		m := regexp.MustCompile(`job (\w+) submitted`).FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("submit printed no job id:\n%s", out)
		}
		return m[1]
	}
	submit := func(name, init string) string {
		t.Helper()
		return submitWith(name, strings.NewReplacer(), init)
	}
	// watch follows a job to its end and returns its events.
	watch := func(id string) ([]*pb.JobEvent, *pb.Job) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
		defer cancel()
		st, err := jobs.WatchJob(ctx, &pb.WatchJobRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		var evs []*pb.JobEvent
		for {
			ev, err := st.Recv()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("watching job %s: %v", id, err)
			}
			evs = append(evs, ev)
		}
		got, err := jobs.GetJob(context.Background(), &pb.GetJobRequest{JobId: id})
		if err != nil {
			t.Fatal(err)
		}
		return evs, got.GetJob()
	}

	// Without model.init the coordinator refuses the job at submit.
	f := filepath.Join(dir, "noinit.yaml")
	os.WriteFile(f, []byte(fmt.Sprintf(job, torchPython, "")), 0o600)
	var out, errOut strings.Builder
	if err := run(context.Background(), []string{"submit", "-c", adminCfg, f}, &out, &errOut); err == nil || !strings.Contains(err.Error(), "model.init") {
		t.Errorf("submitting an exec job without model.init = %v, want an error naming model.init", err)
	}

	id := submit("job", "init: {site: unibo}")
	evs, info := watch(id)
	if info.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", info.GetState(), info.GetError())
	}
	initSite := ""
	for _, ev := range evs {
		if ev.GetKind() == "init_done" {
			initSite = ev.GetSite()
		}
	}
	if initSite != "unibo" {
		t.Errorf("init_done event from site %q, want unibo", initSite)
	}
	if out := coord.output(); strings.Contains(out, "python") && strings.Contains(out, "trainer_started") {
		t.Errorf("the coordinator started a trainer process:\n%s", out)
	}

	// The ghost site never connects: the init task fails naming it.
	ghost := submit("ghost", "init: {site: ghost}")
	_, ginfo := watch(ghost)
	if ginfo.GetState() != pb.JobState_JOB_STATE_FAILED || !strings.Contains(ginfo.GetError(), `site "ghost"`) ||
		!strings.Contains(ginfo.GetError(), "did not connect") {
		t.Errorf("job with init site ghost: %s %q, want failed naming site \"ghost\" that did not connect", ginfo.GetState(), ginfo.GetError())
	}

	// Initial weights from a file: submit uploads it. The built-in cnn
	// with the trainer's layer sizes makes a state_dict train.py loads.
	tr, err := train.New(train.Config{Kind: "cnn", Conv: []int{4, 8}, InputShape: []int{1, 28, 28}, Classes: 10})
	if err != nil {
		t.Fatal(err)
	}
	w0, err := tr.Init(9)
	if err != nil {
		t.Fatal(err)
	}
	b, err := model.MarshalSafetensors(w0, nil)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "init.safetensors"), b, 0o600)
	const weightsJob = "weights"
	wid := submitWith(weightsJob, strings.NewReplacer(`FMNIST_HIDDEN: "16"`, `FMNIST_HIDDEN: "512"`, "rounds: 2", "rounds: 1", "mode: persistent", "mode: per-task"),
		"init: {weights: init.safetensors}")
	if !strings.Contains(submitOut, "uploaded") {
		t.Errorf("submit with model.init.weights printed no upload:\n%s", submitOut)
	}
	wevs, winfo := watch(wid)
	if winfo.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Errorf("job with uploaded weights %s: %s", winfo.GetState(), winfo.GetError())
	}
	for _, ev := range wevs {
		if ev.GetKind() == "init_done" {
			t.Errorf("job with uploaded weights ran an init task on %s", ev.GetSite())
		}
	}

	coord.stop(syscall.SIGTERM)
	store, err := tracking.OpenSQLite(context.Background(), coordinatorDB(t, dir, kits))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	arms, err := store.ChildRuns(context.Background(), info.GetTrackingRunId())
	if err != nil || len(arms) != 3 {
		t.Fatalf("arm runs: %d, %v; want 3", len(arms), err)
	}
	for _, arm := range arms {
		name, _ := arm.Data.Tag(tracking.TagArm)
		if m, _ := arm.Data.Tag(server.TagEvalMethod); m != server.EvalSitePrefix+"inria" {
			t.Errorf("arm %s: %s = %q, want site:inria", name, server.TagEvalMethod, m)
		}
		acc, err := store.GetMetricHistory(context.Background(), arm.Info.RunID, tracking.MetricTestAccuracy)
		if err != nil {
			t.Fatal(err)
		}
		steps := map[int64]bool{}
		for _, m := range acc {
			steps[m.Step] = true
		}
		last := int64(2)
		if name == "central" {
			last = 1
		}
		for r := int64(0); r <= last; r++ {
			if !steps[r] {
				t.Errorf("arm %s: no test_accuracy at step %d: %v", name, r, acc)
			}
		}
		if e, err := store.GetMetricHistory(context.Background(), arm.Info.RunID, "eval_energy_joules"); err != nil || len(e) == 0 {
			t.Errorf("arm %s: no eval_energy_joules from inria's evaluate tasks (%v)", name, err)
		}
		if name != "central" {
			continue
		}
		siteRuns, err := store.ChildRuns(context.Background(), arm.Info.RunID)
		if err != nil {
			t.Fatal(err)
		}
		var ran []string
		for _, r := range siteRuns {
			s, _ := r.Data.Tag(tracking.TagSite)
			ran = append(ran, s)
		}
		if len(ran) != 1 || ran[0] != "kit" {
			t.Errorf("the centralized arm ran on %v, want [kit]", ran)
		}
	}
}

// setTopKey sets a top-level key of a kit's config file to value.
func setTopKey(t *testing.T, path, key, value string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`(?m)^` + key + `:.*$`)
	line := key + ": " + value
	if re.Match(b) {
		b = re.ReplaceAll(b, []byte(line))
	} else {
		b = append(b, []byte("\n"+line+"\n")...)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}
