package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"runtime/debug"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohortfl/cohort/deploy"
	"github.com/cohortfl/cohort/internal/hclogslog"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/server/blobs"
	"github.com/cohortfl/cohort/server/ha"
	"github.com/cohortfl/cohort/server/prepare"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

func coordinatorCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("coordinator", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "coordinator.yaml", "the coordinator's config file (from its startup kit)")
	level := fs.String("log-level", "", "log level: debug, info, warn, error (default: the config's log.level)")
	format := fs.String("log-format", "", "log format: text or json (default: the config's log.format)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("coordinator takes no arguments, got %q; the config file goes after -c", fs.Args())
	}
	cfg, err := deploy.LoadCoordinatorConfig(*path)
	if err != nil {
		return err
	}
	log, err := newLogger(stderr, pick(*level, cfg.Log.Level), pick(*format, cfg.Log.Format))
	if err != nil {
		return err
	}
	log = log.With("coordinator", cfg.Name)
	if cfg.MemoryLimit > 0 {
		debug.SetMemoryLimit(cfg.MemoryLimit)
	}
	creds, err := coordinatorCreds(cfg, log)
	if err != nil {
		return err
	}

	defaultURI := cfg.Tracking.URI
	store, err := openSQLiteURI(ctx, defaultURI)
	if err != nil {
		return err
	}
	defer store.Close()
	// The coordinator never runs job commands: exec models take their
	// initial weights from a site or an upload (CoordinatorModels).
	trainers := &train.Factory{Logger: log.With("component", "trainer"),
		ExecRefused: "a deployed coordinator does not run job commands"}
	defer trainers.Close()
	// Uploaded initial weights (model.init.weights), content-addressed.
	weights := prepare.WeightsDir{Dir: filepath.Join(cfg.StateDir, "weights")}
	_, coordMeter, closeMeter := newMeter(log)
	defer closeMeter()
	socks, err := inheritedSockets("coordinator", socketGRPC, socketRaft)
	if err != nil {
		return err
	}
	defer closeListeners(socks) // the gRPC server and the node close theirs; this, those of an early return
	node, blobStore, blobClient, err := openReplica(cfg, socks[socketRaft], log)
	if err != nil {
		return err
	}
	defer blobClient.Close() // after the node's close, deferred below: its fetches end first
	defer func() {
		// A planned stop hands the lead over: the next leader resumes the
		// running job without waiting out an election.
		if err := node.Handoff(); err != nil {
			log.Warn("raft_handoff_failed", "err", err)
		}
		if err := node.Close(); err != nil {
			log.Warn("raft_close_failed", "err", err)
		}
	}()
	coord, err := server.New(server.Config{
		Version:        version,
		SiteWait:       cfg.SiteWait,
		SessionTimeout: cfg.SessionTimeout,
		MaxModelBytes:  cfg.MaxModelBytes,
		SpillDir:       filepath.Join(cfg.StateDir, "updates"),
		JoinLimit:      server.RateLimit(cfg.RateLimits.Join),
		AdminLimit:     server.RateLimit(cfg.RateLimits.Admin),
		Logger:         log,
	}, server.Deps{
		Tracker:     store,
		OpenTracker: trackerOpener(defaultURI, log),
		Models:      &prepare.CoordinatorModels{Trainers: trainers, Weights: weights, Paths: cfg.Data, Logger: log},
		Weights:     weights,
		Meter:       coordMeter,
		Replica:     node,
	})
	if err != nil {
		return err
	}
	defer func() {
		// Before the node's handoff and close (deferred earlier): the
		// site registry's writes in flight finish or give up first.
		if err := coord.Close(); err != nil {
			log.Warn("coordinator_close_failed", "err", err)
		}
	}()
	lis, inherited, err := listenOn(socks, socketGRPC, cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w; change listen in %s or stop what holds the port", cfg.Listen, err, *path)
	}
	auth, err := server.NewAuthorizer(server.AuthorizerConfig{
		Enforce: creds != nil, Role: deploy.Role, AdminRole: deploy.RoleAdmin, SiteRole: deploy.RoleSite,
		CoordinatorRole: deploy.RoleCoordinator, Logger: log,
	})
	if err != nil {
		return err
	}
	opts := append(server.GRPCOptions(),
		grpc.ChainUnaryInterceptor(auth.UnaryInterceptor()),
		grpc.ChainStreamInterceptor(auth.StreamInterceptor()),
	)
	if creds != nil {
		opts = append(opts, creds)
	}
	gs := grpc.NewServer(opts...)
	coord.Register(gs)
	pb.RegisterBlobServiceServer(gs, server.NewBlobServer(blobStore, node, log.With("component", "blobs")))
	solo := cfg.Cluster == nil
	announce := func() {
		fmt.Fprintf(stdout, "coordinator %s listening on %s (tls: %v, state: %s, node %s of %d)\n", cfg.Name, lis.Addr(), cfg.TLS != nil, cfg.StateDir, node.ID(), len(node.Status().Peers))
		log.Info("coordinator_listening", "addr", lis.Addr().String(), "tls", cfg.TLS != nil, "inherited", inherited)
	}
	if !solo {
		announce() // a follower serves too: it names the leader
	}
	return serveGRPC(ctx, gs, lis, func(ctx context.Context) error {
		if solo { // a one-voter cluster leads within ~100 ms: say so once it does
			go func() {
				for i := 0; i < 500 && !coord.Leading() && ctx.Err() == nil; i++ {
					time.Sleep(10 * time.Millisecond)
				}
				announce()
			}()
		}
		// A node that stops itself (its peer list disagrees) stops the coordinator.
		ctx, cancel := context.WithCancelCause(ctx)
		defer cancel(nil)
		go func() {
			select {
			case err := <-node.Err():
				cancel(err)
			case <-ctx.Done():
			}
		}()
		err := coord.Run(ctx)
		if cause := context.Cause(ctx); err == nil && cause != nil && cause != context.Canceled {
			err = cause
		}
		return err
	})
}

// openReplica opens the coordinator's Raft node in state_dir/raft: a
// one-voter cluster without cluster:, else the configured peers, raft
// serving on raftLis when the process inherited one. Global models live
// in the blob store in state_dir/blobs, out of the raft log; the nodes
// fetch them from each other through the returned client (close it after
// the node), which dials the peers' gRPC addresses with this
// coordinator's certificate.
func openReplica(cfg *deploy.CoordinatorConfig, raftLis net.Listener, log *slog.Logger) (*ha.Node, *blobs.Store, *server.BlobClient, error) {
	blobDir := filepath.Join(cfg.StateDir, "blobs")
	store, err := blobs.Open(blobDir, blobs.Options{Logger: log.With("component", "blobs")})
	if err != nil {
		return nil, nil, nil, fmt.Errorf("coordinator %s: opening the blob store in %s: %w", cfg.Name, blobDir, err)
	}
	hc := ha.Config{
		ID:           cfg.Name,
		DataDir:      filepath.Join(cfg.StateDir, "raft"),
		RaftListener: raftLis,
		Logger:       hclogslog.New(log.With("component", "raft"), hclogslog.Options{Name: "raft"}),
		Blobs:        store,
	}
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	if cl := cfg.Cluster; cl == nil {
		hc.Peers = []ha.Peer{{ID: cfg.Name, GRPCAddr: cfg.Listen}} // no raft address: no network
	} else {
		hc.ID = cl.ID
		hc.HeartbeatTimeout, hc.ElectionTimeout = cl.HeartbeatTimeout, cl.ElectionTimeout
		for _, p := range cl.Peers {
			hc.Peers = append(hc.Peers, ha.Peer{ID: p.ID, RaftAddr: p.Raft, GRPCAddr: p.GRPC})
		}
		if cfg.TLS != nil {
			srv, cli, err := cfg.TLS.PeerConfigs(deploy.WithLogger(log.With("component", "raft")))
			if err != nil {
				return nil, nil, nil, err
			}
			hc.ServerTLS, hc.ClientTLS = srv, cli
			dial = []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(cli.Clone()))}
		}
	}
	client := server.NewBlobClient(dial...)
	hc.BlobTransport = client
	if old, _ := filepath.Glob(filepath.Join(cfg.StateDir, "jobs", "*.json")); len(old) > 0 {
		log.Warn("old_job_records_ignored", "dir", filepath.Join(cfg.StateDir, "jobs"), "files", len(old),
			"hint", "Cohort now keeps jobs in state_dir/raft; the JSON records of an older version are not read (cohort jobs on the old version lists them)")
	}
	node, err := ha.Open(hc)
	if err != nil {
		_ = client.Close()
		return nil, nil, nil, fmt.Errorf("coordinator %s: %w", cfg.Name, err)
	}
	return node, store, client, nil
}

// serveGRPC serves gs on lis and runs work beside it until ctx ends, then
// stops gracefully (forcefully after 10 s).
func serveGRPC(ctx context.Context, gs *grpc.Server, lis net.Listener, work func(context.Context) error) error {
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := gs.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			return fmt.Errorf("serving gRPC: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		<-gctx.Done()
		stopped := make(chan struct{})
		go func() { gs.GracefulStop(); close(stopped) }()
		t := time.NewTimer(10 * time.Second)
		defer t.Stop()
		select {
		case <-stopped:
		case <-t.C:
			gs.Stop()
		}
		return nil
	})
	g.Go(func() error { return work(gctx) })
	return g.Wait()
}

func pick(flagValue, configValue string) string {
	if flagValue != "" {
		return flagValue
	}
	return configValue
}

// coordinatorCreds returns the server option for TLS, or a warning and
// plaintext on loopback.
func coordinatorCreds(cfg *deploy.CoordinatorConfig, log *slog.Logger) (grpc.ServerOption, error) {
	if cfg.TLS == nil {
		log.Warn("plaintext_on_loopback", "listen", cfg.Listen, "hint", "without tls any local process can join as any site; use a startup kit for anything but a demo")
		return nil, nil
	}
	tc, err := cfg.TLS.ServerConfig(deploy.WithLogger(log))
	if err != nil {
		return nil, err
	}
	return grpc.Creds(credentials.NewTLS(tc)), nil
}

// openSQLiteURI opens the embedded store a sqlite: URI names.
func openSQLiteURI(ctx context.Context, uri string) (*tracking.SQLiteStore, error) {
	if !strings.HasPrefix(uri, "sqlite:") {
		return nil, fmt.Errorf("tracking.uri %q: the coordinator's own store is sqlite:FILE; jobs may name an http(s) MLflow server", uri)
	}
	return tracking.OpenSQLiteURI(ctx, uri)
}

// trackerOpener opens the tracking backend a job names: the coordinator's
// own store for its default URI (or none), else what [tracking.Open] opens
// (another SQLite file, a remote MLflow server).
func trackerOpener(defaultURI string, log *slog.Logger) func(context.Context, string) (server.Tracker, func(context.Context) error, error) {
	return func(ctx context.Context, uri string) (server.Tracker, func(context.Context) error, error) {
		if uri == "" || uri == defaultURI || uri == job.DefaultTrackingURI {
			// A job that names no tracking of its own logs into the coordinator's.
			return nil, nil, nil
		}
		// Another SQLite file, an MLflow server, or any scheme tracking.Open knows.
		return openTracker(ctx, uri, log)
	}
}
