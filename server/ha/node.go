package ha

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/cohortfl/cohort/server/blobs"
)

// Peer is one voter of the cluster.
type Peer struct {
	ID string `json:"id"`
	// RaftAddr is the host:port raft listens on and the peers dial.
	RaftAddr string `json:"raft_addr"`
	// GRPCAddr is the host:port of that coordinator's gRPC server, told to
	// clients as the leader hint.
	GRPCAddr string `json:"grpc_addr,omitempty"`
}

// Config configures a [Node]. Zero durations and sizes take the defaults
// documented on each field.
type Config struct {
	// ID is this node's id; it must be one of Peers.
	ID string
	// Peers lists every voter, this node included; one peer makes a
	// one-voter cluster. Every node must list the same peers (the order
	// and the gRPC addresses may differ).
	Peers []Peer
	// DataDir holds raft.db (the log, raft-boltdb), snapshots/ (the last
	// two snapshots) and cluster.json (which node and cluster the folder
	// belongs to).
	DataDir string
	// ServerTLS and ClientTLS, both set, make the nodes talk mutual TLS:
	// ServerTLS must require and verify client certificates. Both nil is
	// plain TCP. When ClientTLS.ServerName is empty, the dialled host is
	// verified.
	ServerTLS, ClientTLS *tls.Config
	// RaftListener, when set, is the socket raft accepts peers on (one
	// the process inherited: systemd socket activation), instead of one
	// [Open] binds on this node's RaftAddr, which stays the address peers
	// dial. It is a plain TCP listener: Open wraps it in ServerTLS. The
	// node closes it, and so does Open when it fails.
	RaftListener net.Listener
	// Raft's timeouts; 0 takes 2 s, 2 s, a 2 s lease and raft's 50 ms
	// commit timeout in a cluster of several voters (see clusterTimeout),
	// 50 ms in a one-voter cluster (it leads at once); a lease is never
	// longer than the heartbeat.
	HeartbeatTimeout, ElectionTimeout, LeaderLeaseTimeout, CommitTimeout time.Duration
	// Raft's snapshot policy; 0 takes a snapshot every 1,024 entries (or
	// raft's 120 s) and keeps 512 entries after it (raft's own 8,192 and
	// 10,240 would hold ~10 GiB of 1 MiB model chunks).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// ApplyTimeout bounds how long a proposal waits to enter raft's queue;
	// 0 is 10 s.
	ApplyTimeout time.Duration
	// ChunkSize is the most model bytes per log entry; 0 is 1 MiB.
	ChunkSize int
	// DigestsOnly makes the log and the FSM carry models' digests, not
	// their bytes: [Node.PutModel] records a sealed digest whose model
	// stays with the caller, and [FSM.OpenModel] of it is [ErrBlobMissing].
	// For a one-voter cluster in memory (`cohort run`): no follower needs
	// the bytes and nothing restarts from them, so holding them would only
	// double the coordinator's memory.
	DigestsOnly bool
	// Blobs, when set, is this node's blob store: [Node.PutModel] writes a
	// model into it, the log carries only its digest and size, and every
	// node holds its copy in its own store, fetched from its peers through
	// BlobTransport (required with several voters). Without it, models
	// travel through the log in ChunkSize entries and live in memory.
	Blobs *blobs.Store
	// BlobTransport moves blobs between the nodes' stores; see
	// [BlobTransport].
	BlobTransport BlobTransport
	// PushBuffer is how many bytes of a model streamed to a follower
	// while the leader writes it (when BlobTransport is a [BlobPusher];
	// to the followers a quorum needs) may wait for the follower. Past
	// it the leader's write waits for the follower, at its pace, and
	// drops it after 10 s without room; a dropped follower fetches the
	// model once written. 0 is 64 MiB; negative disables the push
	// (followers fetch every model once it is written).
	PushBuffer int64
	// BlobCollectInterval is how often the node removes from Blobs the
	// blobs the state no longer references (after the store's grace); 0
	// is 1 minute.
	BlobCollectInterval time.Duration
	// Logger receives raft's logs; nil discards them.
	Logger hclog.Logger
}

const (
	defaultApplyTimeout = 10 * time.Second
	defaultChunkSize    = 1 << 20
	// boltLockTimeout is how long Open waits for raft.db's file lock.
	boltLockTimeout          = time.Second
	retainSnapshots          = 2
	defaultSnapshotThreshold = 1024
	defaultTrailingLogs      = 512
	// soloTimeout is the raft timeouts of a one-voter cluster.
	soloTimeout = 50 * time.Millisecond
	// clusterTimeout is the heartbeat and election timeout, and the leader
	// lease, of a cluster of several voters. A leader that moves models
	// of tens of MB for 20 sites on 2 cores is CPU-bound: its heartbeat
	// goroutines and its followers' wait in the Go and OS run queues, and
	// the leader heard from its followers only every 0.5–0.9 s. Under
	// raft's 500 ms lease it stepped down 6 times in 4 minutes
	// (TestClusterSoak); a leader now steps down after 2 s without a
	// quorum, and a failed leader is replaced in 2–4 s.
	clusterTimeout = 2 * time.Second
	// clusterPoll is how often a node compares the cluster's id with its own.
	clusterPoll = 50 * time.Millisecond
)

// Validate reports every problem of c as [Open] takes it (peers on the
// network, a data dir), joined, each naming the field and the fix.
func (c Config) Validate() error {
	errs := []error{c.validateParts()}
	addrs := map[string]string{}
	for i, p := range c.Peers {
		if p.RaftAddr == "" && len(c.Peers) == 1 {
			// A one-voter cluster needs no network: in-memory transport.
		} else if err := checkHostPort(p.RaftAddr); err != nil {
			errs = append(errs, fmt.Errorf("peers[%d].raft_addr: %w", i, err))
		} else if other, ok := addrs[p.RaftAddr]; ok {
			errs = append(errs, fmt.Errorf("peers[%d].raft_addr: %s is also node %s's: give every peer its own address", i, p.RaftAddr, other))
		} else {
			addrs[p.RaftAddr] = p.ID
		}
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("data_dir: not set: give a folder for this node's raft log and snapshots"))
	}
	if c.RaftListener != nil && len(c.Peers) == 1 && c.Peers[0].RaftAddr == "" {
		errs = append(errs, errors.New("raft listener: given to a one-voter cluster without a raft address, which needs no network: give the peer a raft_addr, or pass no raft socket"))
	}
	return errors.Join(errs...)
}

// validateParts reports the problems of c that [New] refuses: those of
// any transport and store.
func (c Config) validateParts() error {
	var errs []error
	if c.ID == "" {
		errs = append(errs, errors.New("id: not set: give this coordinator's node id, one of peers"))
	}
	if len(c.Peers) == 0 {
		errs = append(errs, errors.New("peers: empty: list every voter, this node included"))
	}
	ids := map[string]bool{}
	for i, p := range c.Peers {
		switch {
		case p.ID == "":
			errs = append(errs, fmt.Errorf("peers[%d].id: not set: give every peer an id", i))
		case ids[p.ID]:
			errs = append(errs, fmt.Errorf("peers: node id %s is listed twice: give every peer its own id", p.ID))
		}
		ids[p.ID] = true
	}
	if c.ID != "" && len(c.Peers) > 0 && !ids[c.ID] {
		errs = append(errs, fmt.Errorf("id: node %s is not in peers %s: add it to peers, or fix id", c.ID, peerList(c.Peers)))
	}
	if (c.ServerTLS == nil) != (c.ClientTLS == nil) {
		errs = append(errs, errors.New("server_tls, client_tls: only one is set: set both for mutual TLS between coordinators, or neither for plain TCP"))
	}
	if c.ServerTLS != nil && c.ServerTLS.ClientAuth != tls.RequireAndVerifyClientCert &&
		!(c.ServerTLS.ClientAuth == tls.RequireAnyClientCert && c.ServerTLS.VerifyConnection != nil) {
		errs = append(errs, errors.New("server_tls: client certificates are not verified: set ClientAuth to RequireAndVerifyClientCert, with ClientCAs (or RequireAnyClientCert with a VerifyConnection that verifies them), for mutual TLS"))
	}
	if c.ApplyTimeout < 0 {
		errs = append(errs, fmt.Errorf("apply_timeout: %v is negative: give a positive duration, or 0 for 10s", c.ApplyTimeout))
	}
	if c.ChunkSize < 0 {
		errs = append(errs, fmt.Errorf("chunk_size: %d is negative: give a positive size, or 0 for 1 MiB", c.ChunkSize))
	}
	if c.Blobs != nil && c.BlobTransport == nil && len(c.Peers) > 1 {
		errs = append(errs, errors.New("blob transport: not set with a blob store and several voters: give the transport that fetches blobs from the peers (server.NewBlobClient), or no blob store"))
	}
	if c.Blobs != nil && c.DigestsOnly {
		errs = append(errs, errors.New("blobs, digests_only: both set: a node records models by digest only, or keeps them in its blob store; choose one"))
	}
	return errors.Join(errs...)
}

func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return fmt.Errorf("%q is not host:port: give the address raft listens on, such as 10.0.0.1:7000", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q: give a port from 1 to 65535", addr, port)
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return fmt.Errorf("%q: peers cannot dial %s: give this node's own IP address or host name", addr, host)
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.ApplyTimeout == 0 {
		c.ApplyTimeout = defaultApplyTimeout
	}
	if c.ChunkSize == 0 {
		c.ChunkSize = defaultChunkSize
	}
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
	if c.BlobCollectInterval <= 0 {
		c.BlobCollectInterval = defaultBlobCollectInterval
	}
	if c.PushBuffer == 0 {
		c.PushBuffer = defaultPushBuffer
	}
	return c
}

func (c Config) raftConfig(notify chan bool) *raft.Config {
	conf := raft.DefaultConfig()
	conf.LocalID = raft.ServerID(c.ID)
	set := func(dst *time.Duration, v time.Duration) {
		if v > 0 {
			*dst = v
		}
	}
	if len(c.Peers) == 1 {
		// One voter has nobody to contest an election with: lead at once.
		conf.HeartbeatTimeout, conf.ElectionTimeout, conf.LeaderLeaseTimeout = soloTimeout, soloTimeout, soloTimeout
	} else {
		// Several voters: raft's LAN defaults (1 s, 1 s, a 500 ms lease)
		// made a loaded leader step down every minute or so — see
		// clusterTimeout.
		conf.HeartbeatTimeout, conf.ElectionTimeout = clusterTimeout, clusterTimeout
	}
	set(&conf.HeartbeatTimeout, c.HeartbeatTimeout)
	set(&conf.ElectionTimeout, c.ElectionTimeout)
	set(&conf.LeaderLeaseTimeout, c.LeaderLeaseTimeout)
	if c.LeaderLeaseTimeout == 0 && (len(c.Peers) > 1 || conf.LeaderLeaseTimeout > conf.HeartbeatTimeout) {
		// raft wants lease ≤ heartbeat; a cluster takes the longest lease
		// raft allows.
		conf.LeaderLeaseTimeout = conf.HeartbeatTimeout
	}
	set(&conf.CommitTimeout, c.CommitTimeout)
	set(&conf.SnapshotInterval, c.SnapshotInterval)
	// Model chunks make entries of up to ChunkSize: raft's defaults (a
	// snapshot every 8,192 entries, 10,240 kept after it) would keep ~10
	// GiB of log with 1 MiB chunks. These keep it near 1.5 GiB at worst.
	conf.SnapshotThreshold, conf.TrailingLogs = defaultSnapshotThreshold, defaultTrailingLogs
	if c.SnapshotThreshold > 0 {
		conf.SnapshotThreshold = c.SnapshotThreshold
	}
	if c.TrailingLogs > 0 {
		conf.TrailingLogs = c.TrailingLogs
	}
	conf.Logger = c.Logger
	conf.NotifyCh = notify
	return conf
}

// Errors returned by a [Node].
var (
	// ErrNotLeader is returned when a command is proposed to a node that
	// is not the leader; see [NotLeaderError].
	ErrNotLeader = errors.New("not the leader")
	// ErrClosed is returned by a node that was closed or stopped itself.
	ErrClosed = errors.New("node closed")
)

// NotLeaderError is returned when a proposal reaches a node that is not,
// or stopped being, the leader. It matches [ErrNotLeader].
type NotLeaderError struct {
	// Node is the id of the node that refused.
	Node string
	// Leader is the leader the node knows of; zero if none is elected.
	Leader Peer
	// OutcomeUnknown is set when leadership was lost while the command
	// was committing: it may or may not have committed, so the caller
	// must re-read the FSM before retrying.
	OutcomeUnknown bool
}

// Error names the leader, or says none is elected yet.
func (e *NotLeaderError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "coordinator %s is not the leader; ", e.Node)
	if e.Leader.ID == "" {
		b.WriteString("no leader is elected yet; retry in a few seconds")
	} else {
		fmt.Fprintf(&b, "the leader is %s at %s", e.Leader.ID, e.Leader.GRPCAddr)
	}
	if e.OutcomeUnknown {
		b.WriteString(" (leadership was lost while committing: the command may have committed; re-read the state before retrying)")
	}
	return b.String()
}

// Is reports whether target is ErrNotLeader.
func (e *NotLeaderError) Is(target error) bool { return target == ErrNotLeader }

// Node is one coordinator's member of the raft cluster: the [FSM] over
// raft, built by [New] from the stores and transport it is given, or by
// [Open] on raft-boltdb, file snapshots and a TCP or mutual-TLS
// transport. Its methods are safe for concurrent use. Proposals succeed
// on the leader only; elsewhere they return a [*NotLeaderError] with the
// leader hint.
type Node struct {
	cfg       Config
	clusterID string
	peers     map[raft.ServerID]Peer

	fsm  *FSM
	raft *raft.Raft
	// closers are the transport and stores Close closes: those with a
	// Close method.
	closers []io.Closer
	// transport is the transport's Close, nil without one: Close closes
	// it early when raft's shutdown stalls.
	transport io.Closer
	grace     time.Duration // shutdownGrace; shorter in tests
	pushStall time.Duration // pushStall; shorter in tests
	slowPush  time.Duration // slowPush; shorter in tests

	notify chan bool     // raft's NotifyCh
	kick   chan struct{} // leadership gained: check the cluster id now
	done   chan struct{} // closed by Close
	// closing is closed when Close starts or the node stops itself, so
	// that blob fetches (which may hold raft's FSM goroutine) give up
	// before raft is shut down.
	closing     chan struct{}
	closingOnce sync.Once
	wg          sync.WaitGroup
	errc        chan error
	putSem      chan struct{} // one PutModel at a time

	fetchMu  sync.Mutex
	fetching map[blobs.Digest]*fetchCall // blob fetches in flight
	pushing  int                         // blob pushes being received
	pushIdle chan struct{}               // closed when pushing drops to 0

	replicaMu     sync.Mutex
	replicaFailed map[string]time.Time // a follower's last failed replication (rankedFollowers)

	mu      sync.Mutex
	leader  bool
	changed chan struct{}
	stopped error // why the node stopped, nil while it runs

	closeOnce sync.Once
	closeErr  error
}

// New starts the node of cfg over the given parts, as raft.NewRaft takes
// them: fsm (nil: a new, empty one), the log and stable stores, the
// snapshot store and the transport, whose LocalAddr must be this node's
// raft address (its peer's RaftAddr, or "inmem:ID" for a one-voter
// cluster without one). Parts without state bootstrap the cluster with
// cfg.Peers; parts with state must hold a raft configuration of
// cfg.Peers. The node owns the parts from then on: Close closes those
// with a Close method, also when New fails.
//
// Tests build clusters from raft's InmemStore and InmemTransport;
// [Open] builds a node on disk and TCP.
func New(cfg Config, fsm *FSM, logs raft.LogStore, stable raft.StableStore, snaps raft.SnapshotStore, trans raft.Transport) (_ *Node, err error) {
	closers := closersOf(trans, logs, stable, snaps)
	defer func() {
		if err != nil {
			_ = closeAll(closers)
		}
	}()
	if err := cfg.validateParts(); err != nil {
		return nil, fmt.Errorf("ha config: %w", err)
	}
	if logs == nil || stable == nil || snaps == nil || trans == nil {
		return nil, errors.New("ha: New needs a log store, a stable store, a snapshot store and a transport; Open makes them on disk")
	}
	cfg = cfg.withDefaults()
	if fsm == nil {
		fsm = NewFSM()
	}
	n := &Node{
		cfg:       cfg,
		clusterID: clusterID(cfg.Peers),
		peers:     map[raft.ServerID]Peer{},
		fsm:       fsm,
		closers:   closers,
		notify:    make(chan bool, 1),
		kick:      make(chan struct{}, 1),
		done:      make(chan struct{}),
		closing:   make(chan struct{}),
		errc:      make(chan error, 1),
		putSem:    make(chan struct{}, 1),
		changed:   make(chan struct{}),
	}
	n.transport, _ = trans.(io.Closer)
	fsm.store, fsm.log = cfg.Blobs, cfg.Logger
	if cfg.Blobs != nil && cfg.BlobTransport != nil {
		fsm.fetch = n.fetchBlob
	}
	n.grace = shutdownGrace
	n.pushStall = pushStall
	n.slowPush = slowPush
	for _, p := range cfg.Peers {
		n.peers[raft.ServerID(p.ID)] = p
	}
	self := n.peers[raft.ServerID(cfg.ID)]
	if got, want := trans.LocalAddr(), raftAddress(self); got != want {
		return nil, fmt.Errorf("ha: the transport listens as %q but node %s's raft address is %q: give the transport the peer's raft_addr", got, cfg.ID, want)
	}
	conf := cfg.raftConfig(n.notify)
	if err := raft.ValidateConfig(conf); err != nil {
		return nil, fmt.Errorf("ha config: raft timeouts: %w", err)
	}
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnreadableState, err)
	}
	servers := raftServers(cfg.Peers)
	if !existing {
		// Every node bootstraps with the same configuration (sorted by
		// id): hashicorp/raft makes that safe.
		if err := raft.BootstrapCluster(conf, logs, stable, snaps, trans, raft.Configuration{Servers: servers}); err != nil {
			return nil, fmt.Errorf("bootstrapping the cluster: %w", err)
		}
	}
	n.raft, err = raft.NewRaft(conf, n.fsm, logs, stable, snaps, trans)
	if err != nil {
		return nil, fmt.Errorf("starting raft: %w", err)
	}
	if existing {
		if err := n.checkConfiguration(servers); err != nil {
			_ = n.raft.Shutdown().Error()
			return nil, err
		}
	}
	n.wg.Add(2)
	go n.follow()
	go n.watch()
	if cfg.Blobs != nil {
		n.wg.Add(1)
		go n.collectLoop()
	}
	return n, nil
}

// errUnreadableState marks New's failure to read the stores' state, which
// Open words as an unreadable raft log.
var errUnreadableState = errors.New("reading raft's stored state")

// closersOf returns the distinct parts that have a Close method.
func closersOf(parts ...any) []io.Closer {
	var out []io.Closer
	for _, p := range parts {
		c, ok := p.(io.Closer)
		if ok && !slices.ContainsFunc(out, func(o io.Closer) bool { return o == c }) {
			out = append(out, c)
		}
	}
	return out
}

func closeAll(cs []io.Closer) error {
	var errs []error
	for _, c := range cs {
		errs = append(errs, c.Close())
	}
	return errors.Join(errs...)
}

// memSoloTimeout is the raft timeouts of a one-voter cluster in memory:
// it has no disk and nobody to contest an election with.
const memSoloTimeout = 10 * time.Millisecond

// NewInMemory starts the one-voter cluster of cfg (one peer, which needs
// no raft address) over raft's in-memory stores and transport, and
// returns once it leads (or ctx ends): its state lasts as long as the
// process. `cohort run`, and a coordinator given no replica, run on one,
// with DigestsOnly. Zero timeouts take 10 ms.
func NewInMemory(ctx context.Context, cfg Config) (*Node, error) {
	if len(cfg.Peers) != 1 {
		return nil, fmt.Errorf("ha config: peers: %d listed: an in-memory cluster has one voter", len(cfg.Peers))
	}
	for _, d := range []*time.Duration{&cfg.HeartbeatTimeout, &cfg.ElectionTimeout, &cfg.LeaderLeaseTimeout} {
		if *d == 0 {
			*d = memSoloTimeout
		}
	}
	store := raft.NewInmemStore()
	_, trans := raft.NewInmemTransport(raftAddress(cfg.Peers[0]))
	n, err := New(cfg, nil, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		return nil, err
	}
	for {
		leader, changed := n.Leadership()
		if leader {
			return n, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			_ = n.Close()
			return nil, fmt.Errorf("waiting for the in-memory node to lead: %w", ctx.Err())
		}
	}
}

// Open starts the node of cfg on disk: raft-boltdb in DataDir/raft.db,
// file snapshots in DataDir/snapshots and a TCP or mutual-TLS transport
// on its raft address (in memory for a one-voter cluster without one),
// and calls [New]. It refuses, with an error naming the fix, whatever
// would silently fork the cluster or lose state: a data dir of another
// node or peer list, one in use, a damaged raft log or snapshot, a raft
// configuration other than cfg.Peers. A new data dir bootstraps the
// cluster with cfg.Peers; every node does so with the same list.
func Open(cfg Config) (_ *Node, err error) {
	if cfg.RaftListener != nil {
		defer func() {
			if err != nil {
				_ = cfg.RaftListener.Close()
			}
		}()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("ha config: %w", err)
	}
	cfg = cfg.withDefaults()
	if err := raft.ValidateConfig(cfg.raftConfig(nil)); err != nil {
		return nil, fmt.Errorf("ha config: raft timeouts: %w", err)
	}
	dir := cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating data dir: %w", err)
	}
	want := identity{ClusterID: clusterID(cfg.Peers), NodeID: cfg.ID, Peers: sortedPeers(cfg.Peers)}
	fresh, err := checkIdentity(dir, want)
	if err != nil {
		return nil, err
	}
	var self Peer
	for _, p := range cfg.Peers {
		if p.ID == cfg.ID {
			self = p
		}
	}
	var trans raft.Transport
	if self.RaftAddr == "" {
		_, trans = raft.NewInmemTransport(raftAddress(self))
	} else {
		stream, err := cfg.streamLayer(self.RaftAddr)
		if err != nil {
			return nil, err
		}
		trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  stream,
			MaxPool: 3,
			Timeout: 10 * time.Second,
			Logger:  cfg.Logger,
		})
	}
	closers := closersOf(trans)
	ok := false
	defer func() {
		if !ok {
			_ = closeAll(closers)
		}
	}()
	if fresh {
		// Before raft.db exists, so that a crash in between leaves a data
		// dir that starts.
		if err := writeIdentity(dir, want); err != nil {
			return nil, err
		}
	}
	dbPath := filepath.Join(dir, "raft.db")
	store, err := raftboltdb.New(raftboltdb.Options{Path: dbPath, BoltOptions: &bbolt.Options{Timeout: boltLockTimeout}})
	if errors.Is(err, bbolt.ErrTimeout) {
		return nil, fmt.Errorf("data dir %s is in use by another process (%s is locked): stop that coordinator, or point data_dir elsewhere", dir, dbPath)
	}
	if err != nil {
		return nil, unreadableLog(dir, err)
	}
	closers = append(closers, store)
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, retainSnapshots, cfg.Logger)
	if err != nil {
		return nil, fmt.Errorf("opening snapshots in %s: %w", dir, err)
	}
	if err := verifySnapshots(dir, snaps); err != nil {
		return nil, err
	}
	ok = true // New closes the parts from here on
	n, err := New(cfg, nil, store, store, snaps, trans)
	switch {
	case errors.Is(err, errUnreadableState):
		return nil, unreadableLog(dir, err)
	case err != nil:
		return nil, err
	}
	return n, nil
}

func unreadableLog(dir string, err error) error {
	return fmt.Errorf("raft log %s is unreadable: %v; restore it from a backup, or in a cluster move this node's data_dir away and it is rebuilt from the leader", filepath.Join(dir, "raft.db"), err)
}

// raftAddress is the address raft knows a peer by: its RaftAddr, or for
// the one voter of a cluster without network, its in-memory address.
func raftAddress(p Peer) raft.ServerAddress {
	if p.RaftAddr == "" {
		return raft.ServerAddress("inmem:" + p.ID)
	}
	return raft.ServerAddress(p.RaftAddr)
}

func raftServers(peers []Peer) []raft.Server {
	var out []raft.Server
	for _, p := range sortedPeers(peers) {
		out = append(out, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raftAddress(p)})
	}
	return out
}

// checkConfiguration compares raft's stored configuration with the
// configured peers.
func (n *Node) checkConfiguration(want []raft.Server) error {
	f := n.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return fmt.Errorf("reading raft's configuration: %w", err)
	}
	got := slices.Clone(f.Configuration().Servers)
	slices.SortFunc(got, func(a, b raft.Server) int { return strings.Compare(string(a.ID), string(b.ID)) })
	same := slices.EqualFunc(got, want, func(a, b raft.Server) bool {
		return a.ID == b.ID && a.Address == b.Address && a.Suffrage == b.Suffrage
	})
	if same {
		return nil
	}
	var stored []Peer
	for _, s := range got {
		stored = append(stored, Peer{ID: string(s.ID), RaftAddr: string(s.Address)})
	}
	return fmt.Errorf("raft's stored configuration in %s lists peers %s but the config lists %s: restore the old peer list (membership changes are not supported yet), or move %s away to start this node afresh", n.cfg.DataDir, peerList(stored), peerList(n.cfg.Peers), n.cfg.DataDir)
}

// verifySnapshots opens every snapshot (raft checks its CRC) and decodes
// it into a scratch FSM, so that raft never silently skips a damaged
// newest snapshot for an older one.
func verifySnapshots(dir string, snaps *raft.FileSnapshotStore) error {
	const fix = "move that snapshot folder away to fall back to the older snapshot and the log, or restore the data dir from a backup (in a cluster, moving this node's data_dir away rebuilds it from the leader)"
	metas, err := snaps.List()
	if err != nil {
		return fmt.Errorf("listing snapshots in %s: %w", dir, err)
	}
	listed := map[string]bool{}
	for _, m := range metas {
		listed[m.ID] = true
		_, rc, err := snaps.Open(m.ID)
		if err == nil {
			err = NewFSM().Restore(rc)
		}
		if err != nil {
			return fmt.Errorf("snapshot %s is damaged: %v: %s", filepath.Join(dir, "snapshots", m.ID), err, fix)
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, "snapshots"))
	if err != nil {
		return fmt.Errorf("listing snapshots in %s: %w", dir, err)
	}
	for _, e := range entries {
		if e.IsDir() && !strings.HasSuffix(e.Name(), ".tmp") && !listed[e.Name()] {
			return fmt.Errorf("snapshot %s is damaged: its meta.json is unreadable: %s", filepath.Join(dir, "snapshots", e.Name()), fix)
		}
	}
	return nil
}

// follow turns raft's leadership notifications into Leadership's channels.
func (n *Node) follow() {
	defer n.wg.Done()
	for {
		select {
		case <-n.done:
			return
		case v := <-n.notify:
			n.setLeader(v)
			if v {
				select {
				case n.kick <- struct{}{}:
				default:
				}
			}
		}
	}
}

func (n *Node) setLeader(v bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.leader != v {
		n.leader = v
		close(n.changed)
		n.changed = make(chan struct{})
	}
}

// watch compares the cluster's id with this node's own, stopping the node
// if they differ, and has a new leader set it if the cluster has none.
func (n *Node) watch() {
	defer n.wg.Done()
	t := time.NewTicker(clusterPoll)
	defer t.Stop()
	for {
		select {
		case <-n.done:
			return
		case <-t.C:
		case <-n.kick:
		}
		id := n.fsm.ClusterID()
		if id != "" && id != n.clusterID {
			n.stop(n.mismatch(id))
			return
		}
		if id == "" && n.IsLeader() {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			if err := n.ensureCluster(ctx); err != nil && !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrClosed) && !errors.Is(err, ErrClusterMismatch) {
				n.cfg.Logger.Warn("setting the cluster id failed", "error", err)
			}
			cancel()
		}
	}
}

func (n *Node) mismatch(id string) error {
	return fmt.Errorf("this node's peer list %s (cluster id %.12s) disagrees with the cluster's (id %.12s): every coordinator.yaml must list the same peers: %w", peerList(n.cfg.Peers), n.clusterID, id, ErrClusterMismatch)
}

// stop shuts raft down for err and reports err on Err.
func (n *Node) stop(err error) {
	n.cfg.Logger.Error("stopping this node", "error", err)
	n.mu.Lock()
	if n.stopped == nil {
		n.stopped = err
	}
	n.mu.Unlock()
	n.startClosing()
	_ = n.raft.Shutdown().Error()
	n.setLeader(false)
	select {
	case n.errc <- err:
	default:
	}
}

// Handoff, on a leader of a cluster of several, hands the lead to another
// voter before a planned stop, so that the cluster does not wait out an
// election timeout; elsewhere it does nothing. It returns once the
// transfer is done, failed or timed out (raft's election timeout).
func (n *Node) Handoff() error {
	if len(n.peers) < 2 || !n.IsLeader() {
		return nil
	}
	if err := n.raft.LeadershipTransfer().Error(); err != nil {
		return fmt.Errorf("handing the lead over: %w", err)
	}
	return nil
}

// Close shuts raft down and closes the transport and the stores that have
// a Close method. It is idempotent; later proposals return [ErrClosed].
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		n.mu.Lock()
		if n.stopped == nil {
			n.stopped = ErrClosed
		}
		n.mu.Unlock()
		n.startClosing()
		err := n.shutdownRaft(n.grace)
		close(n.done)
		n.wg.Wait()
		n.setLeader(false)
		n.closeErr = errors.Join(err, closeAll(n.closers))
	})
	return n.closeErr
}

func (n *Node) startClosing() { n.closingOnce.Do(func() { close(n.closing) }) }

// shutdownGrace is how long Close waits for raft's goroutines before it
// closes the transport under them, and then again before it gives up.
const shutdownGrace = 15 * time.Second

// ErrShutdownStuck is returned by [Node.Close] when raft's goroutines did
// not stop, even after the transport under them was closed: the node is
// abandoned (its goroutines leak) rather than hang its caller.
var ErrShutdownStuck = errors.New("raft shutdown stuck")

// shutdownRaft stops raft's goroutines. Raft waits for them, and one
// blocked on its transport would hold Close for good while the peers'
// calls pile up behind it; after grace the transport is closed, which
// fails what waits on it, and after another grace Close gives up.
func (n *Node) shutdownRaft(grace time.Duration) error {
	done := make(chan error, 1)
	go func() { done <- n.raft.Shutdown().Error() }()
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
	}
	n.cfg.Logger.Warn("raft shutdown is slow; closing the transport under it", "waited", grace)
	if n.transport != nil {
		_ = n.transport.Close() // closeAll closes it again: raft's transports allow that
	}
	t.Reset(grace)
	select {
	case err := <-done:
		return err
	case <-t.C:
		return fmt.Errorf("%w: raft's goroutines did not stop %s after the transport closed; the node is abandoned", ErrShutdownStuck, grace)
	}
}

// ID returns this node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Blobs returns the node's blob store ([Config.Blobs]); nil without one.
func (n *Node) Blobs() *blobs.Store { return n.cfg.Blobs }

// FSM returns the replicated state, for reading. On a follower it may lag
// the leader; on a new leader call [Node.Barrier] first.
func (n *Node) FSM() *FSM { return n.fsm }

// Err receives, once, the error for which the node stopped itself: its
// peer list disagrees with the cluster's. The node must then be closed.
func (n *Node) Err() <-chan error { return n.errc }

// IsLeader reports whether this node is the leader now.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// Leader returns the current leader's peer; false if none is known.
func (n *Node) Leader() (Peer, bool) {
	_, id := n.raft.LeaderWithID()
	if id == "" {
		return Peer{}, false
	}
	p, ok := n.peers[id]
	return p, ok
}

// Leadership returns whether this node leads and a channel closed at the
// next change of that. Every change closes the channel handed out before
// it; a closed node is not the leader.
func (n *Node) Leadership() (leader bool, changed <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.leader, n.changed
}

// Barrier waits until the FSM has applied everything committed before
// this node became the leader. Call it on gaining leadership, before
// reading the FSM to decide.
func (n *Node) Barrier(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("raft barrier: %w", err)
	}
	return n.await(ctx, "raft barrier", n.raft.Barrier(n.timeout(ctx)))
}

// SubmitJob proposes a new job.
//
// Like every proposing method it returns a [*NotLeaderError] off the
// leader, the FSM's refusal (such as [ErrJobExists]) or the context's
// error. A NotLeaderError with OutcomeUnknown, or a context error, leaves
// it unknown whether the command committed: re-read the FSM before
// retrying.
func (n *Node) SubmitJob(ctx context.Context, id string, spec []byte) error {
	return n.propose(ctx, "submitting job "+id, Command{Type: CmdSubmitJob, JobID: id, Spec: spec})
}

// RegisterSite records a site that joined, with its capabilities (opaque
// bytes), stamped with the leader's clock.
func (n *Node) RegisterSite(ctx context.Context, name string, capabilities []byte) error {
	return n.propose(ctx, "registering site "+name, Command{Type: CmdRegisterSite, Site: &Site{Name: name, Capabilities: capabilities}})
}

// SetJobStatus proposes a job's status.
func (n *Node) SetJobStatus(ctx context.Context, id string, s JobStatus, reason string) error {
	return n.propose(ctx, "setting job "+id+"'s status", Command{Type: CmdSetJobStatus, JobID: id, Status: s, Reason: reason})
}

// SetRunIDs proposes a job's tracking run ids; set ids never change
// ([ErrRunIDConflict]).
func (n *Node) SetRunIDs(ctx context.Context, id string, ids RunIDs) error {
	return n.propose(ctx, "setting job "+id+"'s run ids", Command{Type: CmdSetRunIDs, JobID: id, RunIDs: &ids})
}

// CommitRound proposes round of a job's arm with its model's digest (put
// by [Node.PutModel]) and the job's cumulative totals. A round commits
// once, in order: anything else is a [*RoundConflictError].
func (n *Node) CommitRound(ctx context.Context, jobID, arm string, round int, digest string, totals map[string]float64) error {
	what := fmt.Sprintf("committing job %s arm %s round %d", jobID, arm, round)
	return n.propose(ctx, what, Command{Type: CmdCommitRound, JobID: jobID, Arm: arm, Round: round, Digest: digest, Totals: totals})
}

// DigestsOnly reports whether the node records models by digest only
// ([Config.DigestsOnly]): its callers keep the bytes and may record them
// with [Node.PutDigest] without encoding them.
func (n *Node) DigestsOnly() bool { return n.cfg.DigestsOnly }

// PutDigest records a model of size bytes by its digest (the hex
// SHA-256) alone, for [Node.CommitRound] to reference; the caller keeps
// the bytes. Only a node with [Config.DigestsOnly] takes it.
func (n *Node) PutDigest(ctx context.Context, digest string, size int64) error {
	if !n.cfg.DigestsOnly {
		return fmt.Errorf("recording model %.12s by digest: this node replicates models' bytes: %w; use PutModel", digest, ErrInvalid)
	}
	return n.propose(ctx, "recording model "+digest, Command{Type: CmdSealBlob, Digest: digest, Size: size, External: true})
}

// PutModel replicates the model that write writes and returns its
// digest, the hex SHA-256; write may be called once, and must write the
// whole model or fail. One PutModel runs at a time per node.
//
// With a blob store ([Config.Blobs]) the model is streamed into it,
// hashed as it is written (never held whole in memory); a quorum of
// voters, this one included, must then hold it — each follower is asked
// to fetch it from this node ([BlobTransport.HoldBlob]) — before its
// digest and size are committed in one small entry. A follower that
// missed it fetches it before it applies that entry. When too few
// followers can fetch it, PutModel fails with an error naming each
// follower and why, and nothing is committed.
//
// Without a store the model's chunks enter raft back to back ([Config.ChunkSize]
// each, so that raft batches them); a blob the FSM holds already is not
// sent again. With [Config.DigestsOnly] only the digest enters the log.
func (n *Node) PutModel(ctx context.Context, write func(io.Writer) error) (string, error) {
	if n.cfg.DigestsOnly {
		h := sha256.New()
		cw := &countingWriter{w: h}
		if err := write(cw); err != nil {
			return "", fmt.Errorf("putting model: encoding it: %w", err)
		}
		d := hex.EncodeToString(h.Sum(nil))
		return d, n.PutDigest(ctx, d, cw.n)
	}
	if n.cfg.Blobs != nil {
		return n.putStored(ctx, write)
	}
	var buf bytes.Buffer
	if err := write(&buf); err != nil {
		return "", fmt.Errorf("putting model: encoding it: %w", err)
	}
	return n.putChunks(ctx, buf.Bytes())
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// PutModelBytes is [Node.PutModel] of data.
func (n *Node) PutModelBytes(ctx context.Context, data []byte) (string, error) {
	return n.PutModel(ctx, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// putChunks replicates data through the log in chunks.
func (n *Node) putChunks(ctx context.Context, data []byte) (string, error) {
	sum := sha256.Sum256(data)
	d := hex.EncodeToString(sum[:])
	what := "putting model " + d[:12]
	if rc, err := n.fsm.OpenModel(d); err == nil {
		rc.Close()
		return d, nil
	}
	select {
	case n.putSem <- struct{}{}:
		defer func() { <-n.putSem }()
	case <-ctx.Done():
		return "", fmt.Errorf("%s: %w", what, ctx.Err())
	}
	if err := n.stoppedErr(); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if err := n.ensureCluster(ctx); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	var (
		futures []raft.ApplyFuture
		err     error
	)
	for off := 0; ; {
		end := min(off+n.cfg.ChunkSize, len(data))
		var f raft.ApplyFuture
		f, err = n.enqueue(ctx, Command{Type: CmdPutBlobChunk, Digest: d, Offset: int64(off), Size: int64(len(data)), Data: data[off:end]})
		if err != nil {
			break
		}
		futures = append(futures, f)
		if off = end; off >= len(data) {
			break
		}
	}
	if err != nil {
		err = n.mapErr(what, err)
	}
	for _, f := range futures {
		if e := n.await(ctx, what, f); e != nil && err == nil {
			err = e
		}
	}
	if err != nil {
		return "", err
	}
	if err := n.propose(ctx, what, Command{Type: CmdSealBlob, Digest: d, Size: int64(len(data))}); err != nil {
		return "", err
	}
	return d, nil
}

// propose commits c once the cluster's id is this node's.
func (n *Node) propose(ctx context.Context, what string, c Command) error {
	if err := n.stoppedErr(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := n.ensureCluster(ctx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	f, err := n.enqueue(ctx, c)
	if err != nil {
		return n.mapErr(what, err)
	}
	return n.await(ctx, what, f)
}

// ensureCluster makes sure the cluster's id is this node's before any
// other command is proposed: the first leader sets it.
func (n *Node) ensureCluster(ctx context.Context) error {
	switch id := n.fsm.ClusterID(); {
	case id == n.clusterID:
		return nil
	case id != "":
		return n.mismatch(id)
	}
	what := "setting the cluster id"
	f, err := n.enqueue(ctx, Command{Type: CmdSetCluster, ClusterID: n.clusterID})
	if err != nil {
		return n.mapErr(what, err)
	}
	return n.await(ctx, what, f)
}

// enqueue stamps, encodes and hands c to raft.
func (n *Node) enqueue(ctx context.Context, c Command) (raft.ApplyFuture, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	c.At = time.Now().UnixNano()
	b, err := Encode(c)
	if err != nil {
		return nil, err
	}
	return n.raft.Apply(b, n.timeout(ctx)), nil
}

// timeout is ApplyTimeout, or less if ctx ends sooner.
func (n *Node) timeout(ctx context.Context) time.Duration {
	t := n.cfg.ApplyTimeout
	if dl, ok := ctx.Deadline(); ok {
		t = min(t, max(time.Until(dl), time.Millisecond))
	}
	return t
}

// await waits for f or ctx; for an apply, it returns the FSM's refusal.
func (n *Node) await(ctx context.Context, what string, f raft.Future) error {
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	select {
	case err := <-done:
		if err != nil {
			return n.mapErr(what, err)
		}
	case <-ctx.Done():
		return fmt.Errorf("%s: %w (the command may still commit)", what, ctx.Err())
	}
	if af, ok := f.(raft.ApplyFuture); ok {
		if err, ok := af.Response().(error); ok {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	return nil
}

// mapErr turns raft's errors into the node's.
func (n *Node) mapErr(what string, err error) error {
	switch {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return fmt.Errorf("%s: %w", what, n.notLeader(false))
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%s: %w", what, n.notLeader(true))
	case errors.Is(err, raft.ErrRaftShutdown):
		stopped := n.stoppedErr()
		if stopped == nil {
			stopped = ErrClosed
		}
		return fmt.Errorf("%s: %w", what, stopped)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// stoppedErr is nil while the node runs, else an error matching
// ErrClosed (and why the node stopped itself, if it did).
func (n *Node) stoppedErr() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.stopped == nil:
		return nil
	case errors.Is(n.stopped, ErrClosed):
		return n.stopped
	}
	return fmt.Errorf("%w: %w", ErrClosed, n.stopped)
}

func (n *Node) notLeader(unknown bool) *NotLeaderError {
	e := &NotLeaderError{Node: n.cfg.ID, OutcomeUnknown: unknown}
	if p, ok := n.Leader(); ok && p.ID != n.cfg.ID {
		e.Leader = p
	}
	return e
}

// NodeStatus is a node's view of the cluster.
type NodeStatus struct {
	ID    string
	State string // Follower, Candidate, Leader or Shutdown
	Term, LastIndex, CommitIndex, AppliedIndex,
	LastSnapshotIndex uint64
	Leader Peer // zero if unknown
	// LastContact is how long ago this follower last heard from the
	// leader; 0 on the leader or before any contact.
	LastContact time.Duration
	Peers       []Peer // raft's configuration
}

// Status returns this node's view of the cluster.
func (n *Node) Status() NodeStatus {
	st := n.raft.Stats()
	u := func(k string) uint64 {
		v, _ := strconv.ParseUint(st[k], 10, 64)
		return v
	}
	s := NodeStatus{
		ID:                n.cfg.ID,
		State:             st["state"],
		Term:              u("term"),
		LastIndex:         u("last_log_index"),
		CommitIndex:       u("commit_index"),
		AppliedIndex:      u("applied_index"),
		LastSnapshotIndex: u("last_snapshot_index"),
	}
	s.Leader, _ = n.Leader()
	if t := n.raft.LastContact(); n.raft.State() != raft.Leader && !t.IsZero() {
		s.LastContact = time.Since(t)
	}
	if f := n.raft.GetConfiguration(); f.Error() == nil {
		for _, sv := range f.Configuration().Servers {
			p, ok := n.peers[sv.ID]
			if !ok || p.RaftAddr != string(sv.Address) {
				p = Peer{ID: string(sv.ID), RaftAddr: string(sv.Address)}
			}
			s.Peers = append(s.Peers, p)
		}
	}
	return s
}

// snapshot has raft take a snapshot now; for tests.
func (n *Node) snapshot() error { return n.raft.Snapshot().Error() }
