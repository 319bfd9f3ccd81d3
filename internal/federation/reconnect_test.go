package federation

import (
	"context"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

// startCoordinator serves a coordinator on its own in-memory replica on
// lis until the returned stop is called (or the test ends).
func startCoordinator(t testing.TB, name string, lis net.Listener, d coordDeps) (stop func()) {
	t.Helper()
	return serveCoordinator(t, name, lis, nil, d, false, nil)
}

// startAgents runs one site agent per name, each with its own connection
// to targets (dialled with dial) and its partition of ds, until ctx ends;
// the returned function waits for them. base supplies the other agent
// settings.
func startAgents(tb testing.TB, ctx context.Context, names []string, ds *Datasets, targets []string, dial []grpc.DialOption, log *slog.Logger, base client.Config) (wait func()) {
	tb.Helper()
	var wg sync.WaitGroup
	trainers := &train.Factory{}
	for _, name := range names {
		sd := ds.Sites[name]
		cfg := base
		cfg.Name, cfg.Targets, cfg.Logger = name, targets, log
		cfg.DialOptions = dial
		a, err := client.New(cfg, siteSource{train: sd.Train, test: sd.Test}, trainers, nil)
		if err != nil {
			tb.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = a.Run(ctx) }()
	}
	return wg.Wait
}

// TestSiteSurvivesCoordinatorRestart kills the coordinator under a
// connected site, starts a new one on the same address, and runs a job
// there: the site must have reconnected by itself.
func TestSiteSurvivesCoordinatorRestart(t *testing.T) {
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	src := []byte(`
name: restart
data: {dataset: fashion-mnist, path: "` + subset + `"}
model: {kind: logreg}
sites: {count: 2}
rounds: 1
arms: [{name: fedavg, strategy: fedavg}]
`)
	spec, err := job.Parse(src)
	if err != nil {
		t.Fatal(err)
	}
	ds, err := Load(context.Background(), spec, "")
	if err != nil {
		t.Fatal(err)
	}
	store, err := tracking.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "cohort.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	d := coordDeps{ds: ds, store: store, log: log}
	sb := newSwitchboard()
	lis, addr := sb.listen("coord")
	// The first coordinator's replica is explicit, to see the sites join.
	node, err := ha.NewInMemory(context.Background(), ha.Config{ID: "coord", Peers: []ha.Peer{{ID: "coord"}}, DigestsOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	stopA := serveCoordinator(t, "coord", lis, node, d, true, func() { sb.down("coord", lis) })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	agentsCtx, stopAgents := context.WithCancel(ctx)
	wait := startAgents(t, agentsCtx, spec.Sites.Names, ds, []string{addr}, sb.dialOptions(), log, haAgents)
	defer stopWithin(t, "stopping the site agents", func() { stopAgents(); wait() })
	if !waitFor(waitTimeout, func() []<-chan struct{} { return []<-chan struct{}{node.FSM().Changed()} },
		func() bool { return len(node.FSM().Sites()) == len(spec.Sites.Names) }) {
		t.Fatalf("%d of %d sites joined the first coordinator within %v", len(node.FSM().Sites()), len(spec.Sites.Names), waitTimeout)
	}
	stopA()

	lis, _ = sb.listen("coord")
	startCoordinator(t, "coord", lis, d)
	got, err := submitAndWatch(ctx, src, addr, sb.dialOptions(), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job on the restarted coordinator: %v %s; the sites did not come back", got.GetState(), got.GetError())
	}
}

func TestRunRejectsBadJobs(t *testing.T) {
	tests := []struct {
		name, job, want string
	}{
		{"typo", "name: x\nrounds: 1\ntrian: {}\narms: [{strategy: fedavg}]\ndata: {dataset: fashion-mnist}\nmodel: {kind: mlp}\nsites: {count: 2}\n", `unknown key "trian"`},
		{"missing data", "name: x\nrounds: 1\narms: [{strategy: fedavg}]\ndata: {dataset: fashion-mnist, path: /no/such/dir}\nmodel: {kind: mlp}\nsites: {count: 2}\n", "/no/such/dir"},
		{"remote tracking", "name: x\nrounds: 1\ntracking: {uri: 'http://mlflow:5000'}\narms: [{strategy: fedavg}]\ndata: {dataset: fashion-mnist}\nmodel: {kind: mlp}\nsites: {count: 2}\n", "sqlite:FILE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Run(context.Background(), []byte(tt.job), Options{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Run = %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}
