package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/proto"

	"github.com/cohortfl/cohort/internal/bulk"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/blobs"
	"github.com/cohortfl/cohort/server/ha"
)

// Config configures a Coordinator. The zero value of every field is usable.
type Config struct {
	// Version is reported to sites in JoinResponse.
	Version string
	// HeartbeatInterval is how often sites should heartbeat (default 5s).
	HeartbeatInterval time.Duration
	// ChunkSize is the size of model chunks sent to sites (default 1 MiB).
	ChunkSize int
	// MaxUpdateBytes bounds one uploaded update (default 0: no bound but the
	// size of the global model the task was sent, times two).
	MaxUpdateBytes int64
	// MaxConcurrentUpdates bounds how many site updates the coordinator
	// receives at once (default 0: no bound). An update trained from a
	// global model holds a chunk of memory while it arrives (it goes to
	// SpillDir), but an init task's initial weights are decoded in memory,
	// and every upload costs CPU and disk bandwidth; a bound caps them.
	// Uploads past it wait, held back by gRPC's flow control (each may
	// hold up to a stream's window, [bulk.Window], in gRPC's buffers
	// meanwhile), and the wait counts toward the round's deadline: over
	// slow links, a low bound lengthens rounds.
	MaxConcurrentUpdates int
	// SiteWait is how long a job waits for its sites to connect before it
	// fails (default 10m).
	SiteWait time.Duration
	// MaxInitBytes bounds the initial weights an init task uploads, where
	// MaxUpdateBytes sets no bound (default 4 GiB).
	MaxInitBytes int64
	// JoinLimit bounds each site's Join calls (default [DefaultJoinLimit]);
	// over it, Join answers RESOURCE_EXHAUSTED.
	JoinLimit RateLimit
	// AdminLimit bounds each admin's JobsService calls (default
	// [DefaultAdminLimit]).
	AdminLimit RateLimit
	// MaxModelBytes refuses, at submit, a job whose model's parameters ×
	// sites × 4 bytes exceed it (default [DefaultMaxModelBytes]: a quarter
	// of the machine's memory).
	MaxModelBytes int64
	// SessionTimeout ends the session of a site that sent nothing (sites
	// heartbeat every HeartbeatInterval) for this long; its tasks fail as
	// a disconnect. 0 leaves it to the stream breaking.
	SessionTimeout time.Duration
	// CancelGrace is how long a cancelled job's runner has to stop
	// before the job is marked CANCELLED regardless (default 30s).
	CancelGrace time.Duration
	// RecordQueue bounds the round events waiting for a job's tracker
	// (default [DefaultRecordQueue]), or, where that is more, two rounds
	// of the job's arms' events (two a site a round selects, and a few),
	// and 256 MiB of them: past it they are dropped and counted, as
	// tracking never holds up a round; within it a round's burst at
	// thousands of sites waits for a healthy tracker.
	RecordQueue int
	// RecordDrain is how long a job that ended waits for its tracking to
	// catch up while it makes no progress (default [DefaultRecordDrain]);
	// while it writes, the job waits on, up to 10 such periods.
	RecordDrain time.Duration
	// SpillDir is the folder where received updates wait, as files, for
	// their round to fold them, so that the coordinator holds no site's
	// update in memory (default "": a new folder in [os.TempDir], removed
	// by Close). It is created if missing; it needs room for one model
	// per site of a round.
	SpillDir string
	// SpillAbove is the size in bytes past which a received update is
	// spilled to SpillDir; a smaller one is decoded in memory, where it
	// costs less than a file's creation, writing and reading back
	// (default 0: 64 KiB; negative spills every update).
	SpillAbove int64
	// ModelDir, where set, is where a coordinator without a replica of
	// its own (Deps.Replica nil: `cohort run`) keeps its global models,
	// as a blob store: a model above SpillAbove is then read from its
	// file in place rather than held in memory. Empty: global models stay
	// in memory. It is created if missing and not removed.
	ModelDir string
	// Logger receives the coordinator's logs; nil discards them.
	Logger *slog.Logger
}

func (c *Config) setDefaults() {
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 5 * time.Second
	}
	if c.ChunkSize <= 0 {
		c.ChunkSize = model.ChunkSize
	}
	if c.SiteWait <= 0 {
		c.SiteWait = 10 * time.Minute
	}
	if c.MaxInitBytes <= 0 {
		c.MaxInitBytes = 4 << 30
	}
	c.JoinLimit = c.JoinLimit.orDefault(DefaultJoinLimit)
	c.AdminLimit = c.AdminLimit.orDefault(DefaultAdminLimit)
	if c.MaxModelBytes <= 0 {
		c.MaxModelBytes = DefaultMaxModelBytes()
	}
	if c.CancelGrace <= 0 {
		c.CancelGrace = 30 * time.Second
	}
	if c.RecordQueue <= 0 {
		c.RecordQueue = DefaultRecordQueue
	}
	if c.RecordDrain <= 0 {
		c.RecordDrain = DefaultRecordDrain
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
}

// Coordinator runs federated jobs across the sites that connect to it. It
// implements both gRPC services; register it with [Coordinator.Register] and
// run its job queue with [Coordinator.Run].
type Coordinator struct {
	pb.UnimplementedCoordinatorServiceServer
	pb.UnimplementedJobsServiceServer

	cfg    Config
	log    *slog.Logger
	deps   Deps
	models *modelStore
	// updateSlots holds a token per update being received, nil for no
	// bound (Config.MaxConcurrentUpdates); updateWaiting, if set, is
	// called when an upload starts waiting for a slot (tests).
	updateSlots   chan struct{}
	updateWaiting func()
	// spillDir holds the updates waiting to be folded (spill.go);
	// ownSpill says New created it and Close removes it.
	spillDir string
	ownSpill bool

	// joinLimit and adminLimit rate-limit Join and the JobsService
	// calls, per caller.
	joinLimit, adminLimit *limiter
	// now is time.Now; tests step it.
	now func() time.Time

	mu      sync.Mutex
	pending map[string]pendingJoin // by session id, between Join and Session
	sites   map[string]*siteConn   // connected sites by name
	tasks   map[string]*pendingTask
	// closed maps the tasks of each arm's last closed round to the arm's
	// collector of late reports: what they report after their round
	// closed still counts, as wasted work.
	closed   map[string]closedTask
	siteCond chan struct{} // closed and replaced whenever the set of sites changes
	// registered holds, by site, the hash of the capabilities last
	// written to the replicated site registry; regPending the write each
	// site's writer does next (the latest Join wins), regBusy the sites
	// whose writer runs (at most one each, maxRegistryWriters in all).
	registered map[string][32]byte
	regPending map[string]siteWrite
	regBusy    map[string]bool
	regDone    chan struct{} // closed and replaced when a site's writer ends
	regWG      sync.WaitGroup
	// runners counts the job runners' goroutines, those abandoned as
	// stuck included: Close waits for them, for up to runnerWait.
	runners sync.WaitGroup
	// quit is closed by Close: background proposals give up.
	quit      chan struct{}
	shut      bool // set by Close, under mu
	closeOnce sync.Once
	closeErr  error

	jobs *jobQueue
	// rep is the replicated state: the coordinator serves sites and
	// admins only while it leads. own is the one-voter in-memory node New
	// made for a coordinator given none, closed by Close.
	rep     Replica
	own     *ha.Node
	leading atomic.Bool
	termMu  sync.Mutex
	term    chan struct{} // closed when this coordinator steps down
}

// siteConn is one connected site's session.
type siteConn struct {
	name      string
	sessionID string
	caps      *pb.Capabilities
	done      chan struct{} // closed when the session ends

	// send queues the site's messages; kick starts a goroutine that
	// sends them on stream while some are queued (sending). A failed
	// send's error goes to sendErr, which ends the session; stopSends
	// (stopped) lets none start once it ends.
	stream  grpc.BidiStreamingServer[pb.SiteMessage, pb.CoordinatorMessage]
	send    chan *pb.CoordinatorMessage
	sendErr chan error
	sendMu  sync.Mutex
	sending bool
	stopped bool
	sends   sync.WaitGroup

	// instance is the agent process's id (pb.AgentInstanceKey; "" from
	// an agent that sends none), addr where it connects from and since
	// when: what a second agent with the same name is told.
	instance string
	addr     string
	since    time.Time
	lastSeen atomic.Int64 // unix nanoseconds of the last message
}

// pendingJoin is a site that joined and has yet to open its session.
type pendingJoin struct {
	name string
	caps *pb.Capabilities
	at   time.Time // when it joined
}

// Bounds on the joins awaiting their session: a site opens its session
// right after Join, so one that has not within pendingJoinTTL never will.
const (
	pendingJoinTTL  = time.Minute
	maxPendingJoins = 4096
)

// closedTask is a task of a round that closed, whose late reports still
// count (as wasted work) in its arm's next round.
type closedTask struct {
	late *lateEnergy
	site string
	sent time.Time
}

// pendingTask is a task sent to a site whose answer the runner awaits.
type pendingTask struct {
	id   string
	site string
	// box is the mailbox of what awaits the answer: a round, or one task
	// run on its own (runSiteTask).
	box *roundRun
	// global is the model the task was sent; nil for an init task.
	global *storedModel
	// job, arm and round are the task's, which its update must name.
	job, arm string
	round    int32
	// sent is when the coordinator took the task on (set by addTask): what
	// the site reports of it cannot span more.
	sent time.Time
}

// checkUpdate refuses an update pushed by a site other than the one the
// task was given to (by its certificate's CN, with TLS), or whose header
// names another job, arm or round than the task (where it names any).
func (t *pendingTask) checkUpdate(ctx context.Context, h *pb.UpdateHeader) error {
	if cn := peerCommonName(ctx); cn != "" && cn != t.site {
		return fmt.Errorf("%w: push update for task %s: the task was given to site %q, the caller's certificate is %q's", ErrNotYourTask, t.id, t.site, cn)
	}
	if (h.GetJobId() != "" && h.GetJobId() != t.job) || (h.GetArm() != "" && h.GetArm() != t.arm) || (h.GetRound() != 0 && h.GetRound() != t.round) {
		return fmt.Errorf("%w: push update for task %s names job %q, arm %q, round %d; the task is job %q, arm %q, round %d",
			ErrTaskMismatch, t.id, h.GetJobId(), h.GetArm(), h.GetRound(), t.job, t.arm, t.round)
	}
	return nil
}

// New returns a Coordinator. deps supplies what the coordinator needs to know
// about models and where it logs runs; see [Deps]. Without a
// [Deps.Replica] the coordinator runs on a one-voter cluster in memory
// (models recorded by digest only), which leads at once: one code path
// for a single coordinator and a cluster. Close it after Run.
func New(cfg Config, deps Deps) (*Coordinator, error) {
	cfg.setDefaults()
	if err := deps.validate(); err != nil {
		return nil, err
	}
	c := &Coordinator{
		cfg:      cfg,
		log:      cfg.Logger,
		deps:     deps,
		models:   newModelStore(),
		pending:  make(map[string]pendingJoin),
		sites:    make(map[string]*siteConn),
		tasks:    make(map[string]*pendingTask),
		closed:   make(map[string]closedTask),
		siteCond: make(chan struct{}),
		now:      time.Now,
	}
	if cfg.MaxConcurrentUpdates > 0 {
		c.updateSlots = make(chan struct{}, cfg.MaxConcurrentUpdates)
	}
	c.joinLimit = newLimiter("Join calls", "rate_limits.join", cfg.JoinLimit, cfg.Logger)
	c.adminLimit = newLimiter("admin calls", "rate_limits.admin", cfg.AdminLimit, cfg.Logger)
	c.jobs = newJobQueue()
	c.rep = deps.Replica
	c.term = make(chan struct{})
	c.quit = make(chan struct{})
	c.registered, c.regPending, c.regBusy = map[string][32]byte{}, map[string]siteWrite{}, map[string]bool{}
	c.regDone = make(chan struct{})
	if c.rep == nil {
		ctx, cancel := context.WithTimeout(context.Background(), soloStart)
		defer cancel()
		hc := ha.Config{ID: soloID, Peers: []ha.Peer{{ID: soloID}}, DigestsOnly: true}
		if cfg.ModelDir != "" {
			store, err := blobs.Open(cfg.ModelDir, blobs.Options{})
			if err != nil {
				return nil, fmt.Errorf("opening the model dir: %w", err)
			}
			hc.DigestsOnly, hc.Blobs = false, store
		}
		node, err := ha.NewInMemory(ctx, hc)
		if err != nil {
			return nil, fmt.Errorf("starting the coordinator's in-memory replica: %w", err)
		}
		c.rep, c.own = node, node
		// It leads already, over an empty state: nothing to restore.
		c.leading.Store(true)
	}
	if err := c.makeSpillDir(); err != nil {
		if c.own != nil {
			c.own.Close()
		}
		return nil, err
	}
	return c, nil
}

// spillAbove is Config.SpillAbove with its default.
func (c *Coordinator) spillAbove() int64 {
	switch a := c.cfg.SpillAbove; {
	case a < 0:
		return 0
	case a == 0:
		return defaultSpillAbove
	default:
		return a
	}
}

// makeSpillDir creates the folder updates are spilled to (Config.SpillDir).
func (c *Coordinator) makeSpillDir() error {
	if c.cfg.SpillDir == "" {
		dir, err := os.MkdirTemp("", "cohort-updates-*")
		if err != nil {
			return fmt.Errorf("creating a folder for received updates: %w; set TMPDIR or the coordinator's spill_dir to a writable folder", err)
		}
		c.spillDir, c.ownSpill = dir, true
		return nil
	}
	if err := os.MkdirAll(c.cfg.SpillDir, 0o700); err != nil {
		return fmt.Errorf("creating the folder for received updates: %w; set spill_dir to a writable folder", err)
	}
	c.spillDir = c.cfg.SpillDir
	// Updates a previous process left (it stopped mid-round) are of
	// rounds that will run again: their files go.
	stale, _ := filepath.Glob(filepath.Join(c.spillDir, spillPattern))
	for _, f := range stale {
		os.Remove(f)
	}
	return nil
}

// soloID is the node id of the in-memory replica of a coordinator given
// none; soloStart bounds how long New waits for it to lead.
const (
	soloID    = "local"
	soloStart = 10 * time.Second
)

// Close ends the coordinator's background proposals and closes the
// in-memory replica New made (a [Replica] in [Deps] is the caller's to
// close). Call it after Run returns. It is idempotent.
func (c *Coordinator) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.shut = true
		c.mu.Unlock()
		close(c.quit)
		c.regWG.Wait()
		c.waitRunners(runnerWait)
		if c.own != nil {
			c.closeErr = c.own.Close()
		}
		if c.ownSpill {
			c.closeErr = errors.Join(c.closeErr, os.RemoveAll(c.spillDir))
		}
	})
	return c.closeErr
}

// runnerWait bounds how long Close waits for job runners that ignored
// their cancellation.
const runnerWait = 30 * time.Second

// waitRunners waits up to d for every job runner to return, so that
// nothing writes to the tracker or the models once Close has returned;
// a runner still stuck then is left behind with a warning.
func (c *Coordinator) waitRunners(d time.Duration) {
	done := make(chan struct{})
	go func() {
		c.runners.Wait()
		close(done)
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		c.log.Warn("job_runners_abandoned", "waited", d,
			"detail", "a job runner still waits on something that ignores cancellation; what it writes after this may be lost")
	}
}

// MaxMessageBytes is the largest message a coordinator's gRPC server
// accepts ([GRPCOptions]).
const MaxMessageBytes = 8 << 20

// GRPCOptions are the options of a coordinator's gRPC server, to which
// its caller adds its own (credentials, interceptors): messages up to
// [MaxMessageBytes], no HPACK dynamic table for the headers that clients
// send, and the bulk codec with its fixed flow-control window
// ([bulk.ServerOptions]). A site's connection sends headers a few times a
// round, so that table saves little on the wire, but each connection kept
// its site's headers in it: 3.5 MB of the coordinator's heap profile at
// 10,000 idle sites, none without it.
func GRPCOptions() []grpc.ServerOption {
	return append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		grpc.HeaderTableSize(0),
	}, bulk.ServerOptions()...)
}

// Register registers the coordinator's services on s.
func (c *Coordinator) Register(s *grpc.Server) {
	pb.RegisterCoordinatorServiceServer(s, c)
	pb.RegisterJobsServiceServer(s, c)
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// peerCommonName returns the CN of the client certificate of the call, or ""
// without TLS.
func peerCommonName(ctx context.Context) string {
	if cert := peerCert(ctx); cert != nil {
		return cert.Subject.CommonName
	}
	return ""
}

// MaxCapabilitiesBytes bounds the capabilities a site joins with.
const MaxCapabilitiesBytes = 64 << 10

// Join implements CoordinatorService.Join.
func (c *Coordinator) Join(ctx context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	if err := c.notLeader(); err != nil {
		return nil, err
	}
	name := req.GetSiteName()
	if name == "" {
		return nil, toStatus(badInput("join: site_name is empty; set the site's name in its config"))
	}
	if err := c.joinLimit.allow(caller(ctx, name)); err != nil {
		return nil, toStatus(fmt.Errorf("join: %w", err))
	}
	if cn := peerCommonName(ctx); cn != "" && cn != name {
		c.log.Warn("join_refused", "site", name, "certificate_cn", cn)
		return nil, toStatus(badInput("join: site name %q does not match its certificate's CN %q", name, cn))
	}
	if n := proto.Size(req.GetCapabilities()); n > MaxCapabilitiesBytes {
		c.log.Warn("join_refused", "site", name, "capabilities_bytes", n)
		return nil, toStatus(badInput("join: site %q's capabilities are %d bytes, over the %d accepted; list its trainers, GPUs, energy sources and datasets only", name, n, MaxCapabilitiesBytes))
	}
	id := newID()
	now := c.now()
	c.mu.Lock()
	if err := c.siteTakenLocked(name, agentInstance(ctx), now); err != nil {
		c.mu.Unlock()
		c.log.Warn("join_refused", "site", name, "err", err)
		return nil, toStatus(fmt.Errorf("join: %w", err))
	}
	// One pending join per site: a site that joins again before opening
	// its session (or floods Join) replaces its earlier one. Joins never
	// followed by a session expire.
	for old, pj := range c.pending {
		if pj.name == name || now.Sub(pj.at) > pendingJoinTTL {
			delete(c.pending, old)
		}
	}
	if len(c.pending) >= maxPendingJoins {
		c.mu.Unlock()
		return nil, toStatus(fmt.Errorf("join: %w: %d sites joined within %s without opening their session; retry in a minute", ErrRateLimited, len(c.pending), pendingJoinTTL))
	}
	c.pending[id] = pendingJoin{name: name, caps: req.GetCapabilities(), at: now}
	c.mu.Unlock()
	c.registerSite(name, req.GetCapabilities())
	c.log.Info("site_joined", "site", name, "version", req.GetVersion(),
		"trainers", req.GetCapabilities().GetTrainers(), "gpus", len(req.GetCapabilities().GetGpus()))
	return &pb.JoinResponse{
		SessionId:           id,
		HeartbeatIntervalMs: c.cfg.HeartbeatInterval.Milliseconds(),
		CoordinatorVersion:  c.cfg.Version,
	}, nil
}

// Session implements CoordinatorService.Session.
//
// An idle site's cost is mostly its goroutines' stacks, and a collection
// halves a parked goroutine's stack only while it uses less than a
// quarter of it: a stack that once grew to 8 KiB stays so while its
// goroutine waits 2 KiB deep. This handler's goroutine, which gRPC starts
// 1.3 KiB deep in its own calls, therefore only waits (awaitSession) and
// keeps a 4 KiB stack: the hello and its log records run on a goroutine
// that ends once it has started the receiver (openSession), the sends on
// one started while messages are queued (siteConn.kick). 1,000 sites:
// 22.5 → 18.5 KiB of stacks a site.
func (c *Coordinator) Session(stream grpc.BidiStreamingServer[pb.SiteMessage, pb.CoordinatorMessage]) error {
	s := &session{
		opened: make(chan *siteConn, 1),
		ended:  make(chan error, 1),
		alive:  make(chan struct{}, 1),
	}
	go c.openSession(stream, s)
	return c.awaitSession(stream.Context(), s)
}

// session is what a session's opener and receiver tell its handler.
type session struct {
	opened chan *siteConn // the session's site, once its hello is accepted
	ended  chan error     // why receiving ended (the status to return if no site was opened)
	alive  chan struct{}  // a message came
}

// receiveSession handles the site's messages until the stream ends, and
// tells s why it ended.
func (c *Coordinator) receiveSession(stream grpc.BidiStreamingServer[pb.SiteMessage, pb.CoordinatorMessage], conn *siteConn, s *session) {
	for {
		m, err := stream.Recv()
		if err != nil {
			s.ended <- err
			return
		}
		conn.lastSeen.Store(c.now().UnixNano())
		select {
		case s.alive <- struct{}{}:
		default:
		}
		c.handleSiteMessage(conn, m)
	}
}

// openSession reads a session's hello and makes its site connected, then
// starts the session's receiver, or tells s why it did not (a gRPC
// status). The receiver is a fresh goroutine rather than this one, whose
// stack the hello's log records grew to 8 KiB: the receiver waits 1.9 KiB
// deep, too deep for a collection to shrink a stack of 8 KiB.
func (c *Coordinator) openSession(stream grpc.BidiStreamingServer[pb.SiteMessage, pb.CoordinatorMessage], s *session) {
	conn, err := c.acceptHello(stream)
	if err != nil {
		s.ended <- err
		return
	}
	s.opened <- conn
	go c.receiveSession(stream, conn, s)
}

// acceptHello reads a session's hello and makes its site connected; its
// errors are gRPC statuses.
func (c *Coordinator) acceptHello(stream grpc.BidiStreamingServer[pb.SiteMessage, pb.CoordinatorMessage]) (*siteConn, error) {
	first, err := stream.Recv()
	if err != nil {
		return nil, toStatus(fmt.Errorf("session: reading hello: %w", err))
	}
	hello := first.GetHello()
	if hello == nil {
		return nil, toStatus(badInput("session: the first message must be a hello with the session id from Join"))
	}
	c.mu.Lock()
	pj, ok := c.pending[hello.GetSessionId()]
	delete(c.pending, hello.GetSessionId())
	c.mu.Unlock()
	name := pj.name
	if !ok {
		return nil, toStatus(fmt.Errorf("session %q: %w: call Join first", hello.GetSessionId(), ErrUnknownSite))
	}
	conn := &siteConn{
		name:      name,
		caps:      pj.caps,
		sessionID: hello.GetSessionId(),
		stream:    stream,
		send:      make(chan *pb.CoordinatorMessage, 8),
		sendErr:   make(chan error, 1),
		done:      make(chan struct{}),
		instance:  agentInstance(stream.Context()),
		addr:      peerAddr(stream.Context()),
		since:     c.now(),
	}
	conn.lastSeen.Store(conn.since.UnixNano())
	if err := c.addSite(conn); err != nil {
		c.log.Warn("session_refused", "site", name, "err", err)
		return nil, toStatus(fmt.Errorf("session: %w", err))
	}
	if err := c.notLeader(); err != nil {
		c.removeSite(conn)
		return nil, err // stepped down between Join and Session
	}
	return conn, nil
}

// awaitSession waits for the session's end: the stream's, the site's
// replacement or the site's silence for the session timeout. It returns
// once no send is running. Its goroutine's stack stays shallow (see
// [Coordinator.Session]): what it calls deeper runs once it has ended.
func (c *Coordinator) awaitSession(ctx context.Context, s *session) error {
	var conn *siteConn
	select {
	case conn = <-s.opened:
	case err := <-s.ended:
		return err
	}
	var (
		timeout = c.cfg.SessionTimeout
		expiry  *time.Timer
		expired <-chan time.Time
	)
	if timeout > 0 {
		expiry = time.NewTimer(timeout)
		expired = expiry.C
	}
	err := waitSession(ctx, conn, s, expiry, expired, timeout)
	if expiry != nil {
		expiry.Stop()
	}
	return c.endSession(conn, err, timeout)
}

// waitSession is awaitSession's wait: nil when the session was closed
// (conn.done), else why it ended; errSessionSilent when the site sent
// nothing for timeout.
func waitSession(ctx context.Context, conn *siteConn, s *session, expiry *time.Timer, expired <-chan time.Time, timeout time.Duration) error {
	for {
		select {
		case err := <-s.ended:
			return err
		case err := <-conn.sendErr:
			return err
		case <-ctx.Done():
			return ctx.Err()
		case <-conn.done:
			return nil
		case <-s.alive:
			if expiry != nil {
				expiry.Reset(timeout)
			}
		case <-expired:
			return errSessionSilent
		}
	}
}

// errSessionSilent is waitSession's error for a site that sent nothing
// for the session timeout.
var errSessionSilent = errors.New("session silent")

// endSession ends conn's session, which ended with err (from
// waitSession), and returns the handler's status.
func (c *Coordinator) endSession(conn *siteConn, err error, timeout time.Duration) error {
	conn.stopSends()
	c.removeSite(conn)
	if errors.Is(err, errSessionSilent) {
		c.log.Warn("site_timed_out", "site", conn.name, "silent_for", timeout)
		err = fmt.Errorf("%w: site %q sent nothing for %s (sites heartbeat every %s); join again", ErrSessionExpired, conn.name, timeout, c.cfg.HeartbeatInterval)
	}
	if nl := c.notLeader(); nl != nil {
		return nl // stepped down: the site goes to the leader this names
	}
	if errors.Is(err, io.EOF) || err == nil {
		c.log.Info("site_left", "site", conn.name)
		return nil
	}
	c.log.Info("site_disconnected", "site", conn.name, "err", err)
	return toStatus(err)
}

// addSite makes conn its site's session. A reconnect of the same agent
// (or of one whose session went silent) replaces the old session; another
// agent with the same name while the first one's session is alive is
// refused with [ErrSiteConnected].
func (c *Coordinator) addSite(conn *siteConn) error {
	c.mu.Lock()
	if err := c.siteTakenLocked(conn.name, conn.instance, conn.since); err != nil {
		c.mu.Unlock()
		return err
	}
	old := c.sites[conn.name]
	c.sites[conn.name] = conn
	c.notifySitesLocked()
	c.mu.Unlock()
	if old != nil {
		// A site that reconnects replaces its old session; tasks sent on the
		// old one are lost with it.
		c.log.Info("site_replaced_session", "site", conn.name)
		c.failSiteTasks(old.name, "site reconnected; the task's session ended")
		close(old.done)
	}
	c.log.Info("site_connected", "site", conn.name)
	return nil
}

// siteTakenLocked returns [ErrSiteConnected] when another agent instance
// than instance holds name's session and that session is alive: it sent
// something within the session timeout (3 heartbeat intervals without
// one). An agent that names no instance (an older version) is not
// checked: its session is replaced, as it always was. c.mu is held.
func (c *Coordinator) siteTakenLocked(name, instance string, now time.Time) error {
	old := c.sites[name]
	if old == nil || instance == "" || old.instance == "" || old.instance == instance {
		return nil
	}
	stale := c.cfg.SessionTimeout
	if stale <= 0 {
		stale = 3 * c.cfg.HeartbeatInterval
	}
	silent := now.Sub(time.Unix(0, old.lastSeen.Load()))
	if silent >= stale {
		return nil // the old agent is gone; its session has yet to time out
	}
	return fmt.Errorf("%w: site %q is already connected from %s since %s; stop the other agent, or wait %s after it died",
		ErrSiteConnected, name, old.addr, old.since.UTC().Format(time.RFC3339), (stale - silent).Round(time.Second))
}

// agentInstance is the agent instance id a site's call carries in its
// metadata ([pb.AgentInstanceKey]); "" when it sends none.
func agentInstance(ctx context.Context) string {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return ""
	}
	if v := md.Get(pb.AgentInstanceKey); len(v) > 0 {
		return v[0]
	}
	return ""
}

// peerAddr is the address a call comes from, or "an unknown address".
func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return "an unknown address"
}

// removeSite ends a site's session and forgets what the coordinator
// holds for it by name: its pending joins and its registry entry. Its
// tasks fail (the runners awaiting them remove them); its rate-limit
// entry goes once idle, so that leaving and joining again does not reset
// it.
func (c *Coordinator) removeSite(conn *siteConn) {
	c.mu.Lock()
	current := c.sites[conn.name] == conn
	if current {
		delete(c.sites, conn.name)
		c.notifySitesLocked()
		for id, pj := range c.pending {
			if pj.name == conn.name {
				delete(c.pending, id)
			}
		}
		delete(c.registered, conn.name)
	}
	c.mu.Unlock()
	if current {
		close(conn.done)
		c.failSiteTasks(conn.name, "site disconnected")
	}
}

// closeSessions ends every connected site's session.
func (c *Coordinator) closeSessions() {
	c.mu.Lock()
	conns := make([]*siteConn, 0, len(c.sites))
	for name, conn := range c.sites {
		conns = append(conns, conn)
		delete(c.sites, name)
	}
	c.notifySitesLocked()
	c.mu.Unlock()
	for _, conn := range conns {
		close(conn.done)
	}
}

func (c *Coordinator) notifySitesLocked() {
	close(c.siteCond)
	c.siteCond = make(chan struct{})
}

// connected returns the names of the connected sites, sorted, and a channel
// closed at the next change.
func (c *Coordinator) connected() ([]string, map[string]*pb.Capabilities, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	names := make([]string, 0, len(c.sites))
	caps := make(map[string]*pb.Capabilities, len(c.sites))
	for n, s := range c.sites {
		names = append(names, n)
		caps[n] = s.caps
	}
	sort.Strings(names)
	return names, caps, c.siteCond
}

// sendTo queues a message for a connected site.
func (c *Coordinator) sendTo(site string, m *pb.CoordinatorMessage) error {
	c.mu.Lock()
	conn, ok := c.sites[site]
	c.mu.Unlock()
	if !ok {
		return fmt.Errorf("sending to %q: %w", site, ErrUnknownSite)
	}
	select {
	case conn.send <- m:
		conn.kick()
		return nil
	case <-conn.done:
		return fmt.Errorf("sending to %q: %w (session ended)", site, ErrUnknownSite)
	}
}

// kick starts the goroutine that sends conn's queued messages unless
// it runs or the session ended. A message queued before kick is sent:
// the goroutine stops only on finding the queue empty, under sendMu.
func (conn *siteConn) kick() {
	conn.sendMu.Lock()
	defer conn.sendMu.Unlock()
	if conn.sending || conn.stopped {
		return
	}
	conn.sending = true
	conn.sends.Add(1)
	go conn.sendQueued()
}

// sendQueued sends conn's queued messages until none is left, the
// session ends or a send fails.
func (conn *siteConn) sendQueued() {
	defer conn.sends.Done()
	for {
		conn.sendMu.Lock()
		if conn.stopped || len(conn.send) == 0 {
			conn.sending = false
			conn.sendMu.Unlock()
			return
		}
		conn.sendMu.Unlock()
		if err := conn.stream.Send(<-conn.send); err != nil { // the only receiver: it does not block
			conn.sendMu.Lock()
			conn.sending, conn.stopped = false, true // the stream is broken
			conn.sendMu.Unlock()
			select {
			case conn.sendErr <- err:
			default:
			}
			return
		}
	}
}

// stopSends lets no more sends start and waits for a running one.
func (conn *siteConn) stopSends() {
	conn.sendMu.Lock()
	conn.stopped = true
	conn.sendMu.Unlock()
	conn.sends.Wait()
}

func (c *Coordinator) handleSiteMessage(conn *siteConn, m *pb.SiteMessage) {
	switch msg := m.Msg.(type) {
	case *pb.SiteMessage_Heartbeat:
		// Liveness is the stream itself; heartbeats keep proxies from idling it out.
	case *pb.SiteMessage_Progress:
		if t := c.task(msg.Progress.GetTaskId()); t != nil && t.site == conn.name {
			t.box.progress(conn.name, msg.Progress)
		}
	case *pb.SiteMessage_Failed:
		if t := c.task(msg.Failed.GetTaskId()); t != nil && t.site == conn.name {
			energy, _ := c.screenEnergy(conn.name, t.id, t.sent, msg.Failed.GetEnergy())
			t.box.deliver(roundEvent{kind: evFailed, site: conn.name, taskID: t.id, reason: msg.Failed.GetReason(), energy: energy})
		} else if ct := c.closedTask(msg.Failed.GetTaskId()); ct.late != nil && (ct.site == "" || ct.site == conn.name) {
			energy, _ := c.screenEnergy(conn.name, msg.Failed.GetTaskId(), ct.sent, msg.Failed.GetEnergy())
			ct.late.add(energy) // a task its round cut or gave up on
		}
	case *pb.SiteMessage_Result:
		if t := c.task(msg.Result.GetTaskId()); t != nil && t.site == conn.name {
			energy, _ := c.screenEnergy(conn.name, t.id, t.sent, msg.Result.GetEnergy())
			t.box.deliver(roundEvent{kind: evResult, site: conn.name, taskID: t.id, metrics: msg.Result.GetMetrics(), energy: energy})
		}
	case *pb.SiteMessage_Hello:
		c.log.Warn("site_sent_second_hello", "site", conn.name)
	default:
		c.log.Warn("site_sent_unknown_message", "site", conn.name)
	}
}

func (c *Coordinator) task(id string) *pendingTask {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tasks[id]
}

func (c *Coordinator) addTask(t *pendingTask) {
	c.mu.Lock()
	if t.sent.IsZero() {
		t.sent = c.now()
	}
	c.tasks[t.id] = t
	c.mu.Unlock()
}

func (c *Coordinator) removeTask(id string) {
	c.mu.Lock()
	delete(c.tasks, id)
	c.mu.Unlock()
}

// closeTasks forgets the tasks of a round that closed, keeping their ids
// (until forgetClosed) so that what they report late reaches late.
func (c *Coordinator) closeTasks(ids []string, late *lateEnergy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		ct := closedTask{late: late}
		if t := c.tasks[id]; t != nil {
			ct.site, ct.sent = t.site, t.sent
		}
		delete(c.tasks, id)
		c.closed[id] = ct
	}
}

// forgetClosed drops closed tasks' ids.
func (c *Coordinator) forgetClosed(ids []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, id := range ids {
		delete(c.closed, id)
	}
}

// closedTask returns a task whose round closed; its late is nil for
// none.
func (c *Coordinator) closedTask(id string) closedTask {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed[id]
}

// failSiteTasks tells every round waiting on the site that it is gone.
func (c *Coordinator) failSiteTasks(site, reason string) {
	c.mu.Lock()
	var ts []*pendingTask
	for _, t := range c.tasks {
		if t.site == site {
			ts = append(ts, t)
		}
	}
	c.mu.Unlock()
	for _, t := range ts {
		t.box.deliver(roundEvent{kind: evDisconnected, site: site, taskID: t.id, reason: reason})
	}
}

// chunkBuffers are the buffers of the model chunks being sent: each goes
// back once gRPC has written it.
var chunkBuffers bulk.Buffers

// FetchModel implements CoordinatorService.FetchModel.
func (c *Coordinator) FetchModel(req *pb.FetchModelRequest, stream grpc.ServerStreamingServer[pb.ModelChunk]) error {
	m, ok := c.models.get(req.GetModelId())
	if !ok {
		return toStatus(fmt.Errorf("fetching model %q: %w", req.GetModelId(), ErrUnknownModel))
	}
	// The first chunk announces the size and checksum, even of an empty
	// model. The bytes are encoded from the weights as they are sent.
	first := &pb.ModelChunk{TotalSize: m.size, Sha256: m.sum[:]}
	// What is sent counts toward the task's round, unless the task carried
	// the model already (counted when it was queued): a site that fetches
	// it anyway (one from before model_data) costs the bytes once.
	t := c.task(req.GetTaskId())
	count := t != nil && !(t.global == m && m.inline != nil)
	send := func(ch *pb.ModelChunk) error {
		if err := stream.SendMsg(bulk.Owned(ch, ch.Data, &chunkBuffers)); err != nil {
			return toStatus(fmt.Errorf("sending model %s: %w", m.id[:12], err))
		}
		if count {
			t.box.addBytesSent(int64(len(ch.Data)))
		}
		return nil
	}
	if m.size == 0 {
		return send(first)
	}
	var sendErr error // a status already
	cw := model.NewChunkWriter(c.cfg.ChunkSize, func(off int64, data []byte) error {
		ch := &pb.ModelChunk{Offset: off, Data: data}
		if off == 0 {
			ch.TotalSize, ch.Sha256 = first.TotalSize, first.Sha256
		}
		sendErr = send(ch)
		return sendErr
	})
	cw.Expect(m.size)
	cw.Buffers(func(n int) []byte { return *chunkBuffers.Get(n) })

	err := m.encode(cw)
	if err == nil {
		err = cw.Flush()
	}
	switch {
	case sendErr != nil:
		return sendErr
	case err != nil:
		return toStatus(fmt.Errorf("sending model %s: %w", m.id[:12], err))
	}
	return nil
}

// updateSlot waits for a slot to receive an update in
// (Config.MaxConcurrentUpdates) and returns the function that frees it,
// which may be called more than once.
func (c *Coordinator) updateSlot(ctx context.Context) (release func(), err error) {
	if c.updateSlots == nil {
		return func() {}, nil
	}
	select {
	case c.updateSlots <- struct{}{}:
	default:
		if c.updateWaiting != nil {
			c.updateWaiting()
		}
		select {
		case c.updateSlots <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	var once sync.Once
	return func() { once.Do(func() { <-c.updateSlots }) }, nil
}

// receivedUpdate is a validated update from a site: decoded (weights, an
// init task's) or spilled to a file (spill, an update trained from a
// global model), until the round folds it.
type receivedUpdate struct {
	weights    *model.Weights
	spill      *spilledUpdate
	numSamples int64
	metrics    map[string]float64
	energy     *pb.EnergyReport
	evalEnergy *pb.EnergyReport
	dataset    *pb.DatasetInfo
	bytes      int64
	// Set by screening: the sample count the site claimed where it was
	// capped, and the L2 norm of the update's delta as received.
	claimed   int64
	deltaNorm float64
	arrived   time.Time // when screening parked it
}

// discard removes a spilled update's file: once the update is folded,
// refused, replaced or its round is over. It may be called more than once.
func (u *receivedUpdate) discard() {
	if u != nil {
		u.spill.remove()
	}
}

// PushUpdate implements CoordinatorService.PushUpdate.
func (c *Coordinator) PushUpdate(stream grpc.ClientStreamingServer[pb.UpdateChunk, pb.PushUpdateResponse]) error {
	first, err := stream.Recv()
	if err != nil {
		return toStatus(fmt.Errorf("push update: reading header: %w", err))
	}
	h := first.GetHeader()
	if h == nil {
		return toStatus(badInput("push update: the first message must be the header"))
	}
	t := c.task(h.GetTaskId())
	if t == nil {
		if ct := c.closedTask(h.GetTaskId()); ct.late != nil {
			// Too late to be used; what it cost still counts.
			if cn := peerCommonName(stream.Context()); cn == "" || ct.site == "" || cn == ct.site {
				energy, _ := c.screenEnergy(ct.site, h.GetTaskId(), ct.sent, h.GetEnergy())
				evalEnergy, _ := c.screenEnergy(ct.site, h.GetTaskId(), ct.sent, h.GetEvalEnergy())
				ct.late.add(energy)
				ct.late.add(evalEnergy)
			}
			return toStatus(fmt.Errorf("push update for task %q: %w", h.GetTaskId(), ErrStaleRound))
		}
		return toStatus(fmt.Errorf("push update for task %q: %w", h.GetTaskId(), ErrUnknownTask))
	}
	if err := t.checkUpdate(stream.Context(), h); err != nil {
		c.log.Warn("update_refused", "task", t.id, "site", t.site, "err", err)
		if errors.Is(err, ErrTaskMismatch) {
			// The task's own site answered wrongly: its round need not wait
			// for it. (Another site's push leaves the task alone.)
			energy, _ := c.screenEnergy(t.site, t.id, t.sent, h.GetEnergy())
			t.box.deliver(roundEvent{kind: evRejected, site: t.site, taskID: t.id, reason: err.Error(), energy: energy})
		}
		return toStatus(err)
	}
	// An implausible energy report is dropped (the site's work counts as
	// unmeasured) and flagged on the site's run.
	energy, badEnergy := c.screenEnergy(t.site, t.id, t.sent, h.GetEnergy())
	evalEnergy, badEval := c.screenEnergy(t.site, t.id, t.sent, h.GetEvalEnergy())
	limit, globalSize := c.cfg.MaxUpdateBytes, int64(0)
	switch {
	case t.global != nil:
		globalSize = t.global.size
		if limit <= 0 {
			limit = 2*globalSize + 1<<20
		}
	case limit <= 0: // an init task: no global model to compare with
		limit = c.cfg.MaxInitBytes
	}
	if h.GetTotalSize() <= 0 || h.GetTotalSize() > limit {
		err := badInput("push update: declared size %d bytes is outside 1..%d (the global model is %d bytes)", h.GetTotalSize(), limit, globalSize)
		t.box.deliver(roundEvent{kind: evRejected, site: t.site, taskID: t.id, reason: err.Error(), energy: energy})
		return toStatus(err)
	}
	release, err := c.updateSlot(stream.Context())
	if err != nil {
		return toStatus(fmt.Errorf("push update: waiting to be received: %w", err))
	}
	defer release()
	// The update is checked as its chunks arrive and hashed on the way:
	// no buffer of the encoded bytes. Its size is bounded by the declared
	// size, itself bounded above by the global model's.
	var recvErr error
	var m pb.UpdateChunk // received into again: the reader keeps no chunk past the next
	r, err := model.NewChunkReader(h.GetTotalSize(), func() ([]byte, error) {
		if err := stream.RecvMsg(&m); err != nil {
			if !errors.Is(err, io.EOF) {
				recvErr = err
			}
			return nil, err
		}
		return m.GetData(), nil
	})
	if err != nil {
		return toStatus(badInput("push update: %v", err))
	}
	// An update trained from a global model goes to a file as it is
	// checked (spill.go), unless it is small (spillAbove); an init task's
	// initial weights are decoded.
	var w *model.Weights
	var sp *spilledUpdate
	// A model kept on disk is never held whole: neither are its updates.
	if t.global != nil && (t.global.file != nil || t.global.w != nil && h.GetTotalSize() > c.spillAbove()) {
		sp, err = spill(c.spillDir, r, h.GetTotalSize(), t.global.values())
	} else {
		w, _, err = model.DecodeSafetensors(r, h.GetTotalSize())
	}
	if err == nil {
		// A checksum mismatch discards what was decoded or spilled.
		err = r.Finish(h.GetSha256())
	}
	if err != nil || recvErr != nil {
		sp.remove()
	}
	if recvErr != nil {
		// A site that disconnects mid-upload loses this update; the
		// round hears of it from the session.
		c.log.Warn("update_upload_broken", "site", t.site, "task", t.id, "err", recvErr)
		return toStatus(fmt.Errorf("push update: receiving chunks: %w", recvErr))
	}
	if errors.Is(err, os.ErrClosed) {
		// The round closed while the update arrived: its model file with it.
		return toStatus(fmt.Errorf("push update for task %q: %w", t.id, ErrStaleRound))
	}
	if errors.Is(err, errSpill) {
		c.log.Error("update_not_spilled", "site", t.site, "task", t.id, "err", err)
		t.box.deliver(roundEvent{kind: evRejected, site: t.site, taskID: t.id, reason: err.Error(), energy: energy})
		return toStatus(err)
	}
	if err != nil {
		err = badInput("push update: decoding the update: %v; send the weights as safetensors of the size and SHA-256 the header declares", err)
		t.box.deliver(roundEvent{kind: evRejected, site: t.site, taskID: t.id, reason: err.Error(), energy: energy})
		return toStatus(err)
	}
	// Received: the next upload may start while the round folds this one.
	release()
	metrics := h.GetMetrics()
	if badEnergy || badEval {
		metrics = maps.Clone(metrics)
		if metrics == nil {
			metrics = make(map[string]float64, 1)
		}
		metrics[MetricEnergyRejected] = 1
	}
	up := &receivedUpdate{
		weights:    w,
		spill:      sp,
		numSamples: h.GetNumSamples(),
		metrics:    metrics,
		energy:     energy,
		evalEnergy: evalEnergy,
		dataset:    h.GetDataset(),
		bytes:      h.GetTotalSize(),
	}
	reply := make(chan error, 1)
	if !t.box.deliver(roundEvent{kind: evUpdate, site: t.site, taskID: t.id, update: up, reply: reply}) {
		up.discard()
		return toStatus(fmt.Errorf("push update for task %q: %w", t.id, ErrStaleRound))
	}
	select {
	case err = <-reply:
	case <-stream.Context().Done():
		return toStatus(stream.Context().Err())
	}
	if err != nil {
		return stream.SendAndClose(&pb.PushUpdateResponse{Accepted: false, Reason: err.Error()})
	}
	return stream.SendAndClose(&pb.PushUpdateResponse{Accepted: true})
}
