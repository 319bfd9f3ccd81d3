package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/cohortfl/cohort/data"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// Config configures an Agent.
type Config struct {
	// Name is the site's name; with TLS it must equal its certificate's CN.
	Name string
	// Targets are the coordinators' addresses, tried in turn.
	Targets []string
	// DialOptions are passed to grpc.NewClient (credentials among them).
	DialOptions []grpc.DialOption
	// Version is reported in Join.
	Version string
	// Capabilities are advertised in Join.
	Capabilities *pb.Capabilities
	// BackoffInitial and BackoffMax bound the reconnect backoff (defaults
	// 250ms and 30s); each wait is jittered.
	BackoffInitial, BackoffMax time.Duration
	// ProgressInterval is the least time between progress messages (1s).
	ProgressInterval time.Duration
	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger
}

// DataSource gives the agent the data a task trains and evaluates on.
type DataSource interface {
	// Load returns the training and test data of dataset for a task kind.
	// It is called for every task and should cache.
	Load(ctx context.Context, dataset string, kind pb.TaskKind) (trainSet, testSet *data.Dataset, err error)
}

// TaskDataSource is a [DataSource] whose data depends on more of the task
// than its dataset's name: a deployed site generates synthetic data from
// the parameters the task's model spec carries. The agent calls LoadTask
// instead of Load where the source has it.
type TaskDataSource interface {
	// LoadTask returns the training and test data of task t.
	LoadTask(ctx context.Context, t *pb.Task) (trainSet, testSet *data.Dataset, err error)
}

// load returns task t's data from the agent's data source.
func (a *Agent) load(ctx context.Context, t *pb.Task) (trainSet, testSet *data.Dataset, err error) {
	if td, ok := a.data.(TaskDataSource); ok {
		return td.LoadTask(ctx, t)
	}
	return a.data.Load(ctx, t.GetDataset(), t.GetKind())
}

// TrainerFactory builds the trainer a task's model spec names, turned into
// a [train.Config] by the agent; *train.Factory is the production one.
type TrainerFactory interface {
	Trainer(cfg train.Config) (train.Trainer, error)
}

var _ TrainerFactory = (*train.Factory)(nil)

// trainConfig is the trainer config a task's model spec names.
func trainConfig(spec *pb.ModelSpec) train.Config {
	return train.Config{
		Kind:       spec.GetKind(),
		Hidden:     ints(spec.GetHidden()),
		Conv:       ints(spec.GetConv()),
		InputShape: ints(spec.GetInputShape()),
		Classes:    int(spec.GetClasses()),
		Command:    spec.GetCommand(),
		Env:        spec.GetEnv(),
		ExecMode:   spec.GetExecMode(),
	}
}

func ints(xs []int32) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x)
	}
	return out
}

// Agent is a site agent. Create it with [New] and run it with [Agent.Run].
type Agent struct {
	cfg  Config
	log  *slog.Logger
	data DataSource
	// caps are the capabilities with the data's lineage, computed once.
	lineageOnce sync.Once
	caps        *pb.Capabilities
	trainers    TrainerFactory
	meter       Meter

	mu      sync.Mutex
	tasks   map[string]context.CancelFunc
	workers map[string]string // by job: the persistent worker of its latest arm here

	digestMu sync.Mutex
	digests  map[*data.Dataset]string // of the datasets tasks trained on
	wg       sync.WaitGroup
}

// New returns an Agent. meter may be nil: the agent then reports no energy.
func New(cfg Config, ds DataSource, tf TrainerFactory, meter Meter) (*Agent, error) {
	var errs []error
	if cfg.Name == "" {
		errs = append(errs, errors.New("site name is empty: set name in the site's config"))
	}
	if len(cfg.Targets) == 0 {
		errs = append(errs, errors.New("no coordinator address: list at least one in the site's config"))
	}
	if ds == nil || tf == nil {
		errs = append(errs, errors.New("a data source and a trainer factory are required"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("configuring site agent: %w", err)
	}
	if cfg.BackoffInitial <= 0 {
		cfg.BackoffInitial = 250 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 30 * time.Second
	}
	if cfg.ProgressInterval <= 0 {
		cfg.ProgressInterval = time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Capabilities == nil {
		cfg.Capabilities = &pb.Capabilities{}
	}
	return &Agent{
		cfg:      cfg,
		log:      cfg.Logger.With("site", cfg.Name),
		data:     ds,
		trainers: tf,
		meter:    meter,
		tasks:    make(map[string]context.CancelFunc),
	}, nil
}

// Run keeps the agent connected and serving tasks until ctx is cancelled; it
// then cancels running tasks, waits for them and returns nil.
func (a *Agent) Run(ctx context.Context) error {
	conns := make([]*grpc.ClientConn, len(a.cfg.Targets))
	for i, t := range a.cfg.Targets {
		cc, err := grpc.NewClient(t, a.cfg.DialOptions...)
		if err != nil {
			return fmt.Errorf("site %s: coordinator address %q: %w", a.cfg.Name, t, err)
		}
		conns[i] = cc
	}
	defer func() {
		for _, cc := range conns {
			cc.Close()
		}
	}()
	defer a.wg.Wait()
	backoff := a.cfg.BackoffInitial
	for i := 0; ; {
		started := time.Now()
		err := a.serve(ctx, conns[i])
		if ctx.Err() != nil {
			a.cancelAll()
			return nil
		}
		if time.Since(started) > 10*a.cfg.BackoffInitial+time.Second {
			backoff = a.cfg.BackoffInitial // the session was up for a while
		}
		next, hinted := a.nextTarget(i, err)
		wait := backoff/2 + rand.N(backoff/2+1)
		if hinted {
			// A follower named its leader (or the cluster is electing
			// one): go there soon, and keep the backoff short.
			backoff = a.cfg.BackoffInitial
			wait = backoff/2 + rand.N(backoff/2+1)
		}
		a.log.Warn("session_lost", "coordinator", a.cfg.Targets[i], "err", err, "next", a.cfg.Targets[next], "retry_in", wait.Round(time.Millisecond))
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			a.cancelAll()
			return nil
		case <-t.C:
		}
		if !hinted {
			backoff = min(2*backoff, a.cfg.BackoffMax)
		}
		i = next
	}
}

// nextTarget returns the coordinator to try after target i failed with
// err: the leader a follower named, when the site lists it (hinted), else
// the next in turn. A coordinator that is not the leader and knows none is
// a cluster mid-election: the next in turn, also hinted (short wait).
func (a *Agent) nextTarget(i int, err error) (next int, hinted bool) {
	next = (i + 1) % len(a.cfg.Targets)
	addr, ok := pb.NotLeader(err)
	if !ok {
		return next, false
	}
	if addr == "" {
		return next, true
	}
	for k, t := range a.cfg.Targets {
		if t == addr {
			return k, true
		}
	}
	a.log.Warn("leader_not_listed", "leader", addr, "fix", "add the leader's address to coordinators: in the site's config")
	return next, true
}

func (a *Agent) cancelAll() {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, c := range a.tasks {
		c()
	}
}

// session is one open Session stream; Send is serialised.
type session struct {
	mu     sync.Mutex
	stream grpc.BidiStreamingClient[pb.SiteMessage, pb.CoordinatorMessage]
}

func (s *session) send(m *pb.SiteMessage) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.Send(m)
}

// Lineager is a [DataSource] that can say, before any task, which
// training data it holds: its name ("DATASET/SPLIT"), digest and sample
// count. The agent declares it when it joins, and the coordinator caps
// the sample count an update may claim at what was declared.
type Lineager interface {
	Lineage(ctx context.Context) ([]*pb.DatasetInfo, error)
}

// capabilities returns what the agent joins with: the configured
// capabilities and, once computed, its data's lineage.
func (a *Agent) capabilities(ctx context.Context) *pb.Capabilities {
	l, ok := a.data.(Lineager)
	if !ok {
		return a.cfg.Capabilities
	}
	a.lineageOnce.Do(func() {
		ds, err := l.Lineage(ctx)
		if err != nil {
			a.log.Warn("lineage_unavailable", "err", err, "effect", "updates' sample counts are not vouched for; the coordinator caps each site's weight by max_weight_fraction alone")
			return
		}
		caps := proto.Clone(a.cfg.Capabilities).(*pb.Capabilities)
		caps.Lineage = ds
		a.caps = caps
	})
	if a.caps != nil {
		return a.caps
	}
	return a.cfg.Capabilities
}

// serve joins through cc and serves one session until it breaks.
func (a *Agent) serve(ctx context.Context, cc *grpc.ClientConn) error {
	cli := pb.NewCoordinatorServiceClient(cc)
	jctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	jr, err := cli.Join(jctx, &pb.JoinRequest{SiteName: a.cfg.Name, Version: a.cfg.Version, Capabilities: a.capabilities(ctx)})
	cancel()
	if err != nil {
		return fmt.Errorf("joining: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := cli.Session(sctx)
	if err != nil {
		return fmt.Errorf("opening session: %w", err)
	}
	s := &session{stream: stream}
	if err := s.send(&pb.SiteMessage{Msg: &pb.SiteMessage_Hello{Hello: &pb.SessionHello{SessionId: jr.GetSessionId(), SiteName: a.cfg.Name}}}); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	a.log.Info("session_open", "coordinator", cc.Target())

	hb := time.Duration(jr.GetHeartbeatIntervalMs()) * time.Millisecond
	if hb <= 0 {
		hb = 5 * time.Second
	}
	go func() {
		t := time.NewTicker(hb)
		defer t.Stop()
		for {
			select {
			case <-sctx.Done():
				return
			case now := <-t.C:
				if err := s.send(&pb.SiteMessage{Msg: &pb.SiteMessage_Heartbeat{Heartbeat: &pb.Heartbeat{UnixMs: now.UnixMilli(), RunningTasks: a.running()}}}); err != nil {
					return
				}
			}
		}
	}()
	for {
		m, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return errors.New("coordinator closed the session")
		}
		if err != nil {
			return fmt.Errorf("session: %w", err)
		}
		switch msg := m.Msg.(type) {
		case *pb.CoordinatorMessage_Task:
			a.startTask(sctx, cli, s, msg.Task)
		case *pb.CoordinatorMessage_Cancel:
			a.cancelTask(msg.Cancel.GetTaskId(), msg.Cancel.GetReason())
		default:
			a.log.Warn("unknown_message_from_coordinator")
		}
	}
}

func (a *Agent) running() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := make([]string, 0, len(a.tasks))
	for id := range a.tasks {
		ids = append(ids, id)
	}
	return ids
}

func (a *Agent) cancelTask(id, reason string) {
	a.mu.Lock()
	c, ok := a.tasks[id]
	a.mu.Unlock()
	if ok {
		a.log.Info("task_cancelled", "task", id, "reason", reason)
		c()
	}
}

func (a *Agent) startTask(ctx context.Context, cli pb.CoordinatorServiceClient, s *session, t *pb.Task) {
	tctx, cancel := context.WithCancel(ctx)
	if t.GetDeadlineUnixMs() > 0 {
		tctx, cancel = context.WithDeadline(ctx, time.UnixMilli(t.GetDeadlineUnixMs()))
	}
	a.mu.Lock()
	a.tasks[t.GetTaskId()] = cancel
	a.mu.Unlock()
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		defer func() {
			a.mu.Lock()
			delete(a.tasks, t.GetTaskId())
			a.mu.Unlock()
			cancel()
		}()
		log := a.log.With("task", t.GetTaskId(), "arm", t.GetArm(), "round", t.GetRound())
		log.Debug("task_started", "kind", t.GetKind().String())
		var spent taskEnergy
		if err := a.runTask(tctx, cli, s, t, &spent, log); err != nil {
			log.Warn("task_failed", "err", err)
			// A refused update was already recorded by the coordinator.
			// A failure says what the work cost: it counts as wasted.
			var refused *RefusedError
			if ctx.Err() == nil && !errors.As(err, &refused) {
				_ = s.send(&pb.SiteMessage{Msg: &pb.SiteMessage_Failed{Failed: &pb.TaskFailed{TaskId: t.GetTaskId(), Reason: err.Error(), Energy: spent.report}}})
			}
		}
	}()
}
