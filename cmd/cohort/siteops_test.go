package main

import (
	"context"
	"errors"
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
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/internal/federation"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/server/prepare"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

// logTap is a slog handler that writes to the test's output and hands
// each record's message to whoever waits for it.
type logTap struct {
	slog.Handler
	mu      sync.Mutex
	waiters map[string][]chan struct{}
	seen    map[string]int
}

func newLogTap(t *testing.T) *logTap {
	return &logTap{Handler: slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}), waiters: map[string][]chan struct{}{}, seen: map[string]int{}}
}

func (l *logTap) Handle(ctx context.Context, r slog.Record) error {
	l.mu.Lock()
	l.seen[r.Message]++
	for _, c := range l.waiters[r.Message] {
		close(c)
	}
	delete(l.waiters, r.Message)
	l.mu.Unlock()
	return l.Handler.Handle(ctx, r)
}

func (l *logTap) WithAttrs(as []slog.Attr) slog.Handler {
	return &tapChild{Handler: l.Handler.WithAttrs(as), tap: l}
}

// tapChild keeps the tap behind a logger's With.
type tapChild struct {
	slog.Handler
	tap *logTap
}

func (c *tapChild) Handle(ctx context.Context, r slog.Record) error {
	c.tap.mu.Lock()
	c.tap.seen[r.Message]++
	for _, w := range c.tap.waiters[r.Message] {
		close(w)
	}
	delete(c.tap.waiters, r.Message)
	c.tap.mu.Unlock()
	return c.Handler.Handle(ctx, r)
}

func (c *tapChild) WithAttrs(as []slog.Attr) slog.Handler {
	return &tapChild{Handler: c.Handler.WithAttrs(as), tap: c.tap}
}

// next returns a channel closed at the next record with message msg.
func (l *logTap) next(msg string) <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := make(chan struct{})
	l.waiters[msg] = append(l.waiters[msg], c)
	return c
}

func (l *logTap) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[msg]
}

func await(t *testing.T, c <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-c:
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
	}
}

// realCoordinator serves a coordinator over loopback gRPC until the test
// ends and returns its address.
func realCoordinator(t *testing.T, log *slog.Logger) string {
	t.Helper()
	store, err := tracking.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "cohort.db"))
	if err != nil {
		t.Fatal(err)
	}
	coord, err := server.New(server.Config{Logger: log, SiteWait: 30 * time.Second},
		server.Deps{Tracker: store, Models: &prepare.CoordinatorModels{Trainers: &train.Factory{}, Logger: log}})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	coord.Register(gs)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	go func() { defer wg.Done(); _ = coord.Run(ctx) }()
	t.Cleanup(func() { cancel(); gs.Stop(); wg.Wait(); store.Close() })
	return lis.Addr().String()
}

var plaintext = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}

func newAgent(t *testing.T, name string, targets []string, tf client.TrainerFactory, log *slog.Logger) *client.Agent {
	t.Helper()
	a, err := client.New(client.Config{Name: name, Targets: targets, DialOptions: plaintext, Logger: log,
		BackoffInitial: 10 * time.Millisecond, BackoffMax: 100 * time.Millisecond, Capabilities: &pb.Capabilities{Trainers: []string{train.TransferKind}}},
		&client.LocalData{Site: name}, tf, nil)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// proxy forwards loopback connections to target; cut closes the agent's
// side of every connection and leaves the coordinator's open, as a
// network that dies under a site does: the coordinator still holds the
// session when the agent comes back.
type proxy struct {
	addr string
	mu   sync.Mutex
	down []net.Conn
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{addr: lis.Addr().String()}
	var ups []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.down, ups = append(p.down, c), append(ups, u)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(u, c) }() // not closing u on EOF: half-open upstream
			go func() { _, _ = io.Copy(c, u) }()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range append(p.down, ups...) {
			c.Close()
		}
	})
	return p
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.down {
		c.Close()
	}
	p.down = nil
}

// TestSecondAgentWithSameKitRefused: a second agent with the site's name
// is refused with a clear error and Run returns (the command exits
// non-zero) instead of both taking the session from each other; the first
// keeps its session. The same agent reconnecting while the coordinator
// still holds its old session is accepted, and so is another agent once
// the first has left.
func TestSecondAgentWithSameKitRefused(t *testing.T) {
	tap := newLogTap(t)
	log := slog.New(tap)
	coord := realCoordinator(t, log)
	px := newProxy(t, coord)

	first := newAgent(t, "kit", []string{px.addr}, &train.Factory{}, log)
	ctx1, stop1 := context.WithCancel(context.Background())
	connected := tap.next("site_connected")
	done1 := make(chan error, 1)
	go func() { done1 <- first.Run(ctx1) }()
	await(t, connected, "the first agent's session")

	second := newAgent(t, "kit", []string{coord}, &train.Factory{}, log)
	ctx2, cancel2 := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel2()
	err := second.Run(ctx2)
	if ctx2.Err() != nil {
		t.Fatal("the second agent retried until the test's deadline; want it refused at once")
	}
	if !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), `site "kit" is already connected from`) || !strings.Contains(err.Error(), "stop the other agent, or wait") {
		t.Fatalf("second agent's Run = %v, want ErrRefused naming the other agent's address and what to do", err)
	}
	if n := tap.count("site_replaced_session"); n != 0 {
		t.Errorf("sessions replaced = %d, want 0: the first agent keeps its session", n)
	}

	// The network under the first agent dies; the coordinator still holds
	// its session. The same agent comes back and is accepted.
	replaced := tap.next("site_replaced_session")
	px.cut()
	await(t, replaced, "the first agent's reconnect replacing its old session")

	// Once it has left, another agent takes the name.
	stop1()
	if err := <-done1; err != nil {
		t.Fatalf("first agent's Run = %v, want nil after stopping", err)
	}
	third := newAgent(t, "kit", []string{coord}, &train.Factory{}, log)
	ctx3, stop3 := context.WithCancel(context.Background())
	connected = tap.next("site_connected")
	done3 := make(chan error, 1)
	go func() { done3 <- third.Run(ctx3) }()
	await(t, connected, "a new agent's session after the first left")
	stop3()
	if err := <-done3; err != nil {
		t.Fatalf("third agent's Run = %v", err)
	}
}

// gatedTrainers hands out trainers whose Train reports that it started
// and then waits for release before training.
type gatedTrainers struct {
	train.Factory
	started chan struct{}
	release chan struct{}
	once    sync.Once
}

func (g *gatedTrainers) Trainer(cfg train.Config) (train.Trainer, error) {
	tr, err := g.Factory.Trainer(cfg)
	if err != nil {
		return nil, err
	}
	return gated{Trainer: tr, g: g}, nil
}

type gated struct {
	train.Trainer
	g *gatedTrainers
}

func (t gated) Train(ctx context.Context, w *model.Weights, d *data.Dataset, cfg train.TrainConfig) (*model.Weights, train.TrainResult, error) {
	t.g.once.Do(func() { close(t.g.started) })
	select {
	case <-t.g.release:
	case <-ctx.Done():
		return nil, train.TrainResult{}, ctx.Err()
	}
	return t.Trainer.Train(ctx, w, d, cfg)
}

// TestSiteDrainsOnStop: a site stopped the way SIGTERM stops it (the
// context signal.NotifyContext gives cohort site is cancelled) in the
// middle of a task finishes training, uploads, and the coordinator
// accepts the update: the job succeeds.
func TestSiteDrainsOnStop(t *testing.T) {
	tap := newLogTap(t)
	log := slog.New(tap)
	coord := realCoordinator(t, log)
	g := &gatedTrainers{started: make(chan struct{}), release: make(chan struct{})}
	site := newAgent(t, "kit", []string{coord}, g, log)
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	done := make(chan error, 1)
	go func() { done <- site.Run(ctx) }()

	cc, err := grpc.NewClient(coord, plaintext...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	jobs := pb.NewJobsServiceClient(cc)
	rctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := jobs.SubmitJob(rctx, &pb.SubmitJobRequest{JobYaml: []byte(`name: drain
seed: 1
tracking: {experiment: drain}
data: {dataset: synthetic, synthetic: {alpha: 0, beta: 0, samples_per_site: 50}}
model: {kind: transfer, params: 1000}
sites: {names: [kit]}
rounds: 1
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 60s}
`)}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	await(t, g.started, "the site's training")
	draining := tap.next("site_draining")
	stop() // SIGTERM
	await(t, draining, "the site to drain")
	close(g.release)
	var progress strings.Builder
	j, err := federation.WatchJob(rctx, jobs, resp.GetJob().GetJobId(), &progress, false)
	if err != nil {
		t.Fatalf("watching the job: %v\n%s", err, progress.String())
	}
	if j.GetState() != pb.JobState_JOB_STATE_SUCCEEDED || j.GetRound() != 1 {
		t.Errorf("job = %s at round %d (%s), want succeeded at round 1: the drained site's update must count\n%s", j.GetState(), j.GetRound(), j.GetError(), progress.String())
	}
	if err := <-done; err != nil {
		t.Errorf("site's Run = %v, want nil after draining", err)
	}
	if n := tap.count("site_drained"); n != 1 {
		t.Errorf("site_drained logged %d times, want 1", n)
	}
}
