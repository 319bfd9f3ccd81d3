package client

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime/debug"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/cohortfl/cohort/client/leader"
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// Config configures an Agent.
type Config struct {
	// Name is the site's name; with TLS it must equal its certificate's CN.
	Name string
	// Targets are the coordinators' addresses (every node of a cluster),
	// asked at once for the leader (package client/leader).
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
	// ProgressInterval is the least time between progress messages
	// (default: the heartbeat interval the coordinator gives, 5s). A
	// training site's progress stands in for its heartbeats, and the
	// coordinator only logs it (at debug level): at 10,000 sites, one a
	// second from each was 10,000 messages a second.
	ProgressInterval time.Duration
	// DrainTimeout bounds how long [Agent.Run], once its context is
	// cancelled, lets the tasks in flight finish and upload their updates
	// (default [DefaultDrainTimeout]); a negative value cancels them at
	// once.
	DrainTimeout time.Duration
	// Logger receives the agent's logs; nil discards them.
	Logger *slog.Logger
}

// DefaultDrainTimeout is [Config.DrainTimeout]'s default.
const DefaultDrainTimeout = 60 * time.Second

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

	// instance is this agent's id on the wire (pb.AgentInstanceKey).
	instance string
	// sleep is the dialer's backoff wait; nil waits on a timer (tests
	// record the waits instead).
	sleep func(ctx context.Context, d time.Duration) error

	mu       sync.Mutex
	draining bool // set once Run's context ended: no new task starts
	tasks    map[string]context.CancelFunc
	workers  map[string]string // by job: the persistent worker of its latest arm here

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
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Capabilities == nil {
		cfg.Capabilities = &pb.Capabilities{}
	}
	return &Agent{
		instance: newInstanceID(),
		cfg:      cfg,
		log:      cfg.Logger.With("site", cfg.Name),
		data:     ds,
		trainers: tf,
		meter:    meter,
		tasks:    make(map[string]context.CancelFunc),
	}, nil
}

// Run keeps the agent connected to the leading coordinator and serving
// tasks until ctx is cancelled (SIGTERM, Ctrl-C), then drains: it takes no
// new task, lets the tasks in flight finish and upload their updates for
// up to DrainTimeout, cancels what is left, and returns nil. It returns an
// error, without retrying, when the coordinator refuses the site for good:
// another agent with the same name holds its session.
func (a *Agent) Run(ctx context.Context) error {
	d, err := leader.New(leader.Config{
		Targets: a.cfg.Targets, DialOptions: a.cfg.DialOptions, AttemptTimeout: joinTimeout,
		BackoffInitial: a.cfg.BackoffInitial, BackoffMax: a.cfg.BackoffMax,
		Logger: a.log, Sleep: a.sleep,
	})
	if err != nil {
		return fmt.Errorf("site %s: %w", a.cfg.Name, err)
	}
	defer d.Close()
	// life is the sessions' and tasks' context: it outlives ctx by the
	// drain.
	life, stop := context.WithCancel(context.WithoutCancel(ctx))
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		a.drain(ctx, life, stop)
	}()
	defer func() {
		stop()
		<-drained
		a.wg.Wait()
	}()
	for {
		if ctx.Err() != nil {
			<-life.Done() // draining: no new session; the drain ends Run
			return nil
		}
		a.capabilities(ctx) // the data's lineage, once, without a probe's deadline
		res, err := leader.Find(ctx, d, a.join)
		if err != nil {
			if ctx.Err() != nil {
				continue
			}
			return fmt.Errorf("site %s: %w", a.cfg.Name, refusal(err))
		}
		started := time.Now()
		err = a.serve(life, res.Conn, res.Value)
		switch {
		case life.Err() != nil:
			return nil
		case status.Code(err) == codes.FailedPrecondition:
			return fmt.Errorf("site %s: %w", a.cfg.Name, refusal(err))
		case ctx.Err() != nil:
			continue // the session broke while draining: nothing more goes through it
		}
		if time.Since(started) > 10*a.cfg.BackoffInitial+time.Second {
			d.Reset() // the session was up for a while
		}
		a.log.Warn("session_lost", "coordinator", res.Target, "err", err)
		_ = d.Pause(ctx) // a NOT_LEADER without progress backs off too
	}
}

// joinTimeout bounds one Join.
const joinTimeout = 30 * time.Second

// refusal words the coordinator's final refusal of the site.
func refusal(err error) error {
	if st, ok := status.FromError(err); ok && st.Code() == codes.FailedPrecondition {
		return fmt.Errorf("the coordinator refused this site: %s: %w", st.Message(), ErrRefused)
	}
	return err
}

// ErrRefused is returned by [Agent.Run] when the coordinator refuses the
// site for good (another agent with the same name holds its session):
// retrying would not help.
var ErrRefused = errors.New("site refused")

// join is the dialer's probe: it joins the coordinator behind cc, which
// answers NOT_LEADER unless it leads. A refusal because another agent
// holds the site's session is final.
func (a *Agent) join(ctx context.Context, cc *grpc.ClientConn) (*pb.JoinResponse, error) {
	jr, err := pb.NewCoordinatorServiceClient(cc).Join(a.withInstance(ctx),
		&pb.JoinRequest{SiteName: a.cfg.Name, Version: a.cfg.Version, Capabilities: a.capabilities(ctx)})
	if status.Code(err) == codes.FailedPrecondition {
		return nil, leader.Final(err)
	}
	if err != nil {
		return nil, fmt.Errorf("joining: %w", err)
	}
	return jr, nil
}

// withInstance adds the agent's instance id to a call's metadata: the
// coordinator tells a reconnect of this agent from a second agent with the
// same name by it.
func (a *Agent) withInstance(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, pb.AgentInstanceKey, a.instance)
}

// drain waits for ctx to end, then lets the tasks in flight finish (for
// up to DrainTimeout) while refusing new ones, and ends life with stop.
func (a *Agent) drain(ctx, life context.Context, stop context.CancelFunc) {
	defer stop()
	select {
	case <-life.Done():
		return
	case <-ctx.Done():
	}
	a.mu.Lock()
	a.draining = true
	n := len(a.tasks)
	a.mu.Unlock()
	if n == 0 || a.cfg.DrainTimeout < 0 {
		a.log.Info("site_stopping", "tasks_cancelled", n)
		return
	}
	a.log.Info("site_draining", "tasks", n, "timeout", a.cfg.DrainTimeout)
	idle := make(chan struct{})
	go func() {
		a.wg.Wait()
		close(idle)
	}()
	t := time.NewTimer(a.cfg.DrainTimeout)
	defer t.Stop()
	select {
	case <-idle:
		a.log.Info("site_drained")
	case <-t.C:
		a.log.Warn("drain_timed_out", "tasks_cancelled", len(a.running()), "fix", "raise the drain timeout (cohort site --drain-timeout) for tasks that take longer")
	case <-life.Done():
	}
}

// session is one open Session stream; Send is serialised.
type session struct {
	mu     sync.Mutex
	stream grpc.BidiStreamingClient[pb.SiteMessage, pb.CoordinatorMessage]
	now    func() time.Time // time.Now; a test's clock
	sent   time.Time        // when the last message went
	beat   time.Duration    // the heartbeat interval the coordinator gave
}

func newSession(stream grpc.BidiStreamingClient[pb.SiteMessage, pb.CoordinatorMessage]) *session {
	return &session{stream: stream, now: time.Now}
}

func (s *session) send(m *pb.SiteMessage) error { return s.sendAt(m, s.now()) }

// heartbeat is the heartbeat interval the coordinator gave; 0 without a
// session (a task run outside one, as tests run them).
func (s *session) heartbeat() time.Duration {
	if s == nil {
		return 0
	}
	return s.beat
}

// clock is the session's time; time.Now without a session.
func (s *session) clock() time.Time {
	if s == nil {
		return time.Now()
	}
	return s.now()
}

// sendAt sends m, which went at time at.
func (s *session) sendAt(m *pb.SiteMessage, at time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.stream.Send(m); err != nil {
		return err
	}
	s.sent = at
	return nil
}

// heartbeats sends a heartbeat at each tick (one a heartbeat interval,
// s.beat) that finds the session quiet for half an interval or more: any message tells the
// coordinator the site is alive (it expires a session silent for three
// intervals), and a training site sends its progress once an interval
// (taskTrainConfig), which then stands in for about half its beats. The
// stream is never silent for more than an interval and a half, and an
// idle site beats at every tick (half an interval leaves room for the
// ticker's jitter). It returns when ctx ends or a send fails.
func (s *session) heartbeats(ctx context.Context, ticks <-chan time.Time, running func() []string) {
	var now time.Time // the tick's
	for {
		select {
		case <-ctx.Done():
			return
		case now = <-ticks:
		}
		s.mu.Lock()
		quiet := now.Sub(s.sent) >= s.beat/2
		s.mu.Unlock()
		if !quiet {
			continue
		}
		if err := s.sendAt(&pb.SiteMessage{Msg: &pb.SiteMessage_Heartbeat{Heartbeat: &pb.Heartbeat{UnixMs: now.UnixMilli(), RunningTasks: running()}}}, now); err != nil {
			return
		}
	}
}

// closeSend tells the coordinator the agent is leaving.
func (s *session) closeSend() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stream.CloseSend()
}

// leaveTimeout bounds how long a stopping agent waits for the coordinator
// to end its session.
const leaveTimeout = 2 * time.Second

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

// serve opens the session of join jr through cc and serves it until it
// breaks or ctx ends.
func (a *Agent) serve(ctx context.Context, cc *grpc.ClientConn, jr *pb.JoinResponse) error {
	cli := pb.NewCoordinatorServiceClient(cc)
	tctx, cancelTasks := context.WithCancel(ctx) // the session's tasks and heartbeats
	defer cancelTasks()
	// The stream outlives ctx by up to leaveTimeout: when the agent stops it
	// closes its side and waits for the coordinator to end the session, so
	// that the site's name is free once Run returns.
	sctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	stream, err := cli.Session(a.withInstance(sctx))
	if err != nil {
		return fmt.Errorf("opening session: %w", err)
	}
	s := newSession(stream)
	ended := make(chan struct{})
	defer close(ended)
	go func() {
		select {
		case <-ended:
			return
		case <-ctx.Done():
		}
		_ = s.closeSend()
		t := time.NewTimer(leaveTimeout)
		defer t.Stop()
		select {
		case <-ended:
		case <-t.C:
			cancel()
		}
	}()
	if err := s.send(&pb.SiteMessage{Msg: &pb.SiteMessage_Hello{Hello: &pb.SessionHello{SessionId: jr.GetSessionId(), SiteName: a.cfg.Name}}}); err != nil {
		return fmt.Errorf("sending hello: %w", err)
	}
	a.log.Info("session_open", "coordinator", cc.Target())

	hb := time.Duration(jr.GetHeartbeatIntervalMs()) * time.Millisecond
	if hb <= 0 {
		hb = 5 * time.Second
	}
	s.beat = hb // before any task reads it: tasks start in the loop below
	go func() {
		t := time.NewTicker(hb)
		defer t.Stop()
		s.heartbeats(tctx, t.C, a.running)
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
			a.startTask(tctx, cli, s, msg.Task)
		case *pb.CoordinatorMessage_Cancel:
			a.cancelTask(msg.Cancel.GetTaskId(), msg.Cancel.GetReason())
		default:
			a.log.Warn("unknown_message_from_coordinator")
		}
	}
}

// newInstanceID returns a random id for an agent process.
func newInstanceID() string {
	var b [12]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
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
	if a.draining {
		a.mu.Unlock()
		cancel()
		a.log.Info("task_refused_draining", "task", t.GetTaskId())
		_ = s.send(&pb.SiteMessage{Msg: &pb.SiteMessage_Failed{Failed: &pb.TaskFailed{TaskId: t.GetTaskId(),
			Reason: "site " + a.cfg.Name + " is shutting down (draining its tasks in flight); it takes no new task"}}})
		return
	}
	a.tasks[t.GetTaskId()] = cancel
	a.wg.Add(1) // under a.mu: the drain waits only once no task can start
	a.mu.Unlock()
	go func() {
		defer a.wg.Done()
		defer func() {
			a.mu.Lock()
			delete(a.tasks, t.GetTaskId())
			a.mu.Unlock()
			cancel()
			if t.GetModelSize() >= model.CollectAfterBytes {
				// The task's models (the global one, the trained one, the
				// chunks that carried them) are garbage now: collected
				// before the next task's download stacks on them, and the
				// memory handed back to the system while the site idles.
				debug.FreeOSMemory()
			}
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
