package ha

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"go.etcd.io/bbolt"
)

// peers names n peers a, b, c, … with in-memory raft addresses.
func peers(n int) []Peer {
	var ps []Peer
	for i := range n {
		id := string(rune('a' + i))
		ps = append(ps, Peer{ID: id, RaftAddr: "raft-" + id, GRPCAddr: fmt.Sprintf("grpc-%s:9090", id)})
	}
	return ps
}

// debugLogger shows raft's logs on stderr when HA_DEBUG is set; nil
// (discard) otherwise, since raft's goroutines may log after a test ends.
var debugLogger = func() hclog.Logger {
	if os.Getenv("HA_DEBUG") == "" {
		return nil
	}
	return hclog.New(&hclog.LoggerOptions{Output: os.Stderr, Level: hclog.Info})
}()

// testConfig is node id of ps in dir, with fast timeouts: 50 ms for one
// voter, 150 ms for a cluster (50 ms lets a leader's lease lapse under
// -race on a busy 2-core machine, and a test then sees a spurious
// election).
func testConfig(id string, ps []Peer, dir string) Config {
	timeout := 150 * time.Millisecond
	if len(ps) == 1 {
		timeout = 50 * time.Millisecond
	}
	return Config{
		ID:                 id,
		Peers:              ps,
		DataDir:            dir,
		HeartbeatTimeout:   timeout,
		ElectionTimeout:    timeout,
		LeaderLeaseTimeout: timeout,
		CommitTimeout:      5 * time.Millisecond,
		ApplyTimeout:       2 * time.Second,
		ChunkSize:          256 << 10,
		Logger:             debugLogger,
	}
}

func openNode(t testing.TB, cfg Config) *Node {
	t.Helper()
	n, err := Open(cfg)
	if err != nil {
		t.Fatalf("Open(%s) = %v", cfg.ID, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// memParts are one node's in-memory raft parts.
type memParts struct {
	store *raft.InmemStore
	snaps *raft.InmemSnapshotStore
	trans *raft.InmemTransport
}

// memCluster starts one node per peer over raft's InmemStore and
// InmemTransport, the transports connected to each other.
func memCluster(t testing.TB, ps []Peer) []*Node {
	t.Helper()
	var cfgs []Config
	for _, p := range ps {
		cfgs = append(cfgs, testConfig(p.ID, ps, ""))
	}
	return memNodes(t, cfgs)
}

// memNodes starts the node of each config (whose peer lists may differ)
// in memory, every transport connected to every other.
func memNodes(t testing.TB, cfgs []Config) []*Node {
	t.Helper()
	ns, _ := memNodesParts(t, cfgs)
	return ns
}

// memNodesParts is memNodes, returning each node's parts too.
func memNodesParts(t testing.TB, cfgs []Config) ([]*Node, []memParts) {
	t.Helper()
	parts := make([]memParts, len(cfgs))
	for i, cfg := range cfgs {
		var self Peer
		for _, p := range cfg.Peers {
			if p.ID == cfg.ID {
				self = p
			}
		}
		_, trans := raft.NewInmemTransport(raftAddress(self))
		parts[i] = memParts{store: raft.NewInmemStore(), snaps: raft.NewInmemSnapshotStore(), trans: trans}
	}
	for i := range parts {
		for j := range parts {
			if i != j {
				parts[i].trans.Connect(parts[j].trans.LocalAddr(), parts[j].trans)
			}
		}
	}
	var ns []*Node
	for i, cfg := range cfgs {
		n, err := New(cfg, nil, parts[i].store, parts[i].store, parts[i].snaps, parts[i].trans)
		if err != nil {
			t.Fatalf("New(%s) = %v", cfg.ID, err)
		}
		t.Cleanup(func() { _ = n.Close() })
		ns = append(ns, n)
	}
	return ns, parts
}

// tlsCluster starts n nodes talking mutual TLS over loopback TCP, each
// on a listener the test holds from the start (no port is given up and
// taken again), with in-memory stores; tlsFor gives each node's configs.
func tlsCluster(t *testing.T, n int, tlsFor func(id string) (server, client *tls.Config)) []*Node {
	t.Helper()
	ps, lns := loopbackPeers(t, n)
	var ns []*Node
	for i, p := range ps {
		server, client := tlsFor(p.ID)
		trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
			Stream:  newStreamLayer(tls.NewListener(lns[i], server), p.RaftAddr, client),
			MaxPool: 3,
			Timeout: 2 * time.Second,
			Logger:  hclog.NewNullLogger(),
		})
		store := raft.NewInmemStore()
		node, err := New(testConfig(p.ID, ps, ""), nil, store, store, raft.NewInmemSnapshotStore(), trans)
		if err != nil {
			t.Fatalf("New(%s) = %v", p.ID, err)
		}
		t.Cleanup(func() { _ = node.Close() })
		ns = append(ns, node)
	}
	return ns
}

// loopbackPeers names n peers a, b, … whose raft addresses are loopback
// listeners bound now and held open (no port is given up and taken
// again).
func loopbackPeers(t *testing.T, n int) ([]Peer, []net.Listener) {
	t.Helper()
	var (
		ps  []Peer
		lns []net.Listener
	)
	for i := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		id := string(rune('a' + i))
		ps = append(ps, Peer{ID: id, RaftAddr: ln.Addr().String(), GRPCAddr: "grpc-" + id + ":9090"})
		lns = append(lns, ln)
	}
	return ps, lns
}

// soloPeer is a one-voter cluster without network.
var soloPeer = []Peer{{ID: "a"}}

// netPeers names n peers on loopback addresses for the tests of what
// Open refuses before it listens: nothing binds them.
func netPeers(n int) []Peer {
	var ps []Peer
	for i := range n {
		ps = append(ps, Peer{ID: string(rune('a' + i)), RaftAddr: fmt.Sprintf("127.0.0.1:%d", 7001+i)})
	}
	return ps
}

// memSolo is a one-voter node in memory.
func memSolo(t testing.TB, cfg Config) *Node {
	t.Helper()
	_, trans := raft.NewInmemTransport(raftAddress(cfg.Peers[0]))
	store := raft.NewInmemStore()
	n, err := New(cfg, nil, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		t.Fatalf("New(%s) = %v", cfg.ID, err)
	}
	t.Cleanup(func() { _ = n.Close() })
	return n
}

// waitUntil returns once ok holds, re-checking it at every leadership
// change, raft observation and FSM change of ns; it fails t after 5 s.
func waitUntil(t testing.TB, what string, ns []*Node, ok func() bool) {
	t.Helper()
	obs := make(chan raft.Observation, 64)
	o := raft.NewObserver(obs, false, nil)
	for _, n := range ns {
		n.raft.RegisterObserver(o)
		defer n.raft.DeregisterObserver(o)
	}
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		cases := []reflect.SelectCase{
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(timer.C)},
			{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(obs)},
		}
		for _, n := range ns {
			_, lc := n.Leadership()
			cases = append(cases,
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(lc)},
				reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(n.FSM().Changed())})
		}
		if ok() { // after taking the channels: no change is missed
			return
		}
		if i, _, _ := reflect.Select(cases); i == 0 {
			t.Fatalf("%s: not within 5s", what)
		}
	}
}

// leaderOf waits up to 5 s for one of ns other than skip to lead.
func leaderOf(t testing.TB, ns []*Node, skip *Node) *Node {
	t.Helper()
	var l *Node
	waitUntil(t, "a leader is elected", ns, func() bool {
		for _, n := range ns {
			if v, _ := n.Leadership(); n != skip && v && n.IsLeader() {
				l = n
				return true
			}
		}
		return false
	})
	return l
}

func follower(ns []*Node, l *Node) *Node {
	for _, n := range ns {
		if n != l {
			return n
		}
	}
	return nil
}

func randomBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	_, _ = mrand.NewChaCha8([32]byte{byte(seed)}).Read(b)
	return b
}

func readModel(t *testing.T, f *FSM, digest string) []byte {
	t.Helper()
	rc, err := f.OpenModel(digest)
	if err != nil {
		t.Fatalf("OpenModel(%.12s) = %v", digest, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// commitNode puts "model of round r" and commits it as round r of j/a.
func commitNode(ctx context.Context, n *Node, r int) error {
	d, err := n.PutModelBytes(ctx, fmt.Appendf(nil, "model of round %d", r))
	if err != nil {
		return err
	}
	return n.CommitRound(ctx, "j", "a", r, d, map[string]float64{"energy_j": float64(r)})
}

func TestNodeFailover(t *testing.T) {
	ctx := context.Background()
	ps := peers(3)
	ns := memCluster(t, ps)
	l := leaderOf(t, ns, nil)
	if err := l.SubmitJob(ctx, "j", []byte("name: x\n")); err != nil {
		t.Fatalf("SubmitJob on the leader = %v", err)
	}
	model := randomBytes(2<<20, 1) // 8 chunks of 256 KiB
	d, err := l.PutModelBytes(ctx, model)
	if err != nil {
		t.Fatalf("PutModel on the leader = %v", err)
	}
	if want := digestOf(model); d != want {
		t.Fatalf("PutModel digest = %s, want %s", d, want)
	}
	if err := l.CommitRound(ctx, "j", "a", 1, d, map[string]float64{"energy_j": 12.5}); err != nil {
		t.Fatalf("CommitRound(1) on the leader = %v", err)
	}

	f := follower(ns, l)
	waitUntil(t, "follower learns the leader", ns, func() bool { p, ok := f.Leader(); return ok && p.ID == l.ID() })
	err = f.SubmitJob(ctx, "k", nil)
	var nle *NotLeaderError
	if !errors.As(err, &nle) || !errors.Is(err, ErrNotLeader) {
		t.Fatalf("SubmitJob on a follower = %v, want a NotLeaderError", err)
	}
	if want := ps[int(l.ID()[0]-'a')].GRPCAddr; nle.Leader.GRPCAddr != want || !strings.Contains(err.Error(), want) {
		t.Errorf("follower's leader hint = %+v (%v), want gRPC address %s", nle.Leader, err, want)
	}

	waitUntil(t, "Leadership reports the leader", ns, func() bool { v, _ := l.Leadership(); return v })
	_, changed := l.Leadership()
	if err := l.Close(); err != nil {
		t.Fatalf("Close of the leader = %v", err)
	}
	select {
	case <-changed:
	default:
		t.Error("closing the leader did not signal a leadership change")
	}
	if err := l.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}

	nl := leaderOf(t, ns, l)
	if err := nl.Barrier(ctx); err != nil {
		t.Fatalf("Barrier on the new leader = %v", err)
	}
	last, got, err := nl.FSM().LastRound("j", "a")
	if err != nil || last != 1 || got != d {
		t.Fatalf("new leader LastRound = %d, %.12s, %v, want 1, %.12s", last, got, err, d)
	}
	if !bytes.Equal(readModel(t, nl.FSM(), d), model) {
		t.Error("new leader's model differs from the one put")
	}
	j, _ := nl.FSM().Job("j")
	if diff := cmp.Diff(map[string]float64{"energy_j": 12.5}, j.Arms["a"][0].Totals); diff != "" {
		t.Errorf("round 1 totals on the new leader (-want +got):\n%s", diff)
	}
	if err := nl.CommitRound(ctx, "j", "a", 1, d, nil); !errors.Is(err, ErrRoundConflict) {
		t.Fatalf("recommitting round 1 on the new leader = %v, want ErrRoundConflict", err)
	}
	if err := commitNode(ctx, nl, 2); err != nil {
		t.Fatalf("round 2 on the new leader = %v", err)
	}
	st := nl.Status()
	if st.State != "Leader" || st.Leader.ID != nl.ID() || len(st.Peers) != 3 || st.AppliedIndex == 0 || st.CommitIndex < st.AppliedIndex {
		t.Errorf("Status of the new leader = %+v", st)
	}
	if _, err := l.PutModelBytes(ctx, []byte("late")); !errors.Is(err, ErrClosed) {
		t.Errorf("PutModel on a closed node = %v, want ErrClosed", err)
	}
}

func TestNodeIsolatedFollowerNeverCommits(t *testing.T) {
	ctx := context.Background()
	ns := memCluster(t, peers(3))
	l := leaderOf(t, ns, nil)
	if err := l.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatal(err)
	}
	f := follower(ns, l)
	waitUntil(t, "the job reaches the follower", ns, func() bool { _, err := f.FSM().Job("j"); return err == nil })
	for _, n := range ns {
		if n != f {
			n.Close()
		}
	}
	before := f.FSM().Jobs()
	deadline := time.Now().Add(time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		err := f.SubmitJob(ctx, fmt.Sprintf("k%d", i), nil)
		cancel()
		if err == nil {
			t.Fatal("a follower cut off from the others committed a job")
		}
		if !errors.Is(err, ErrNotLeader) && !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("SubmitJob on the cut-off follower = %v, want a NotLeaderError or a timeout", err)
		}
	}
	if diff := cmp.Diff(before, f.FSM().Jobs()); diff != "" {
		t.Errorf("the cut-off follower's jobs changed (-before +after):\n%s", diff)
	}
}

func TestNodeRefusals(t *testing.T) {
	tests := []struct {
		name string
		// setup prepares the data dir and returns the config to open.
		setup func(t *testing.T) Config
		want  string
	}{{
		name: "duplicate id",
		setup: func(t *testing.T) Config {
			ps := netPeers(2)
			ps[1].ID = "a"
			return testConfig("a", ps, t.TempDir())
		},
		want: "node id a is listed twice",
	}, {
		name:  "id not in peers",
		setup: func(t *testing.T) Config { return testConfig("z", netPeers(2), t.TempDir()) },
		want:  "add it to peers",
	}, {
		name: "duplicate raft address",
		setup: func(t *testing.T) Config {
			ps := netPeers(2)
			ps[1].RaftAddr = ps[0].RaftAddr
			return testConfig("a", ps, t.TempDir())
		},
		want: "give every peer its own address",
	}, {
		name: "raft address without a port",
		setup: func(t *testing.T) Config {
			return testConfig("a", []Peer{{ID: "a", RaftAddr: "10.0.0.1"}}, t.TempDir())
		},
		want: "is not host:port",
	}, {
		name: "unspecified raft address",
		setup: func(t *testing.T) Config {
			return testConfig("a", []Peer{{ID: "a", RaftAddr: "0.0.0.0:7000"}}, t.TempDir())
		},
		want: "give this node's own IP address or host name",
	}, {
		name: "one TLS config",
		setup: func(t *testing.T) Config {
			cfg := testConfig("a", netPeers(1), t.TempDir())
			cfg.ServerTLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert}
			return cfg
		},
		want: "set both for mutual TLS",
	}, {
		name: "data dir of another node",
		setup: func(t *testing.T) Config {
			ps, dir := netPeers(2), t.TempDir()
			if err := writeIdentity(dir, identity{ClusterID: clusterID(ps), NodeID: "a", Peers: sortedPeers(ps)}); err != nil {
				t.Fatal(err)
			}
			return testConfig("b", ps, dir)
		},
		want: "point data_dir at b's folder",
	}, {
		name: "data dir of another peer list",
		setup: func(t *testing.T) Config {
			dir := t.TempDir()
			soloRun(t, testConfig("a", soloPeer, dir))
			return testConfig("a", netPeers(1), dir)
		},
		want: "restore the old peer list",
	}, {
		name: "raft.db without cluster.json",
		setup: func(t *testing.T) Config {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, "raft.db"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			return testConfig("a", soloPeer, dir)
		},
		want: "from another cluster or an older Cohort",
	}, {
		name: "corrupt raft.db",
		setup: func(t *testing.T) Config {
			cfg := testConfig("a", soloPeer, t.TempDir())
			soloRun(t, cfg)
			if err := os.WriteFile(filepath.Join(cfg.DataDir, "raft.db"), randomBytes(64<<10, 2), 0o600); err != nil {
				t.Fatal(err)
			}
			return cfg
		},
		want: "restore it from a backup",
	}, {
		name: "corrupt snapshot",
		setup: func(t *testing.T) Config {
			cfg := testConfig("a", soloPeer, t.TempDir())
			soloRun(t, cfg)
			states, _ := filepath.Glob(filepath.Join(cfg.DataDir, "snapshots", "*", "state.bin"))
			if len(states) != 1 {
				t.Fatalf("snapshots = %v, want one", states)
			}
			b, err := os.ReadFile(states[0])
			if err != nil {
				t.Fatal(err)
			}
			b[len(b)/2] ^= 0xff
			if err := os.WriteFile(states[0], b, 0o600); err != nil {
				t.Fatal(err)
			}
			return cfg
		},
		want: "move that snapshot folder away",
	}, {
		name: "data dir in use",
		setup: func(t *testing.T) Config {
			cfg := testConfig("a", soloPeer, t.TempDir())
			soloRun(t, cfg)
			db, err := bbolt.Open(filepath.Join(cfg.DataDir, "raft.db"), 0o600, nil)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			return cfg
		},
		want: "in use by another process",
	}, {
		name: "port in use",
		setup: func(t *testing.T) Config {
			ln, err := net.Listen("tcp", "127.0.0.1:0") // held open: the port stays taken
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			return testConfig("a", []Peer{{ID: "a", RaftAddr: ln.Addr().String()}}, t.TempDir())
		},
		want: "another coordinator already runs as node a",
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := tt.setup(t)
			n, err := Open(cfg)
			if err == nil {
				n.Close()
				t.Fatalf("Open = nil, want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestNodeRefusesDisagreeingPeers(t *testing.T) {
	ps := peers(3) // nothing runs as c
	ns := memNodes(t, []Config{testConfig("a", ps[:2], ""), testConfig("b", ps, "")})
	a, b := ns[0], ns[1]
	var stopped, other *Node
	var err error
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	select {
	case err = <-a.Err():
		stopped, other = a, b
	case err = <-b.Err():
		stopped, other = b, a
	case <-timer.C:
		t.Fatal("neither node reported the disagreeing peer lists within 5s")
	}
	if !errors.Is(err, ErrClusterMismatch) || !strings.Contains(err.Error(), "every coordinator.yaml must list the same peers") {
		t.Errorf("node %s's Err = %v, want a cluster mismatch naming the fix", stopped.ID(), err)
	}
	if err := stopped.SubmitJob(context.Background(), "j", nil); !errors.Is(err, ErrClosed) {
		t.Errorf("SubmitJob on the stopped node = %v, want ErrClosed", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if err := other.SubmitJob(ctx, "j", nil); err == nil {
		t.Errorf("node %s committed a job without a quorum", other.ID())
	}
	for _, n := range []*Node{a, b} {
		if jobs := n.FSM().Jobs(); len(jobs) != 0 {
			t.Errorf("node %s holds jobs %v, want none", n.ID(), jobs)
		}
	}
}

// testCA is a throwaway certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// configs issues a certificate for node id on 127.0.0.1 and returns the
// node's TLS configs, trusting ca only.
func (ca *testCA) configs(t *testing.T, id string) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: id},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	server = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: ca.pool, ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13}
	client = &tls.Config{Certificates: []tls.Certificate{cert}, RootCAs: ca.pool, MinVersion: tls.VersionTLS13}
	return server, client
}

func TestNodeMutualTLS(t *testing.T) {
	ctx := context.Background()
	good, rogue := newTestCA(t, "cohort"), newTestCA(t, "rogue")
	ns := tlsCluster(t, 3, func(id string) (*tls.Config, *tls.Config) {
		if id == "c" {
			return rogue.configs(t, id)
		}
		return good.configs(t, id)
	})
	c := ns[2]
	l := leaderOf(t, ns, c)
	if err := l.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatalf("SubmitJob over mutual TLS = %v", err)
	}
	if err := commitNode(ctx, l, 1); err != nil {
		t.Fatalf("round 1 over mutual TLS = %v", err)
	}
	good2 := ns[0]
	if good2 == l {
		good2 = ns[1]
	}
	waitUntil(t, "round 1 reaches the other node with a good certificate", ns, func() bool {
		last, _, _ := good2.FSM().LastRound("j", "a")
		return last == 1
	})
	if c.IsLeader() {
		t.Error("the node with a foreign certificate leads")
	}
	ctx2, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if err := c.SubmitJob(ctx2, "k", nil); err == nil {
		t.Error("the node with a foreign certificate committed a job")
	}
	if jobs := c.FSM().Jobs(); len(jobs) != 0 {
		t.Errorf("the node with a foreign certificate holds jobs %v, want none", jobs)
	}
}

func TestFSMSetCluster(t *testing.T) {
	f := NewFSM()
	apply := func(i uint64, id string) error {
		if r := f.Apply(entry(t, i, Command{Type: CmdSetCluster, ClusterID: id})); r != nil {
			return r.(error)
		}
		return nil
	}
	if err := apply(1, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("setting an empty cluster id = %v, want ErrInvalid", err)
	}
	if err := apply(2, "x"); err != nil {
		t.Fatalf("setting cluster id x = %v", err)
	}
	if err := apply(3, "x"); err != nil {
		t.Errorf("setting cluster id x again = %v, want nil", err)
	}
	if err := apply(4, "y"); !errors.Is(err, ErrClusterMismatch) {
		t.Errorf("setting cluster id y on x = %v, want ErrClusterMismatch", err)
	}
	g := NewFSM()
	if err := g.Restore(io.NopCloser(bytes.NewReader(snapshotBytes(t, f)))); err != nil {
		t.Fatal(err)
	}
	if got := g.ClusterID(); got != "x" {
		t.Errorf("ClusterID after restore = %q, want x", got)
	}
}

func TestClusterIDIgnoresOrderAndGRPC(t *testing.T) {
	a := []Peer{{ID: "a", RaftAddr: "h1:1", GRPCAddr: "g1"}, {ID: "b", RaftAddr: "h2:1"}}
	b := []Peer{{ID: "b", RaftAddr: "h2:1", GRPCAddr: "g2"}, {ID: "a", RaftAddr: "h1:1"}}
	if clusterID(a) != clusterID(b) {
		t.Error("clusterID depends on the order of peers or their gRPC addresses")
	}
	if c := []Peer{a[0], {ID: "b", RaftAddr: "h3:1"}}; clusterID(a) == clusterID(c) {
		t.Error("clusterID ignores a raft address")
	}
}

func TestNotLeaderError(t *testing.T) {
	tests := []struct {
		err  *NotLeaderError
		want string
	}{
		{&NotLeaderError{Node: "a"}, "coordinator a is not the leader; no leader is elected yet; retry in a few seconds"},
		{&NotLeaderError{Node: "a", Leader: Peer{ID: "b", GRPCAddr: "h:9090"}}, "coordinator a is not the leader; the leader is b at h:9090"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
		if !errors.Is(fmt.Errorf("x: %w", tt.err), ErrNotLeader) {
			t.Errorf("%v does not match ErrNotLeader", tt.err)
		}
	}
}

// BenchmarkCommitRound10M puts and commits a 10M-float32 model per
// iteration on a one-voter node on disk, against a baseline that only
// hashes and copies the bytes, as a coordinator without HA does.
func BenchmarkCommitRound10M(b *testing.B) {
	model := randomBytes(40_000_000, 3)
	b.Run("baseline", func(b *testing.B) {
		b.SetBytes(int64(len(model)))
		for i := 0; i < b.N; i++ {
			binary.BigEndian.PutUint64(model, uint64(i))
			sum := sha256.Sum256(model)
			kept := bytes.Clone(model)
			_, _ = sum, kept
		}
	})
	b.Run("raft", func(b *testing.B) {
		ctx := context.Background()
		cfg := testConfig("a", soloPeer, b.TempDir())
		cfg.ChunkSize, cfg.ApplyTimeout = 0, 0
		n := openNode(b, cfg)
		leaderOf(b, []*Node{n}, nil)
		if err := n.SubmitJob(ctx, "j", nil); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(model)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			binary.BigEndian.PutUint64(model, uint64(i))
			d, err := n.PutModelBytes(ctx, model)
			if err != nil {
				b.Fatal(err)
			}
			if err := n.CommitRound(ctx, "j", "a", i+1, d, nil); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		n.Close()
	})
}

// TestNodeHandoff: a leader that hands over before a planned stop leaves
// another voter leading, with what it committed.
func TestNodeHandoff(t *testing.T) {
	ctx := context.Background()
	ns := memCluster(t, peers(3))
	l := leaderOf(t, ns, nil)
	if err := l.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatal(err)
	}
	if err := l.Handoff(); err != nil {
		t.Fatalf("Handoff = %v", err)
	}
	next := leaderOf(t, ns, l)
	if next == l || l.IsLeader() {
		t.Fatalf("after Handoff %s still leads", l.ID())
	}
	if err := next.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := next.FSM().Job("j"); err != nil {
		t.Errorf("the new leader %s lacks the job: %v", next.ID(), err)
	}
	if err := next.SubmitJob(ctx, "k", nil); err != nil {
		t.Errorf("SubmitJob on the new leader = %v", err)
	}
	solo := memSolo(t, testConfig("a", soloPeer, ""))
	leaderOf(t, []*Node{solo}, nil)
	if err := solo.Handoff(); err != nil || !solo.IsLeader() {
		t.Errorf("Handoff on a one-voter cluster = %v, leader %v; want a no-op", err, solo.IsLeader())
	}
}
