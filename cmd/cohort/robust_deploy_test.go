package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/deploy"
	"github.com/cohortfl/cohort/internal/federation"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

// TestDeployedAttackIsRefused replays the hijack measured against an
// unprotected coordinator — one authenticated site claims 2^40 samples and
// sends the negated model — against a real coordinator process and three
// honest site processes over mutual TLS. The attacker is a real site agent
// with its own certificate, in this process, its trainer wrapped by the
// simulation's attacker. The coordinator caps its claim at the samples it
// declared, refuses its update every round, and the job succeeds on the
// honest sites.
func TestDeployedAttackIsRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and runs four processes")
	}
	t.Parallel() // its own processes, folder and sockets
	bin := buildCohort(t)
	dir := t.TempDir()
	socks := loopbackSockets(t, socketGRPC)
	addr := socks[socketGRPC].Addr().String()
	project := filepath.Join(dir, "project.yaml")
	os.WriteFile(project, []byte(fmt.Sprintf(`name: robust
coordinators: [{name: coord, address: %q}]
sites: [{name: kit}, {name: unibo}, {name: inria}, {name: evil}]
admins: [{name: alice}]
`, addr)), 0o600)
	kits := provisionKits(t, project, filepath.Join(dir, "kits"), time.Now())
	subset, err := data.FindFashionMNISTSubset(".")
	if err != nil {
		t.Fatal(err)
	}
	sites := []string{"kit", "unibo", "inria", "evil"}
	cohortIn(t, append([]string{"data", "split", "--from", subset, "--out", filepath.Join(dir, "data")}, sites...)...)
	for _, s := range sites {
		setSiteData(t, filepath.Join(kits, "sites", s, "site.yaml"), filepath.Join(dir, "data", s))
	}
	appendLine(t, filepath.Join(kits, "coordinators", "coord", "coordinator.yaml"), fmt.Sprintf("data: {fashion-mnist: %q}", subset))
	coord := startServing(t, socks, "coordinator", dir, bin, "coordinator", "-c", filepath.Join(kits, "coordinators", "coord", "coordinator.yaml"), "--log-level", "info")
	waitFor(t, "the coordinator to listen", 30*time.Second, func() bool { return strings.Contains(coord.output(), "listening") })
	for _, s := range sites[:3] {
		startProc(t, s, dir, bin, "site", "-c", filepath.Join(kits, "sites", s, "site.yaml"), "--log-level", "info")
	}

	// The attacker: a site agent with evil's kit and data.
	cfg, err := deploy.LoadSiteConfig(filepath.Join(kits, "sites", "evil", "site.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dial, err := dialOptions(cfg.TLS)
	if err != nil {
		t.Fatal(err)
	}
	atk := federation.NewAttacker(1, job.Adversary{Site: "evil", Attacks: []job.Attack{
		{Kind: job.AttackClaimSamples, Samples: 1 << 40}, {Kind: job.AttackScale, Factor: -1},
	}})
	agent, err := client.New(client.Config{
		Name: "evil", Targets: cfg.Coordinators, DialOptions: dial,
		Capabilities: &pb.Capabilities{Trainers: []string{"logreg", "mlp", "cnn"}, EnergySources: []string{"estimate"}},
	}, &client.LocalData{Paths: cfg.Data}, atk.Trainers(&train.Factory{}), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Run(ctx) }()
	defer func() { cancel(); <-agentDone }()

	jobFile := filepath.Join(dir, "job.yaml")
	os.WriteFile(jobFile, []byte(`name: hijack
seed: 3
tracking: {experiment: robust}
data: {dataset: fashion-mnist}
model: {kind: mlp, hidden: [64]}
sites: {names: [kit, unibo, inria, evil], min_per_round: 3}
rounds: 3
train: {epochs: 2, batch_size: 32, lr: 0.05}
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 60s}
`), 0o600)
	out := cohortIn(t, "submit", "-c", filepath.Join(kits, "admins", "alice", "admin.yaml"), "--watch", jobFile)
	if !strings.Contains(out, "site_screened") && !strings.Contains(out, "refused: delta norm") {
		t.Errorf("cohort submit --watch shows no screened update:\n%s", out)
	}
	coord.stop(syscall.SIGTERM) // the store is read below
	store, err := tracking.OpenSQLite(context.Background(), coordinatorDB(t, dir, kits))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	runs, _, err := store.SearchRuns(context.Background(), tracking.RunQuery{Filter: "tags.`cohort.kind` = 'job'"})
	if err != nil || len(runs) != 1 {
		t.Fatalf("job runs: %d, %v", len(runs), err)
	}
	if runs[0].Info.Status != tracking.StatusFinished {
		t.Fatalf("the job's run is %s, want FINISHED: one site must not be able to fail the job", runs[0].Info.Status)
	}
	cmp, err := tracking.Compare(context.Background(), store, runs[0].Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if acc := cmp.Arms[0].FinalAccuracy; !(acc > 0.5) {
		t.Errorf("final accuracy %v: the attacker moved the model (the honest sites reach > 0.5)", acc)
	}
	siteRuns, err := store.ChildRuns(context.Background(), cmp.Arms[0].RunID)
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, r := range siteRuns {
		site, _ := r.Data.Tag(tracking.TagSite)
		tag, screened := r.Data.Tag(server.TagScreened)
		switch {
		case site == "evil":
			found = true
			if !screened || !strings.HasPrefix(tag, "refused: delta norm") {
				t.Errorf("evil's %s tag = %q, want its update refused for its norm", server.TagScreened, tag)
			}
		case screened:
			t.Errorf("honest site %s was screened: %q", site, tag)
		}
	}
	if !found {
		t.Errorf("no site run for evil among %d", len(siteRuns))
	}
}
