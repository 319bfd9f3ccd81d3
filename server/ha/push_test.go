package ha

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/server/blobs"
)

// TestPushedModelFaults: a model is pushed to the follower a quorum
// needs while the leader writes it; one whose push fails, is corrupted or
// falls behind still ends holding it (fetched), the spare follower
// fetches it, and the commit succeeds with the quorum.
func TestPushedModelFaults(t *testing.T) {
	cause := errors.New("stream reset")
	tests := []struct {
		name      string
		fault     pushFault
		behind    bool // the follower's push is held until the put ends
		wantFetch bool // the faulty follower ends holding it by a fetch
	}{
		{name: "pushed"},
		{name: "push fails mid-stream", fault: pushFault{failAfter: 1 << 20, err: cause}, wantFetch: true},
		{name: "pushed bytes altered: digest mismatch", fault: pushFault{flip: true}, wantFetch: true},
		{name: "follower behind the bounded buffer", behind: true, wantFetch: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			ns, _, net := blobCluster(t, 3, func(c *Config) {
				// A buffer larger than the model: a healthy follower that
				// the machine's load slows is never dropped (it was, at
				// 2 MiB, on a 2-core VM with a slow disk); the held one
				// falls behind a buffer smaller than the model.
				c.PushBuffer = 16 << 20
				if tt.behind {
					c.PushBuffer = 2 << 20
				}
				// Three nodes hashing at once on a loaded machine under
				// -race: a lead that holds through it.
				c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
			})
			l := leaderOf(t, ns, nil)
			if err := l.SubmitJob(ctx, "j", nil); err != nil {
				t.Fatal(err)
			}
			// The pushed follower: the put waits for the held one
			// no longer than the stall bound.
			bad := net.nodes[l.rankedFollowers()[0].ID]
			l.pushStall = 50 * time.Millisecond
			gate := make(chan struct{})
			net.mu.Lock()
			net.pushFault[bad.ID()] = tt.fault
			if tt.behind {
				net.pushGate[bad.ID()] = gate
			}
			net.mu.Unlock()
			model := randomBytes(8<<20, 11)
			d, err := putStream(ctx, l, model)
			if err != nil {
				t.Fatalf("PutModel = %v", err)
			}
			close(gate) // the put did not wait for the held follower past the stall bound
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
			// Applying the seal fetched the blob a node lacked, so every
			// node holds it now, and nothing else.
			for _, n := range ns {
				if !n.cfg.Blobs.Has(blobs.Digest(d)) || n.cfg.Blobs.Size() != int64(len(model)) {
					t.Errorf("%s: holds the model = %v, store size %d; want true, %d", n.ID(), n.cfg.Blobs.Has(blobs.Digest(d)), n.cfg.Blobs.Size(), len(model))
				}
			}
			net.mu.Lock()
			defer net.mu.Unlock()
			for _, n := range ns {
				if n == l {
					continue
				}
				fetched, pushed := net.fetches[n.ID()], net.pushes[n.ID()]
				switch {
				case n != bad:
					if fetched != 1 || pushed != 0 {
						t.Errorf("%s (spare): fetched %d times, received %d pushes; want 1 and 0", n.ID(), fetched, pushed)
					}
				case tt.wantFetch:
					if fetched != 1 {
						t.Errorf("%s (push faulty) fetched the model %d times, want 1", n.ID(), fetched)
					}
				case fetched != 0 || pushed != 1:
					t.Errorf("%s: fetched %d times, received %d pushes; want 0 and 1", n.ID(), fetched, pushed)
				}
			}
		})
	}
}

// firstAndSpare returns the follower the next put of leader l (of three
// voters) pushes to, and the spare.
func firstAndSpare(l *Node) (first, spare string) {
	ranked := l.rankedFollowers()
	return ranked[0].ID, ranked[1].ID
}

// TestPutReplicatesQuorumFirst: a put pushes the model to the follower
// the quorum needs and asks the spare to fetch it only once that one
// holds it; the put does not wait for the spare. A follower whose push
// failed is the spare of the next put.
func TestPutReplicatesQuorumFirst(t *testing.T) {
	ctx := context.Background()
	ns, _, net := blobCluster(t, 3, func(c *Config) {
		c.PushBuffer = 16 << 20 // a healthy follower on a loaded machine keeps up
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
	})
	l := leaderOf(t, ns, nil)
	first, spare := firstAndSpare(l)
	gate, held := make(chan struct{}), make(chan []string, 8)
	net.mu.Lock()
	net.holdGate[spare] = gate
	net.held[spare] = held
	net.mu.Unlock()

	// The spare is held: the put returns on the leader's and first's
	// copies.
	m1 := randomBytes(4<<20, 21)
	d1, err := putStream(ctx, l, m1)
	if err != nil {
		t.Fatalf("PutModel with the spare held = %v", err)
	}
	select {
	case holders := <-held:
		// (The spare may hold it by then too: applying the seal fetches.
		// The leader always does: a spare waits for its write.)
		if !slices.Contains(holders, first) {
			t.Errorf("the spare was asked to hold the model when %q held it, want after %s did", holders, first)
		}
	case <-time.After(time.Minute):
		t.Fatal("the spare was never asked to hold the model")
	}
	net.mu.Lock()
	pushed := net.pushes[first]
	net.mu.Unlock()
	if pushed != 1 {
		t.Errorf("%s (first) received %d pushes, want 1", first, pushed)
	}
	close(gate)
	net.mu.Lock()
	delete(net.held, spare)
	net.mu.Unlock()
	if err := net.nodes[spare].HoldBlob(ctx, l.ID(), blobs.Digest(d1), int64(len(m1))); err != nil {
		t.Fatalf("the spare's HoldBlob = %v", err)
	}

	// first's push fails: the put still commits, the spare is asked too,
	// and first is ranked behind it. HoldBlob below brings both to hold
	// the model (fetching where a copy is missing): it checks that they
	// can, not that first fetched it on its own.
	held2 := make(chan []string, 8)
	net.mu.Lock()
	net.pushFault[first] = pushFault{failAfter: 1 << 20, err: errors.New("stream reset")}
	net.held[spare] = held2
	net.mu.Unlock()
	m2 := randomBytes(4<<20, 22)
	d2, err := putStream(ctx, l, m2)
	if err != nil {
		t.Fatalf("PutModel with first's push failing = %v", err)
	}
	select {
	case <-held2:
	case <-time.After(time.Minute):
		t.Fatal("the spare was never asked to hold the model first's push failed on")
	}
	net.mu.Lock()
	delete(net.held, spare)
	net.mu.Unlock()
	for _, id := range []string{first, spare} {
		if err := net.nodes[id].HoldBlob(ctx, l.ID(), blobs.Digest(d2), int64(len(m2))); err != nil {
			t.Fatalf("%s: HoldBlob = %v", id, err)
		}
	}
	if got := l.rankedFollowers(); got[0].ID != spare || got[1].ID != first {
		t.Fatalf("followers ranked %s, %s after %s's push failed; want %s first", got[0].ID, got[1].ID, first, spare)
	}

	// The next put pushes to the former spare.
	net.mu.Lock()
	delete(net.pushFault, first)
	net.mu.Unlock()
	if _, err := putStream(ctx, l, randomBytes(4<<20, 23)); err != nil {
		t.Fatalf("third PutModel = %v", err)
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	if got := net.pushes[spare]; got != 1 {
		t.Errorf("%s (now first) received %d pushes, want 1", spare, got)
	}
	if got := net.pushes[first]; got != 1 {
		t.Errorf("%s (now the spare) received %d pushes in all, want 1 (the first put's)", first, got)
	}
}

// TestPushStallDropsQuorum: when every follower's push stalls, the
// leader's write waits for them no longer than the stall bound, drops
// them, and the followers fetch the model once written: the commit still
// reaches a quorum.
func TestPushStallDropsQuorum(t *testing.T) {
	ctx := context.Background()
	ns, _, net := blobCluster(t, 3, func(c *Config) {
		c.PushBuffer = 1 << 20
		c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = time.Second, time.Second, time.Second
	})
	l := leaderOf(t, ns, nil)
	l.pushStall = 50 * time.Millisecond
	gate := make(chan struct{})
	net.mu.Lock()
	for _, n := range ns {
		if n != l {
			net.pushGate[n.ID()] = gate
		}
	}
	net.mu.Unlock()
	model := randomBytes(4<<20, 13)
	d, err := putStream(ctx, l, model)
	close(gate)
	if err != nil {
		t.Fatalf("PutModel with every push stalled = %v, want the followers to fetch it", err)
	}
	for _, n := range ns {
		if n == l {
			continue
		}
		// The quorum follower fetched it before PutModel returned, the
		// other one in the background: HoldBlob waits for that fetch.
		if err := n.HoldBlob(ctx, l.ID(), blobs.Digest(d), int64(len(model))); err != nil {
			t.Fatalf("%s: HoldBlob = %v", n.ID(), err)
		}
		f, err := n.cfg.Blobs.Open(blobs.Digest(d))
		if err != nil {
			t.Fatalf("%s: opening the model = %v", n.ID(), err)
		}
		got, err := io.ReadAll(f)
		f.Close()
		if err != nil || !bytes.Equal(got, model) {
			t.Errorf("%s: read back %d bytes, %v; want the %d put", n.ID(), len(got), err, len(model))
		}
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	for _, n := range ns {
		if n != l && net.pushes[n.ID()] != 0 {
			t.Errorf("%s received %d pushes, want 0 (dropped)", n.ID(), net.pushes[n.ID()])
		}
	}
}

// TestPushedModelWriteFails: a write that fails ends the pushes; no
// follower stores anything.
func TestPushedModelWriteFails(t *testing.T) {
	ctx := context.Background()
	ns, _, _ := blobCluster(t, 3)
	l := leaderOf(t, ns, nil)
	cause := errors.New("encoder failed")
	_, err := l.PutModel(ctx, func(w io.Writer) error {
		if _, err := w.Write(randomBytes(3<<20, 3)); err != nil {
			return err
		}
		return cause
	})
	if !errors.Is(err, cause) {
		t.Fatalf("PutModel with a failing write = %v, want %v", err, cause)
	}
	for _, n := range ns {
		if got := n.cfg.Blobs.Size(); got != 0 {
			t.Errorf("%s: store holds %d bytes after a failed put, want 0", n.ID(), got)
		}
	}
}

// memStream is a BlobStream of fixed bytes and digest.
type memStream struct {
	io.Reader
	d blobs.Digest
}

func (s memStream) Digest() blobs.Digest { return s.d }

// TestReceiveBlobRefuses: a push whose bytes do not hash to its digest,
// that ends without a valid digest or that breaks off is refused and
// leaves the store untouched.
func TestReceiveBlobRefuses(t *testing.T) {
	ctx := context.Background()
	ns, _, _ := blobCluster(t, 3)
	l := leaderOf(t, ns, nil)
	f := follower(ns, l)
	model := []byte("the global model")
	cause := errors.New("connection reset")
	tests := []struct {
		name    string
		stream  BlobStream
		wantErr error
	}{
		{"digest mismatch", memStream{bytes.NewReader(model), blobs.Sum([]byte("another model"))}, blobs.ErrDigestMismatch},
		{"no digest at the end", memStream{bytes.NewReader(model), ""}, blobs.ErrBadDigest},
		{"broken off", memStream{io.MultiReader(bytes.NewReader(model), iotestErr{cause}), blobs.Sum(model)}, cause},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := f.ReceiveBlob(ctx, l.ID(), tt.stream); !errors.Is(err, tt.wantErr) {
				t.Fatalf("ReceiveBlob = %v, want %v", err, tt.wantErr)
			}
			if f.cfg.Blobs.Has(blobs.Sum(model)) || f.cfg.Blobs.Size() != 0 {
				t.Errorf("the store holds %d bytes after a refused push, want none", f.cfg.Blobs.Size())
			}
		})
	}
	d, err := f.ReceiveBlob(ctx, l.ID(), memStream{bytes.NewReader(model), blobs.Sum(model)})
	if err != nil || d != blobs.Sum(model) || !f.cfg.Blobs.Has(d) {
		t.Errorf("ReceiveBlob of good bytes = %s, %v; want %s held", d, err, blobs.Sum(model))
	}
}

type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }

// TestBlobTeeDropsStreamsBehind: a stream more than its buffer behind the
// write is dropped with ErrPushBehind; the others read every byte and
// the digest.
func TestBlobTeeDropsStreamsBehind(t *testing.T) {
	var store bytes.Buffer
	tee := newBlobTee(&store, 2, 0, 2*pushChunk)
	data := randomBytes(3*pushChunk, 1)
	var kept bytes.Buffer // stream 0, read after every write: it keeps up
	for off := 0; off < len(data); off += pushChunk {
		if _, err := tee.Write(data[off : off+pushChunk]); err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(&kept, tee.streams[0], pushChunk); err != nil {
			t.Fatalf("reading the stream that keeps up: %v", err)
		}
	}
	d := blobs.Sum(data)
	tee.finish(d)
	if n, err := io.Copy(&kept, tee.streams[0]); n != 0 || err != nil {
		t.Errorf("the stream that kept up, at its end: %d more bytes, %v; want 0, nil (EOF)", n, err)
	}
	if !bytes.Equal(kept.Bytes(), data) || tee.streams[0].Digest() != d {
		t.Errorf("the stream that kept up read %d bytes, digest %s; want %d, %s", kept.Len(), tee.streams[0].Digest(), len(data), d)
	}
	_, err := io.ReadAll(tee.streams[1])
	if !errors.Is(err, ErrPushBehind) {
		t.Errorf("reading the stream left behind = %v, want ErrPushBehind", err)
	}
	if !bytes.Equal(store.Bytes(), data) {
		t.Errorf("the store got %d bytes, want %d", store.Len(), len(data))
	}
	if !strings.Contains(err.Error(), "pushed by the leader") {
		t.Errorf("error %q does not say what was read", err)
	}
}

// TestRankedFollowers: the followers a put pushes to first are those
// whose replication failed least recently, in the configured order
// otherwise; the leader's own failed write ranks no follower down.
func TestRankedFollowers(t *testing.T) {
	ns, _, _ := blobCluster(t, 3)
	l := ns[0]
	ids := func() string {
		var s []string
		for _, p := range l.rankedFollowers() {
			s = append(s, p.ID)
		}
		return strings.Join(s, ",")
	}
	steps := []struct {
		failed string
		err    error
		want   string
	}{
		{"", nil, "b,c"},
		{"b", fmt.Errorf("pushing: %w", errPutFailed), "b,c"},
		{"b", ErrPushBehind, "c,b"},
		{"c", errors.New("disk full"), "b,c"},
	}
	for _, s := range steps {
		if s.failed != "" {
			l.replicaFailedNow(s.failed, s.err)
		}
		if got := ids(); got != s.want {
			t.Fatalf("after %s failed with %v: ranked %s, want %s", s.failed, s.err, got, s.want)
		}
	}
}

// TestSparesStandInForASilentPush: a pushed follower that holds the
// model but does not answer has the spare fetch it pushStall after the
// write, and the put commits on the spare's copy.
func TestSparesStandInForASilentPush(t *testing.T) {
	ctx := context.Background()
	ns, _, net := blobCluster(t, 3, func(c *Config) { c.PushBuffer = 16 << 20 })
	l := leaderOf(t, ns, nil)
	l.pushStall = 50 * time.Millisecond
	first, spare := firstAndSpare(l)
	reply := make(chan struct{})
	defer close(reply)
	net.mu.Lock()
	net.replyGate[first] = reply
	net.mu.Unlock()
	model := randomBytes(4<<20, 31)
	d, err := putStream(ctx, l, model)
	if err != nil {
		t.Fatalf("PutModel with the pushed follower silent = %v", err)
	}
	// first never answers, so only the spare's copy can have made the
	// quorum.
	if !net.nodes[spare].cfg.Blobs.Has(blobs.Digest(d)) {
		t.Fatalf("PutModel returned without the spare %s holding the model", spare)
	}
	net.mu.Lock()
	defer net.mu.Unlock()
	if got := net.fetches[spare]; got != 1 {
		t.Errorf("the spare %s fetched %d times, want 1 (standing in)", spare, got)
	}
}

// TestSlowPushRanksBehind: a pushed follower that holds the leader's
// write up ranks behind the other for the next put.
func TestSlowPushRanksBehind(t *testing.T) {
	ctx := context.Background()
	ns, _, net := blobCluster(t, 3, func(c *Config) { c.PushBuffer = 1 << 20 })
	l := leaderOf(t, ns, nil)
	l.slowPush = 50 * time.Millisecond
	first, spare := firstAndSpare(l)
	gate := make(chan struct{})
	net.mu.Lock()
	net.pushGate[first] = gate
	net.mu.Unlock()
	// The push starts 500 ms late: the write (4 MiB past a 1 MiB buffer)
	// waits for it, well under pushStall, and for more than a quarter of
	// the write even if the rest of it takes 1.5 s on a loaded machine.
	time.AfterFunc(500*time.Millisecond, func() { close(gate) })
	if _, err := putStream(ctx, l, randomBytes(4<<20, 32)); err != nil {
		t.Fatalf("PutModel = %v", err)
	}
	net.mu.Lock()
	pushed := net.pushes[first]
	net.mu.Unlock()
	if pushed != 1 {
		t.Fatalf("%s received %d pushes, want 1 (slow, not dropped)", first, pushed)
	}
	if got := l.rankedFollowers(); got[0].ID != spare {
		t.Errorf("after %s's push held the write up, ranked %s first, want %s", first, got[0].ID, spare)
	}
}
