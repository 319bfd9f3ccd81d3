package federation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/server/prepare"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

// Options configures [Run].
type Options struct {
	// BaseDir is the job file's folder: the job's relative data path
	// resolves against it, and an exec model's command runs in it.
	BaseDir string
	// DBPath overrides the job's tracking.uri ("sqlite:PATH").
	DBPath string
	// Progress receives the human-readable progress; nil discards it.
	Progress io.Writer
	// Logger receives the coordinator's and sites' logs; nil discards them.
	Logger *slog.Logger
	// Meter, if set, meters every site's tasks.
	Meter client.Meter
	// CoordMeter, if set, meters the coordinator's aggregation and
	// evaluation; when it is also a server.IdleMeter, it measures the
	// machine's idle power before the job (the sites share the machine).
	CoordMeter server.Meter
	// Version is reported by the coordinator and the sites.
	Version string
	// OpenTracker, if set, opens a job's non-SQLite tracking.uri (a remote
	// MLflow server); without it such a job is refused.
	OpenTracker func(ctx context.Context, uri string) (server.Tracker, func(context.Context) error, error)
}

// Result is what a finished local run leaves behind.
type Result struct {
	Job *pb.Job
	// DBPath is the SQLite file the job logged into, or the URI of the
	// MLflow server.
	DBPath     string
	Comparison tracking.Comparison
}

// Run runs the job file src on this machine and returns when the job has
// ended. The job goes to the coordinator through the Jobs API, as it would
// from `cohort submit`.
func Run(ctx context.Context, src []byte, opts Options) (*Result, error) {
	spec, err := job.Parse(src)
	if err != nil {
		return nil, err
	}
	if opts.Progress == nil {
		opts.Progress = io.Discard
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	dbPath := opts.DBPath
	remote := false
	if dbPath == "" {
		p, ok := strings.CutPrefix(spec.Tracking.URI, "sqlite:")
		switch {
		case ok:
			dbPath = p
		case opts.OpenTracker != nil && (strings.HasPrefix(spec.Tracking.URI, "http://") || strings.HasPrefix(spec.Tracking.URI, "https://")):
			remote = true
		default:
			return nil, fmt.Errorf("tracking.uri %q: `cohort run` logs into sqlite:FILE or an http(s) MLflow server", spec.Tracking.URI)
		}
	}
	fmt.Fprintf(opts.Progress, "loading %s …\n", spec.Data.Dataset)
	ds, err := Load(ctx, spec, opts.BaseDir)
	if err != nil {
		return nil, err
	}
	if v := spec.Sites; v.Virtual > 0 {
		fmt.Fprintf(opts.Progress, "  %d virtual clients, %d a round, trained by %d workers; partitions drawn from %d samples (%s)\n",
			v.Virtual, v.ClientsPerRound, v.Workers, ds.Pooled.N, data.PartitionSpec{Kind: spec.Data.Partition.Kind, Alpha: spec.Data.Partition.Alpha})
		log.Info("virtual_clients", "clients", v.Virtual, "per_round", v.ClientsPerRound, "workers", v.Workers, "pool", ds.Pooled.N)
	}
	for _, n := range spec.Sites.Names {
		if spec.Sites.Virtual > 0 {
			break // the workers hold the pool, not partitions
		}
		s := ds.Sites[n]
		hist := s.Train.LabelHistogram()
		fmt.Fprintf(opts.Progress, "  %-10s %6d train %5d test  labels %v\n", n, s.Train.N, nTest(s), hist)
		log.Info("site_partition", "site", n, "train", s.Train.N, "test", nTest(s), "labels", hist)
	}
	var tr server.Tracker
	if remote {
		t, closeT, err := opts.OpenTracker(ctx, spec.Tracking.URI)
		if err != nil {
			return nil, fmt.Errorf("opening tracking server %s: %w", spec.Tracking.URI, err)
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
			defer cancel()
			if err := closeT(cctx); err != nil {
				log.Warn("tracking_close_failed", "uri", spec.Tracking.URI, "err", err)
			}
		}()
		tr = t
	} else {
		store, err := tracking.OpenSQLite(ctx, dbPath)
		if err != nil {
			return nil, fmt.Errorf("opening tracking store %s: %w", dbPath, err)
		}
		defer store.Close()
		tr = store
	}

	trainers := &train.Factory{Dir: opts.BaseDir, Logger: log.With("component", "trainer")}
	defer trainers.Close()
	shape := ds.Pooled.Shape
	// A large global model waits for its next round on disk, not in memory
	// (server.Config.ModelDir); the folder goes with the run.
	modelDir, err := os.MkdirTemp("", "cohort-models-*")
	if err != nil {
		return nil, fmt.Errorf("making a folder for the global models: %w; set TMPDIR to a writable folder", err)
	}
	defer os.RemoveAll(modelDir)
	coord, err := server.New(server.Config{
		Version: opts.Version,
		// The sites share this machine's memory and cores: receiving their
		// updates one at a time costs no bandwidth and holds one update
		// in the coordinator instead of one per site.
		MaxConcurrentUpdates: 1,
		ModelDir:             modelDir,
		Logger:               log.With("component", "coordinator"),
	},
		server.Deps{Tracker: tr, Meter: opts.CoordMeter, Idle: idleMeter(opts.CoordMeter), Models: &prepare.Models{Trainers: trainers, Test: ds.Test, Shape: shape, Classes: ds.Pooled.Classes}})
	if err != nil {
		return nil, err
	}
	// The coordinator runs on its own one-voter raft node in memory, whose
	// blob store is modelDir: cohort run holds no model twice.
	defer func() {
		if err := coord.Close(); err != nil {
			log.Warn("coordinator_close_failed", "err", err)
		}
	}()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listening on loopback: %w", err)
	}
	gs := grpc.NewServer(server.GRPCOptions()...)
	coord.Register(gs)
	addr := lis.Addr().String()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("coordinator: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			gs.Stop()
		}
		return nil
	})
	g.Go(func() error { return coord.Run(gctx) })

	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	sites := append([]string(nil), spec.Sites.Names...)
	attackers := Attackers(spec)
	for _, name := range sites {
		sd := ds.Sites[name]
		var src client.DataSource = siteSource{dataset: spec.Data.Dataset, train: sd.Train, test: sd.Test}
		var tf client.TrainerFactory = trainers
		if a := attackers[name]; a != nil {
			log.With("component", "site").Warn("simulated_adversary", "site", name, "attacks", a.String())
			fmt.Fprintf(opts.Progress, "  %-10s is a simulated adversary: %s\n", name, a)
			// The attacker declares the data it holds, as any site does;
			// its attacks come after.
			src, tf = declared{a.Data(src), src.(client.Lineager)}, a.Trainers(tf)
		}
		if err := startAgent(gctx, g, name, false, src, tf, opts, addr, dial, log); err != nil {
			return nil, err
		}
	}
	for _, name := range centralSites(spec) {
		if err := startAgent(gctx, g, name, true, siteSource{dataset: spec.Data.Dataset, train: ds.Pooled, test: ds.Test}, trainers, opts, addr, dial, log); err != nil {
			return nil, err
		}
	}

	res, runErr := submitAndWatch(ctx, src, addr, dial, opts.Progress)
	cancel()
	if err := g.Wait(); err != nil && runErr == nil {
		runErr = err
	}
	if res == nil {
		return nil, runErr
	}
	out := &Result{Job: res, DBPath: dbPath}
	if remote {
		out.DBPath = spec.Tracking.URI
	}
	if res.GetTrackingRunId() != "" {
		cctx, ccancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer ccancel()
		cmp, err := tracking.Compare(cctx, tr, res.GetTrackingRunId())
		if err == nil {
			out.Comparison = cmp
		} else if runErr == nil {
			runErr = fmt.Errorf("reading the comparison: %w", err)
		}
	}
	if runErr == nil && res.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		runErr = fmt.Errorf("job %s %s: %s", res.GetJobId(), strings.ToLower(strings.TrimPrefix(res.GetState().String(), "JOB_STATE_")), res.GetError())
	}
	return out, runErr
}

func nTest(s SiteData) int {
	if s.Test == nil {
		return 0
	}
	return s.Test.N
}

// centralSites names the agents that hold the pooled data: each site a
// centralized arm names (centralized.site) outside the federated sites,
// and "central" for the arms that name none.
func centralSites(spec *job.Spec) []string {
	var out []string
	for _, a := range spec.Arms {
		if a.Centralized == nil {
			continue
		}
		name := a.Centralized.Site
		switch {
		case name == "":
			name = "central"
		case slices.Contains(spec.Sites.Names, name):
			continue // that site's agent trains the arm on its own partition
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

func startAgent(ctx context.Context, g *errgroup.Group, name string, central bool, src client.DataSource, tf client.TrainerFactory, opts Options, addr string, dial []grpc.DialOption, log *slog.Logger) error {
	caps := &pb.Capabilities{Trainers: []string{"logreg", "mlp", "cnn", "exec", train.TransferKind}, EnergySources: []string{"estimate"}}
	if central {
		caps.Trainers = append(caps.Trainers, pb.PooledDataTrainer)
	}
	a, err := client.New(client.Config{
		Name: name, Targets: []string{addr}, DialOptions: dial, Version: opts.Version,
		Capabilities: caps, Logger: log.With("component", "site"),
	}, src, tf, opts.Meter)
	if err != nil {
		return err
	}
	g.Go(func() error { return a.Run(ctx) })
	return nil
}

// idleMeter returns m as an IdleMeter, or nil.
func idleMeter(m server.Meter) server.IdleMeter {
	if im, ok := m.(server.IdleMeter); ok {
		return im
	}
	return nil
}
