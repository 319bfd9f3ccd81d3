package federation

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/server/blobs"
	"github.com/cohortfl/cohort/server/ha"
	"github.com/cohortfl/cohort/server/prepare"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/train"
)

// stopTimeout bounds every stop of a coordinator or node in these tests:
// one that blocks fails its test with every goroutine's stack instead of
// hanging the package until go test's -timeout.
const stopTimeout = time.Minute

// stopWithin runs stop and fails the test, with the stack of every
// goroutine, if it has not returned within stopTimeout. The stuck
// goroutine is left behind: the test ends, the package goes on.
func stopWithin(t testing.TB, what string, stop func()) {
	t.Helper()
	done := make(chan struct{})
	go func() { defer close(done); stop() }()
	timer := time.NewTimer(stopTimeout)
	defer timer.Stop()
	select {
	case <-done:
	case <-timer.C:
		t.Fatalf("%s did not return within %v: a shutdown is stuck; every goroutine:\n%s", what, stopTimeout, allStacks())
	}
}

// allStacks returns the stack of every goroutine, as a crash prints them.
func allStacks() []byte {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			return buf[:n]
		}
		buf = make([]byte, 2*len(buf))
	}
}

// waitFor waits until ok holds, checking it again each time one of the
// channels changes returns is closed; changes is called before each
// check, so that no change between a check and the wait is missed. It
// reports false if ok still fails after within.
func waitFor(within time.Duration, changes func() []<-chan struct{}, ok func() bool) bool {
	timer := time.NewTimer(within)
	defer timer.Stop()
	for {
		chans := changes()
		if ok() {
			return true
		}
		cases := []reflect.SelectCase{{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)}}
		for _, c := range chans {
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(c)})
		}
		if i, _, _ := reflect.Select(cases); i == 0 {
			return false
		}
	}
}

// switchboard connects the tests' clients — site agents and admin calls
// — to in-process coordinators by name: a coordinator serves on a
// listener the switchboard hands out, and clients dial
// "passthrough:///NAME" through [switchboard.dialOptions]. A coordinator
// restarted under the same name is found at its new listener; one that
// is down refuses the dial. No port is picked, closed and reused.
type switchboard struct {
	mu    sync.Mutex
	dials map[string]func(context.Context) (net.Conn, error)
	lis   map[string]net.Listener
}

func newSwitchboard() *switchboard {
	return &switchboard{dials: map[string]func(context.Context) (net.Conn, error){}, lis: map[string]net.Listener{}}
}

// target is the address clients dial to reach name.
func target(name string) string { return "passthrough:///" + name }

// listen returns an in-memory listener for the coordinator name, and the
// target clients dial; it replaces name's earlier listener.
func (s *switchboard) listen(name string) (net.Listener, string) {
	lis := bufconn.Listen(1 << 20)
	s.bind(name, lis, lis.DialContext)
	return lis, target(name)
}

// listenTCP is listen on loopback TCP, on a port the kernel picks and the
// returned listener holds until the gRPC server closes it.
func (s *switchboard) listenTCP(t testing.TB, name string) (net.Listener, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	s.bind(name, lis, func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", addr)
	})
	return lis, target(name)
}

func (s *switchboard) bind(name string, lis net.Listener, dial func(context.Context) (net.Conn, error)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dials[name], s.lis[name] = dial, lis
}

// down unbinds name if lis is still its listener: the coordinator behind
// it stopped.
func (s *switchboard) down(name string, lis net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.lis[name] == lis {
		delete(s.dials, name)
		delete(s.lis, name)
	}
}

// dial is the clients' context dialer: addr is the NAME of a target.
func (s *switchboard) dial(ctx context.Context, addr string) (net.Conn, error) {
	s.mu.Lock()
	d := s.dials[addr]
	s.mu.Unlock()
	if d == nil {
		return nil, fmt.Errorf("dialling coordinator %s: it is down", addr)
	}
	return d(ctx)
}

// dialOptions are the clients' options for reaching the switchboard's
// coordinators.
func (s *switchboard) dialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithContextDialer(s.dial)}
}

// coordDeps are what every test coordinator is built from.
type coordDeps struct {
	ds    *Datasets
	store *tracking.SQLiteStore
	log   *slog.Logger
	// deployedSpill keeps the coordinator's default SpillAbove, as
	// deployed, instead of spilling every update (a benchmark's figures).
	deployedSpill bool
}

// serveCoordinator serves a coordinator over rep (nil: its own in-memory
// one) on lis, and returns the function that stops it as a crash would:
// connections dropped at once, Run cancelled and waited for, then rep
// closed (if closeRep) and the coordinator closed. The stop is bounded by
// stopWithin and runs at the test's end if not before.
func serveCoordinator(t testing.TB, name string, lis net.Listener, rep *ha.Node, d coordDeps, closeRep bool, beforeStop func()) (stop func()) {
	t.Helper()
	deps := server.Deps{Tracker: d.store,
		Models: &prepare.Models{Trainers: &train.Factory{}, Test: d.ds.Test, Shape: d.ds.Pooled.Shape, Classes: d.ds.Pooled.Classes}}
	if rep != nil {
		deps.Replica = rep
	}
	// SpillAbove -1: however small the model, the cluster keeps it in the
	// blob stores between rounds and reads it in place, as a large one.
	cfg := server.Config{Logger: d.log.With("node", name), SiteWait: 30 * time.Second, SpillAbove: -1}
	if d.deployedSpill {
		cfg.SpillAbove = 0
	}
	coord, err := server.New(cfg, deps)
	if err != nil {
		if rep != nil && closeRep {
			_ = rep.Close()
		}
		t.Fatal(err)
	}
	gs := grpc.NewServer(server.GRPCOptions()...)
	coord.Register(gs)
	if rep != nil && rep.Blobs() != nil {
		pb.RegisterBlobServiceServer(gs, server.NewBlobServer(rep.Blobs(), rep, d.log.With("node", name)))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = gs.Serve(lis) }()
	go func() { defer wg.Done(); _ = coord.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			stopWithin(t, "stopping coordinator "+name, func() {
				if beforeStop != nil {
					beforeStop()
				}
				gs.Stop() // connections drop at once, as in a crash
				cancel()
				wg.Wait()
				if rep != nil && closeRep {
					if err := rep.Close(); err != nil {
						t.Errorf("closing node %s: %v", name, err)
					}
				}
				if err := coord.Close(); err != nil {
					t.Errorf("closing coordinator %s: %v", name, err)
				}
			})
		})
	}
	t.Cleanup(stop)
	return stop
}

// haNode is one coordinator of an HA test: its Raft node and its gRPC
// server, stopped together as a crash would stop them.
type haNode struct {
	id   string
	node *ha.Node
	grpc string // the target clients dial
	stop func()
}

// memParts are a node's raft stores: like a data dir, they outlive the
// node, and a node started again on them rejoins with its log.
type memParts struct {
	store *raft.InmemStore
	snaps *raft.InmemSnapshotStore
	blobs *blobs.Store // the node's models, out of the log
}

// haCluster is a cluster of coordinators in memory: raft's in-memory
// stores, snapshots and transports, connected all-to-all, and each
// coordinator's gRPC on the switchboard. A stopped node is cut off from
// the others first, as a crash cuts it off, then shut down.
type haCluster struct {
	t     testing.TB
	cfg   ha.Config // timeouts
	peers []ha.Peer
	sb    *switchboard

	mu    sync.Mutex
	trans map[string]*raft.InmemTransport // the nodes up
	parts map[string]memParts
}

// testRaft is the raft timeouts of the in-memory clusters: shorter than
// production's 2 s, for nothing crosses a network, but long enough that a
// leader keeps its lead through a job on a loaded CI machine under -race.
// The in-memory transport has no heartbeat fast path: a follower answers
// heartbeats from raft's main loop, so 150 ms (enough over TCP) made the
// lead change every few seconds with the machine's load at 10 per core.
var testRaft = ha.Config{
	HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: 500 * time.Millisecond,
	LeaderLeaseTimeout: 500 * time.Millisecond, CommitTimeout: 5 * time.Millisecond,
}

// newHACluster returns a cluster of n coordinators named coord-1…coord-n
// with cfg's timeouts; none is started yet.
func newHACluster(t testing.TB, n int, cfg ha.Config) *haCluster {
	c := &haCluster{t: t, cfg: cfg, sb: newSwitchboard(), trans: map[string]*raft.InmemTransport{}, parts: map[string]memParts{}}
	for i := range n {
		id := fmt.Sprintf("coord-%d", i+1)
		c.peers = append(c.peers, ha.Peer{ID: id, RaftAddr: "raft-" + id, GRPCAddr: target(id)})
	}
	return c
}

// targets returns every coordinator's target, as the sites list them.
func (c *haCluster) targets() []string {
	var out []string
	for _, p := range c.peers {
		out = append(out, p.GRPCAddr)
	}
	return out
}

// start starts node i — again on its stores if it ran before — and its
// coordinator, and connects it to the nodes up.
func (c *haCluster) start(i int, d coordDeps) *haNode {
	t := c.t
	t.Helper()
	p := c.peers[i]
	c.mu.Lock()
	parts, ok := c.parts[p.ID]
	if !ok {
		bs, err := blobs.Open(t.TempDir(), blobs.Options{MinFree: -1})
		if err != nil {
			c.mu.Unlock()
			t.Fatal(err)
		}
		parts = memParts{store: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore(), blobs: bs}
		c.parts[p.ID] = parts
	}
	c.mu.Unlock()
	addr := raft.ServerAddress(p.RaftAddr)
	_, trans := raft.NewInmemTransport(addr)
	cfg := c.cfg
	cfg.ID, cfg.Peers = p.ID, c.peers
	// Models go through the blob stores, fetched over the switchboard's
	// gRPC (BlobService), not through the log.
	blobClient := server.NewBlobClient(c.sb.dialOptions()...)
	t.Cleanup(func() { _ = blobClient.Close() })
	cfg.Blobs, cfg.BlobTransport = parts.blobs, blobClient
	node, err := ha.New(cfg, nil, parts.store, parts.store, parts.snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	c.connect(p.ID, addr, trans)
	lis, tgt := c.sb.listen(p.ID)
	n := &haNode{id: p.ID, node: node, grpc: tgt}
	n.stop = serveCoordinator(t, p.ID, lis, node, d, true, func() {
		c.disconnect(p.ID, addr, trans)
		c.sb.down(p.ID, lis)
	})
	return n
}

func (c *haCluster) connect(id string, addr raft.ServerAddress, trans *raft.InmemTransport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, ot := range c.trans {
		trans.Connect(ot.LocalAddr(), ot)
		ot.Connect(addr, trans)
	}
	c.trans[id] = trans
}

// disconnect cuts node id off: nothing reaches it, it reaches nothing.
func (c *haCluster) disconnect(id string, addr raft.ServerAddress, trans *raft.InmemTransport) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.trans[id] != trans {
		return
	}
	delete(c.trans, id)
	trans.DisconnectAll()
	for _, ot := range c.trans {
		ot.Disconnect(addr)
	}
}
