package ha

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/cohortfl/cohort/server/blobs"
)

// memBlobNet is a BlobTransport and BlobPusher in memory between the
// nodes of a test cluster: a fetch copies from the peer's store, a push
// hands the leader's stream to the follower's ReceiveBlob. Fault
// injection: fail makes every fetch by a node (its HoldBlob and its own
// fetches) and every push to it fail; corrupt makes a node serve altered
// bytes; pushFault alters what a push to a node delivers; pushGate holds
// pushes to a node until it is closed, holdGate the leader's HoldBlob
// calls on a node, replyGate the answer of a push a node received; held receives, for each HoldBlob call on a node that
// has an entry, the nodes that held the blob then.
type memBlobNet struct {
	mu        sync.Mutex
	nodes     map[string]*Node
	stores    map[string]*blobs.Store
	fail      map[string]error
	corrupt   map[string]bool
	pushFault map[string]pushFault
	pushGate  map[string]chan struct{}
	holdGate  map[string]chan struct{}
	replyGate map[string]chan struct{}
	held      map[string]chan []string
	fetches   map[string]int // FetchBlob calls by the fetching node
	pushes    map[string]int // pushes received by a node, committed
}

// pushFault alters a push: after failAfter bytes (if err is set) it fails
// with err; flip alters its first byte.
type pushFault struct {
	failAfter int64
	err       error
	flip      bool
}

func newMemBlobNet() *memBlobNet {
	return &memBlobNet{nodes: map[string]*Node{}, stores: map[string]*blobs.Store{}, fail: map[string]error{}, corrupt: map[string]bool{},
		pushFault: map[string]pushFault{}, pushGate: map[string]chan struct{}{}, holdGate: map[string]chan struct{}{}, replyGate: map[string]chan struct{}{},
		held: map[string]chan []string{}, fetches: map[string]int{}, pushes: map[string]int{}}
}

// memBlobPeer is node self's view of a memBlobNet.
type memBlobPeer struct {
	net  *memBlobNet
	self string
}

var _ BlobTransport = memBlobPeer{}

func (m *memBlobNet) setFail(id string, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.fail[id] = err
}

func (p memBlobPeer) FetchBlob(ctx context.Context, from Peer, d blobs.Digest, w io.Writer) error {
	p.net.mu.Lock()
	failErr, corrupt, s := p.net.fail[p.self], p.net.corrupt[from.ID], p.net.stores[from.ID]
	p.net.fetches[p.self]++
	p.net.mu.Unlock()
	if failErr != nil {
		return failErr
	}
	f, err := s.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	if corrupt {
		_, err = io.Copy(w, io.MultiReader(f, strings.NewReader("x")))
		return err
	}
	_, err = io.Copy(w, f)
	return err
}

var _ BlobPusher = memBlobPeer{}

func (p memBlobPeer) PushBlob(ctx context.Context, to, from Peer, b BlobStream) error {
	p.net.mu.Lock()
	failErr, fault, gate, n := p.net.fail[to.ID], p.net.pushFault[to.ID], p.net.pushGate[to.ID], p.net.nodes[to.ID]
	p.net.mu.Unlock()
	if failErr != nil {
		return failErr
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if fault.err != nil || fault.flip {
		b = &faultyStream{BlobStream: b, fault: fault}
	}
	if _, err := n.ReceiveBlob(ctx, from.ID, b); err != nil {
		return err
	}
	p.net.mu.Lock()
	p.net.pushes[to.ID]++
	reply := p.net.replyGate[to.ID]
	p.net.mu.Unlock()
	if reply != nil {
		select {
		case <-reply:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// faultyStream is a BlobStream with a pushFault.
type faultyStream struct {
	BlobStream
	fault pushFault
	n     int64
}

func (s *faultyStream) Read(p []byte) (int, error) {
	if s.fault.err != nil && s.n >= s.fault.failAfter {
		return 0, s.fault.err
	}
	if s.fault.err != nil {
		p = p[:min(int64(len(p)), s.fault.failAfter-s.n)]
	}
	k, err := s.BlobStream.Read(p)
	if s.fault.flip && s.n == 0 && k > 0 {
		p[0] ^= 1
	}
	s.n += int64(k)
	return k, err
}

func (p memBlobPeer) HoldBlob(ctx context.Context, on, from Peer, d blobs.Digest, size int64) error {
	p.net.mu.Lock()
	failErr, gate, n := p.net.fail[on.ID], p.net.holdGate[on.ID], p.net.nodes[on.ID]
	if held := p.net.held[on.ID]; held != nil {
		var holders []string
		for _, id := range slices.Sorted(maps.Keys(p.net.stores)) {
			if p.net.stores[id].Has(d) {
				holders = append(holders, id)
			}
		}
		held <- holders
	}
	p.net.mu.Unlock()
	if failErr != nil {
		return failErr
	}
	if gate != nil {
		select {
		case <-gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return n.HoldBlob(ctx, from.ID, d, size)
}

// testStore opens a blob store in a temporary folder, without the
// free-space reserve.
func testStore(t testing.TB, opts blobs.Options) *blobs.Store {
	t.Helper()
	if opts.MinFree == 0 {
		opts.MinFree = -1
	}
	s, err := blobs.Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// blobCluster starts n nodes in memory, each with its own blob store,
// connected by a memBlobNet.
func blobCluster(t testing.TB, n int, tweak ...func(*Config)) ([]*Node, []memParts, *memBlobNet) {
	t.Helper()
	net := newMemBlobNet()
	ps := peers(n)
	var cfgs []Config
	for _, p := range ps {
		cfg := testConfig(p.ID, ps, "")
		// Models of MiBs hashed three times on a loaded machine: a lead
		// that holds through them.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = 500*time.Millisecond, 500*time.Millisecond, 500*time.Millisecond
		for _, f := range tweak {
			f(&cfg)
		}
		cfg.Blobs = testStore(t, blobs.Options{})
		cfg.BlobTransport = memBlobPeer{net: net, self: p.ID}
		net.stores[p.ID] = cfg.Blobs
		cfgs = append(cfgs, cfg)
	}
	ns, parts := memNodesParts(t, cfgs)
	net.mu.Lock()
	for _, nd := range ns {
		net.nodes[nd.ID()] = nd
	}
	net.mu.Unlock()
	return ns, parts, net
}

// logBytes is the size of every entry in a node's log.
func logBytes(t testing.TB, s *raft.InmemStore) int {
	t.Helper()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	total := 0
	for i := first; i <= last && i > 0; i++ {
		var l raft.Log
		if err := s.GetLog(i, &l); err == nil {
			total += len(l.Data)
		}
	}
	return total
}

func putStream(ctx context.Context, n *Node, data []byte) (string, error) {
	return n.PutModel(ctx, func(w io.Writer) error {
		// In pieces, as an encoder writes.
		for off := 0; off < len(data); off += 1 << 16 {
			if _, err := w.Write(data[off:min(off+1<<16, len(data))]); err != nil {
				return err
			}
		}
		return nil
	})
}

// TestStoredModelReachesEveryNode: a 32 MiB model committed on the leader
// is read from its blob store on every node, and the log carries its
// digest only.
func TestStoredModelReachesEveryNode(t *testing.T) {
	ctx := context.Background()
	ns, parts, net := blobCluster(t, 3)
	l := leaderOf(t, ns, nil)
	if err := l.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatal(err)
	}
	before := logBytes(t, parts[0].store)
	model := randomBytes(32<<20, 7)
	ranked := l.rankedFollowers()
	d, err := putStream(ctx, l, model)
	if err != nil {
		t.Fatalf("PutModel = %v", err)
	}
	if want := string(blobs.Sum(model)); d != want {
		t.Fatalf("PutModel digest = %s, want %s", d, want)
	}
	if err := l.CommitRound(ctx, "j", "a", 1, d, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every node applies round 1", ns, func() bool {
		for _, n := range ns {
			if r, _, _ := n.FSM().LastRound("j", "a"); r != 1 {
				return false
			}
		}
		return true
	})
	for _, n := range ns {
		rc, err := n.FSM().OpenModel(d)
		if err != nil {
			t.Fatalf("%s: OpenModel = %v", n.ID(), err)
		}
		if _, ok := rc.(*os.File); !ok {
			t.Errorf("%s: OpenModel returned a %T, want an *os.File of the blob store", n.ID(), rc)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, model) {
			t.Errorf("%s: model read back: %d bytes, err %v; want the %d bytes put", n.ID(), len(got), err, len(model))
		}
	}
	// The follower a quorum needs received it once, pushed while the
	// leader wrote it, and fetched it never: not even applying its seal
	// while the push was still committing. The spare fetched it once.
	net.mu.Lock()
	for i, p := range ranked {
		wantPushes, wantFetches := 1, 0
		if i > 0 {
			wantPushes, wantFetches = 0, 1
		}
		if got := net.pushes[p.ID]; got != wantPushes {
			t.Errorf("%s received %d pushes of the model, want %d", p.ID, got, wantPushes)
		}
		if got := net.fetches[p.ID]; got != wantFetches {
			t.Errorf("%s fetched the model %d times, want %d", p.ID, got, wantFetches)
		}
	}
	net.mu.Unlock()
	for i, p := range parts {
		if grew := logBytes(t, p.store) - before; grew > 1<<20 {
			t.Errorf("node %d's log grew by %d bytes for a %d-byte model, want < 1 MiB", i, grew, len(model))
		}
	}
}

// TestStoredModelQuorum: the commit waits for a quorum to hold the
// model; followers that cannot fetch it fail it when no quorum is left.
func TestStoredModelQuorum(t *testing.T) {
	cause := errors.New("connection refused")
	tests := []struct {
		name    string
		failing int // followers whose fetches fail
		wantErr bool
	}{
		{"every follower fetches", 0, false},
		{"one follower cannot: 2 of 3 hold it", 1, false},
		{"no follower can", 2, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			ns, _, net := blobCluster(t, 3)
			l := leaderOf(t, ns, nil)
			if err := l.SubmitJob(ctx, "j", nil); err != nil {
				t.Fatal(err)
			}
			var bad []*Node
			for _, n := range ns {
				if n != l && len(bad) < tt.failing {
					bad = append(bad, n)
					net.setFail(n.ID(), cause)
				}
			}
			model := randomBytes(1<<20, 9)
			d, err := putStream(ctx, l, model)
			if tt.wantErr {
				if !errors.Is(err, ErrBlobQuorum) {
					t.Fatalf("PutModel = %v, want ErrBlobQuorum", err)
				}
				for _, n := range bad {
					if !strings.Contains(err.Error(), n.ID()+": "+cause.Error()) {
						t.Errorf("PutModel's error %q does not name follower %s and its cause", err, n.ID())
					}
				}
				if l.FSM().holdsStored(string(blobs.Sum(model))) {
					t.Error("the model was recorded although no quorum held it")
				}
				return
			}
			if err != nil {
				t.Fatalf("PutModel = %v", err)
			}
			if err := l.CommitRound(ctx, "j", "a", 1, d, nil); err != nil {
				t.Fatal(err)
			}
			waitUntil(t, "every node applies round 1", ns, func() bool {
				for _, n := range ns {
					if r, _, _ := n.FSM().LastRound("j", "a"); r != 1 {
						return false
					}
				}
				return true
			})
			// A follower that could not fetch it gets it when it reads it,
			// once the fault is gone.
			for _, n := range bad {
				net.setFail(n.ID(), nil)
			}
			for _, n := range ns {
				if got := readModel(t, n.FSM(), d); !bytes.Equal(got, model) {
					t.Errorf("%s: read back %d bytes, want the %d put", n.ID(), len(got), len(model))
				}
			}
		})
	}
}

// TestHoldBlobRefusesDigestMismatch: bytes that do not hash to the digest
// are refused and leave the store untouched.
func TestHoldBlobRefusesDigestMismatch(t *testing.T) {
	ctx := context.Background()
	ns, _, net := blobCluster(t, 3)
	l := leaderOf(t, ns, nil)
	f := follower(ns, l)
	model := []byte("the global model")
	d, err := putBytes2(l.cfg.Blobs, model)
	if err != nil {
		t.Fatal(err)
	}
	net.mu.Lock()
	net.corrupt[l.ID()] = true
	net.mu.Unlock()
	err = f.HoldBlob(ctx, l.ID(), d, int64(len(model)))
	if !errors.Is(err, blobs.ErrDigestMismatch) {
		t.Fatalf("HoldBlob of altered bytes = %v, want ErrDigestMismatch", err)
	}
	if f.cfg.Blobs.Has(d) || f.cfg.Blobs.Size() != 0 {
		t.Errorf("the follower's store holds %d bytes after a refused blob, want none", f.cfg.Blobs.Size())
	}
	if err := f.HoldBlob(ctx, "nobody", d, 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("HoldBlob from an unknown peer = %v, want ErrInvalid", err)
	}
}

func putBytes2(s *blobs.Store, b []byte) (blobs.Digest, error) {
	d := blobs.Sum(b)
	return d, putBytes(s, d, b)
}

// TestPutModelNoSpace: a full disk fails the put with ErrNoSpace and
// commits nothing.
func TestPutModelNoSpace(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig("a", soloPeer, "")
	cfg.Blobs = testStore(t, blobs.Options{MinFree: 1 << 30, Statfs: func(string) (blobs.Space, error) {
		return blobs.Space{Free: 1 << 20, Total: 1 << 40}, nil
	}})
	n := memSolo(t, cfg)
	leaderOf(t, []*Node{n}, nil)
	_, err := n.PutModelBytes(ctx, []byte("model"))
	if !errors.Is(err, blobs.ErrNoSpace) {
		t.Fatalf("PutModel on a full disk = %v, want ErrNoSpace", err)
	}
}

// storedFSM is an FSM over store whose fetches copy from src.
func storedFSM(store *blobs.Store, src func() *blobs.Store) *FSM {
	f := NewFSM()
	f.store = store
	f.fetch = func(d blobs.Digest, _ int64, _ string, _ bool) error {
		s := src()
		if s == nil {
			return errors.New("peer down")
		}
		rc, err := s.Open(d)
		if err != nil {
			return err
		}
		defer rc.Close()
		w, err := store.Create(context.Background())
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, rc); err != nil {
			_ = w.Abort()
			return err
		}
		_, err = w.Commit(d)
		return err
	}
	return f
}

func mustApply(t *testing.T, f *FSM, cs ...Command) {
	t.Helper()
	for i, c := range cs {
		b, err := Encode(c)
		if err != nil {
			t.Fatal(err)
		}
		if err, _ := f.Apply(&raft.Log{Index: uint64(i + 1), Data: b}).(error); err != nil {
			t.Fatalf("Apply(%v) = %v", c.Type, err)
		}
	}
}

// TestStoredSnapshotRestore: a snapshot carries digests, not bytes; a
// node restoring it fetches the blobs it lacks (cold: a replica), and one
// that cannot fetches them when they are read (not cold: read next).
func TestStoredSnapshotRestore(t *testing.T) {
	leaderStore := testStore(t, blobs.Options{})
	model := randomBytes(4<<20, 3)
	d, err := putBytes2(leaderStore, model)
	if err != nil {
		t.Fatal(err)
	}
	src := storedFSM(leaderStore, func() *blobs.Store { return nil })
	mustApply(t, src,
		Command{Type: CmdSubmitJob, JobID: "j", At: 1},
		Command{Type: CmdSealBlob, Digest: string(d), Size: int64(len(model)), Stored: true, From: "a", At: 2},
		Command{Type: CmdCommitRound, JobID: "j", Arm: "a", Round: 1, Digest: string(d), At: 3})
	snap := snapshotBytes(t, src)
	if len(snap) > 64<<10 {
		t.Errorf("snapshot of a %d-byte stored model is %d bytes, want its digest only", len(model), len(snap))
	}
	var up *blobs.Store
	tests := []struct {
		name      string
		peer      func() *blobs.Store
		wantColds []bool // the cold flag of each fetch
	}{
		{"the peer serves it at once", func() *blobs.Store { return leaderStore }, []bool{true}},
		{"the peer is down at restore, back at read", func() *blobs.Store { return up }, []bool{true, false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up = nil
			store := testStore(t, blobs.Options{})
			f := storedFSM(store, tt.peer)
			var colds []bool
			fetch := f.fetch
			f.fetch = func(d blobs.Digest, size int64, from string, cold bool) error {
				colds = append(colds, cold)
				return fetch(d, size, from, cold)
			}
			if err := f.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
				t.Fatalf("Restore = %v", err)
			}
			up = leaderStore
			if got := readModel(t, f, string(d)); !bytes.Equal(got, model) {
				t.Errorf("model after restore: %d bytes, want the %d put", len(got), len(model))
			}
			if !store.Has(d) {
				t.Error("the restored node's store lacks the model after reading it")
			}
			if !slices.Equal(colds, tt.wantColds) {
				t.Errorf("fetches cold = %v, want %v", colds, tt.wantColds)
			}
		})
	}
}

// TestOldEntriesMoveIntoStore: chunks and a seal with the bytes in the
// log (an older leader's), and a snapshot carrying bytes, still apply: the
// bytes go into the store.
func TestOldEntriesMoveIntoStore(t *testing.T) {
	model := []byte("a model of an older version")
	d := string(blobs.Sum(model))
	old := []Command{
		{Type: CmdSubmitJob, JobID: "j", At: 1},
		{Type: CmdPutBlobChunk, Digest: d, Offset: 0, Size: int64(len(model)), Data: model[:10], At: 2},
		{Type: CmdPutBlobChunk, Digest: d, Offset: 10, Size: int64(len(model)), Data: model[10:], At: 3},
		{Type: CmdSealBlob, Digest: d, Size: int64(len(model)), At: 4},
		{Type: CmdCommitRound, JobID: "j", Arm: "a", Round: 1, Digest: d, At: 5},
	}
	store := testStore(t, blobs.Options{})
	f := storedFSM(store, func() *blobs.Store { return nil })
	mustApply(t, f, old...)
	if !store.Has(blobs.Digest(d)) {
		t.Fatal("a blob sealed from log chunks is not in the store")
	}
	if got := readModel(t, f, d); !bytes.Equal(got, model) {
		t.Errorf("OpenModel = %q, want %q", got, model)
	}
	// A snapshot of a node without a store carries the bytes; rewritten
	// as version 2, it is what an older node wrote.
	mem := NewFSM()
	mustApply(t, mem, old...)
	snap := snapshotBytes(t, mem)
	snap[0] = snapshotVersion2
	binary.BigEndian.PutUint32(snap[len(snap)-4:], crc32.Checksum(snap[:len(snap)-4], castagnoli))
	store2 := testStore(t, blobs.Options{})
	g := storedFSM(store2, func() *blobs.Store { return nil })
	if err := g.Restore(io.NopCloser(bytes.NewReader(snap))); err != nil {
		t.Fatalf("Restore(version 2 with bytes) = %v", err)
	}
	if !store2.Has(blobs.Digest(d)) {
		t.Error("a version 2 snapshot's blob is not in the store after restore")
	}
	if got := readModel(t, g, d); !bytes.Equal(got, model) {
		t.Errorf("OpenModel after restore = %q, want %q", got, model)
	}
}

// TestCollectOrphanedBlobs: blobs of rounds no job references any more
// leave the store once past its grace; those referenced stay.
func TestCollectOrphanedBlobs(t *testing.T) {
	ctx := context.Background()
	var mu sync.Mutex
	now := time.Unix(1_700_000_000, 0)
	clock := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return now
	}
	cfg := testConfig("a", soloPeer, "")
	cfg.Blobs = testStore(t, blobs.Options{Grace: time.Minute, Now: clock})
	n := memSolo(t, cfg)
	leaderOf(t, []*Node{n}, nil)
	if err := n.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatal(err)
	}
	var ds []string
	for r := 1; r <= 4; r++ {
		d, err := n.PutModelBytes(ctx, fmt.Appendf(nil, "model of round %d", r))
		if err != nil {
			t.Fatal(err)
		}
		if err := n.CommitRound(ctx, "j", "a", r, d, nil); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	if removed, _, err := n.CollectBlobs(ctx); err != nil || removed != 0 {
		t.Fatalf("CollectBlobs within the grace = %d, %v; want 0, nil", removed, err)
	}
	mu.Lock()
	now = now.Add(time.Hour)
	mu.Unlock()
	removed, _, err := n.CollectBlobs(ctx)
	if err != nil || removed != 2 {
		t.Fatalf("CollectBlobs past the grace = %d, %v; want 2 (rounds 1 and 2), nil", removed, err)
	}
	for i, d := range ds {
		if got, want := cfg.Blobs.Has(blobs.Digest(d)), i >= 2; got != want {
			t.Errorf("round %d's blob in the store = %v, want %v", i+1, got, want)
		}
	}
}

var benchMB = flag.Int("mb", 256, "the model's size in MiB in BenchmarkCommitModel")

// BenchmarkCommitModel commits a model of -mb MiB (256 by default; -args
// -mb 1024 for 1 GiB) per iteration, put and committed as a round, on a
// cluster of 3 voters in memory with a blob store each on disk
// ("ha-3-voters": the leader streams it into its store and, as it
// writes, to the follower a quorum needs over the in-memory
// BlobTransport, and the other follower fetches it once those two hold
// it; the log carries its digest; "ha-3-voters-fetch": the push off,
// the first follower fetches it once written, the other once those two
// hold it). Between
// commits, untimed, every voter comes to hold the model, as it would
// while a round trains;
// against a one-voter node that records digests only ("no-ha": what a
// coordinator without a replica of its own does, hashing the model as it
// is encoded) and a one-voter node with a blob store on disk
// ("no-ha-blobs": what `cohort coordinator` without a cluster does, the
// model written and fsynced once). It logs the ratios; the goal is
// ha ≤ 1.5× no-ha at 1 GiB. On one machine the three voters write the
// model three times to one disk, which no-ha-blobs writes once.
// Up to 256 MiB, "ha-3-voters-in-log" measures the path without a blob
// store, the model's chunks through the log, for comparison.
func BenchmarkCommitModel(b *testing.B) {
	model := randomBytes(*benchMB<<20, 5)
	put := func(n *Node, i int) (string, error) {
		binary.BigEndian.PutUint64(model, uint64(i)) // a new model each round
		return n.PutModel(context.Background(), func(w io.Writer) error {
			for off := 0; off < len(model); off += 1 << 20 { // as an encoder writes
				if _, err := w.Write(model[off:min(off+1<<20, len(model))]); err != nil {
					return err
				}
			}
			return nil
		})
	}
	commit := func(b *testing.B, n *Node, ns ...*Node) {
		ctx := context.Background()
		if err := n.SubmitJob(ctx, "j", nil); err != nil {
			b.Fatal(err)
		}
		b.SetBytes(int64(len(model)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			d, err := put(n, i)
			if err != nil {
				b.Fatal(err)
			}
			if err := n.CommitRound(ctx, "j", "a", i+1, d, nil); err != nil {
				b.Fatal(err)
			}
			// A round trains between commits: every voter holds the
			// model before the next, untimed.
			b.StopTimer()
			waitHeld(b, n, ns, blobs.Digest(d), int64(len(model)))
			b.StartTimer()
		}
		b.StopTimer()
	}
	var solo time.Duration
	b.Run("no-ha", func(b *testing.B) {
		cfg := testConfig("a", soloPeer, "")
		cfg.DigestsOnly = true
		n := memSolo(b, cfg)
		leaderOf(b, []*Node{n}, nil)
		commit(b, n)
		solo = b.Elapsed() / time.Duration(b.N)
	})
	var soloBlobs time.Duration
	b.Run("no-ha-blobs", func(b *testing.B) {
		ns, _, _ := blobCluster(b, 1)
		commit(b, leaderOf(b, ns, nil))
		soloBlobs = b.Elapsed() / time.Duration(b.N)
	})
	haRun := func(name string, pushBuffer int64) {
		b.Run(name, func(b *testing.B) {
			ns, _, net := blobCluster(b, 3, func(c *Config) {
				// A 2-core machine hashing and copying GiBs: timeouts that
				// keep the lead through it.
				c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
				c.ApplyTimeout = time.Minute
				c.PushBuffer = pushBuffer
			})
			l := leaderOf(b, ns, nil)
			commit(b, l, ns...)
			net.mu.Lock()
			pushes, fetches := 0, 0
			for _, n := range ns {
				pushes, fetches = pushes+net.pushes[n.ID()], fetches+net.fetches[n.ID()]
			}
			net.mu.Unlock()
			if ha := b.Elapsed() / time.Duration(b.N); solo > 0 {
				b.Logf("%d MiB: %s %v/op, no-ha %v/op: %.2f×; %d pushes and %d fetches by the followers in %d commits", *benchMB, name, ha, solo, float64(ha)/float64(solo), pushes, fetches, b.N)
				if soloBlobs > 0 {
					b.Logf("%d MiB: %s against no-ha-blobs %v/op: %.2f×", *benchMB, name, soloBlobs, float64(ha)/float64(soloBlobs))
				}
			}
		})
	}
	// The followers receive the model while the leader writes it.
	haRun("ha-3-voters", 0)
	// The followers fetch it once written (the push disabled): the
	// replication before the push, for comparison.
	haRun("ha-3-voters-fetch", -1)
	// What HA cost before: the model's chunks through the log, every
	// node holding it in memory (and raft's in-memory log every round's
	// copy): skipped past 256 MiB, where that holds tens of GiB.
	if *benchMB > 256 {
		return
	}
	b.Run("ha-3-voters-in-log", func(b *testing.B) {
		var cfgs []Config
		ps := peers(3)
		for _, p := range ps {
			c := testConfig(p.ID, ps, "")
			c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
			c.ApplyTimeout, c.ChunkSize = time.Minute, 0
			cfgs = append(cfgs, c)
		}
		ns := memNodes(b, cfgs)
		l := leaderOf(b, ns, nil)
		commit(b, l)
		if ha := b.Elapsed() / time.Duration(b.N); solo > 0 {
			b.Logf("%d MiB: ha-3-voters-in-log %v/op, no-ha %v/op: %.2f×", *benchMB, ha, solo, float64(ha)/float64(solo))
		}
	})
}

// waitHeld waits until every node of ns holds blob d of size bytes
// (HoldBlob waits for a fetch in flight), from leader l.
func waitHeld(b *testing.B, l *Node, ns []*Node, d blobs.Digest, size int64) {
	for _, n := range ns {
		if err := n.HoldBlob(context.Background(), l.ID(), d, size); err != nil {
			b.Fatalf("%s: HoldBlob = %v", n.ID(), err)
		}
	}
}

// TestFollowerRestoresSnapshotAndFetches: a follower cut off while rounds
// commit and the log is compacted catches up from the leader's snapshot,
// which carries digests only, and fetches the model it lacks.
func TestFollowerRestoresSnapshotAndFetches(t *testing.T) {
	ctx := context.Background()
	ns, parts, net := blobCluster(t, 3, func(c *Config) { c.TrailingLogs, c.SnapshotThreshold = 1, 1 })
	l := leaderOf(t, ns, nil)
	f := follower(ns, l)
	var fi int
	for i, n := range ns {
		if n == f {
			fi = i
		}
	}
	if err := l.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatal(err)
	}
	// Cut f off: raft's messages and blob fetches alike.
	for i := range parts {
		if i != fi {
			parts[i].trans.Disconnect(parts[fi].trans.LocalAddr())
			parts[fi].trans.Disconnect(parts[i].trans.LocalAddr())
		}
	}
	net.setFail(f.ID(), errors.New("cut off"))
	var d string
	for r := 1; r <= 3; r++ {
		model := randomBytes(1<<20, uint64(r))
		var err error
		if d, err = putStream(ctx, l, model); err != nil {
			t.Fatalf("round %d: PutModel = %v", r, err)
		}
		if err := l.CommitRound(ctx, "j", "a", r, d, nil); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.snapshot(); err != nil {
		t.Fatal(err)
	}
	if f.cfg.Blobs.Has(blobs.Digest(d)) {
		t.Fatal("the cut-off follower holds round 3's model already")
	}
	net.setFail(f.ID(), nil)
	for i := range parts {
		if i != fi {
			parts[i].trans.Connect(parts[fi].trans.LocalAddr(), parts[fi].trans)
			parts[fi].trans.Connect(parts[i].trans.LocalAddr(), parts[i].trans)
		}
	}
	waitUntil(t, "the follower catches up to round 3", ns, func() bool {
		r, _, _ := f.FSM().LastRound("j", "a")
		return r == 3
	})
	// (Raft records the installed snapshot's index after the FSM restored
	// it: f.Status() may not show it yet.)
	if !f.cfg.Blobs.Has(blobs.Digest(d)) {
		t.Error("the follower restored the snapshot without fetching round 3's model")
	}
}

// TestRaftDBStaysSmall: on disk (raft-boltdb over loopback TCP), a
// 32 MiB model committed in a cluster of 3 grows no node's raft.db by
// 1 MiB: the log carries its digest.
func TestRaftDBStaysSmall(t *testing.T) {
	ctx := context.Background()
	ps, lns := loopbackPeers(t, 3)
	net := newMemBlobNet()
	var ns []*Node
	for i, p := range ps {
		cfg := testConfig(p.ID, ps, t.TempDir())
		// Over TCP on a loaded machine, 150 ms let the lead move mid-test.
		cfg.HeartbeatTimeout, cfg.ElectionTimeout, cfg.LeaderLeaseTimeout = time.Second, time.Second, time.Second
		cfg.RaftListener = lns[i]
		cfg.Blobs = testStore(t, blobs.Options{})
		cfg.BlobTransport = memBlobPeer{net: net, self: p.ID}
		net.stores[p.ID] = cfg.Blobs
		ns = append(ns, openNode(t, cfg))
	}
	net.mu.Lock()
	for _, n := range ns {
		net.nodes[n.ID()] = n
	}
	net.mu.Unlock()
	l := leaderOf(t, ns, nil)
	if err := l.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatal(err)
	}
	size := func(n *Node) int64 {
		fi, err := os.Stat(filepath.Join(n.cfg.DataDir, "raft.db"))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Size()
	}
	before := map[string]int64{}
	for _, n := range ns {
		before[n.ID()] = size(n)
	}
	model := randomBytes(32<<20, 11)
	d, err := putStream(ctx, l, model)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.CommitRound(ctx, "j", "a", 1, d, nil); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "every node applies round 1", ns, func() bool {
		for _, n := range ns {
			if r, _, _ := n.FSM().LastRound("j", "a"); r != 1 {
				return false
			}
		}
		return true
	})
	for _, n := range ns {
		if grew := size(n) - before[n.ID()]; grew >= 1<<20 {
			t.Errorf("%s: raft.db grew by %d bytes for a %d-byte model, want < 1 MiB", n.ID(), grew, len(model))
		}
		if got := readModel(t, n.FSM(), d); !bytes.Equal(got, model) {
			t.Errorf("%s: read back %d bytes, want the %d put", n.ID(), len(got), len(model))
		}
	}
}

// TestFetchStopsWhenNodeCloses: a fetch that cannot reach its peers
// gives up once the node starts closing, with an error wrapping
// ErrClosed (which the FSM logs as no fault).
func TestFetchStopsWhenNodeCloses(t *testing.T) {
	ns, _, net := blobCluster(t, 3)
	n := ns[0]
	net.setFail(n.ID(), errors.New("peer unreachable"))
	n.startClosing()
	err := n.fetchBlob(blobs.Sum([]byte("a model")), 7, "", true)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("fetchBlob on a closing node = %v, want it to wrap ErrClosed", err)
	}
}

// TestFetchGivesUpWhenNoPeerHolds: a blob no peer holds (a replayed seal
// of a model long since collected) is asked for once per peer, not
// retried.
func TestFetchGivesUpWhenNoPeerHolds(t *testing.T) {
	ns, _, net := blobCluster(t, 3)
	n := ns[0]
	err := n.fetchBlob(blobs.Sum([]byte("collected everywhere")), 20, "", true)
	if !errors.Is(err, blobs.ErrNotFound) {
		t.Fatalf("fetchBlob of a blob no peer holds = %v, want ErrNotFound", err)
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	if got := net.fetches[n.ID()]; got != 2 {
		t.Errorf("fetchBlob asked %d times, want 2 (each peer once)", got)
	}
}
