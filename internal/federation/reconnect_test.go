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
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/server/prepare"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

// startCoordinator serves a coordinator on addr until the returned stop is
// called.
func startCoordinator(t testing.TB, addr string, ds *Datasets, store *tracking.SQLiteStore, log *slog.Logger) (stop func()) {
	t.Helper()
	coord, err := server.New(server.Config{Logger: log, SiteWait: 30 * time.Second},
		server.Deps{Tracker: store, Models: &prepare.Models{Trainers: &train.Factory{}, Test: ds.Test, Shape: ds.Pooled.Shape, Classes: ds.Pooled.Classes}})
	if err != nil {
		t.Fatal(err)
	}
	lis := listenRetry(t, addr)
	gs := grpc.NewServer()
	coord.Register(gs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	go func() { defer wg.Done(); _ = coord.Run(ctx) }()
	return func() {
		cancel()
		gs.Stop()
		wg.Wait()
		_ = coord.Close()
	}
}

// listenRetry listens on addr, retrying for a second: the port may linger
// briefly after the last server.
func listenRetry(t testing.TB, addr string) net.Listener {
	t.Helper()
	var lis net.Listener
	var err error
	for try := 0; try < 50; try++ {
		if lis, err = net.Listen("tcp", addr); err == nil {
			return lis
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal(err)
	return nil
}

// startAgents runs one site agent per name, each with its own connection
// to addr and its partition of ds, until ctx ends; the returned function
// waits for them. base supplies the other agent settings.
func startAgents(tb testing.TB, ctx context.Context, names []string, ds *Datasets, targets []string, log *slog.Logger, base client.Config) (wait func()) {
	tb.Helper()
	var wg sync.WaitGroup
	trainers := &train.Factory{}
	for _, name := range names {
		sd := ds.Sites[name]
		cfg := base
		cfg.Name, cfg.Targets, cfg.Logger = name, targets, log
		cfg.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
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
	addr := freeAddrs(t, 1)[0]

	stopA := startCoordinator(t, addr, ds, store, log)
	ctx, cancel := context.WithCancel(context.Background())
	wait := startAgents(t, ctx, spec.Sites.Names, ds, []string{addr}, log, client.Config{BackoffInitial: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond})
	defer func() { cancel(); wait() }()
	time.Sleep(100 * time.Millisecond) // let the sites join the first coordinator
	stopA()

	stopB := startCoordinator(t, addr, ds, store, log)
	defer stopB()
	got, err := submitAndWatch(ctx, src, addr, []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, io.Discard)
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
