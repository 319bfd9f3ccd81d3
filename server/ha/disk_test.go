package ha

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// TestNodeRestart: a node opened on disk again resumes from its snapshot
// and the log after it. (A one-voter cluster without a raft address
// runs without network; TestNodeMutualTLS covers TCP.)
func TestNodeRestart(t *testing.T) {
	ctx := context.Background()
	cfg := testConfig("a", soloPeer, t.TempDir())
	n := openNode(t, cfg)
	leaderOf(t, []*Node{n}, nil)
	if err := n.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatal(err)
	}
	for r := 1; r <= 2; r++ {
		if err := commitNode(ctx, n, r); err != nil {
			t.Fatalf("round %d: %v", r, err)
		}
	}
	if err := n.snapshot(); err != nil { // round 2 in the snapshot
		t.Fatal(err)
	}
	if err := commitNode(ctx, n, 3); err != nil { // round 3 in the log only
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}

	n = openNode(t, cfg)
	leaderOf(t, []*Node{n}, nil)
	if err := n.Barrier(ctx); err != nil {
		t.Fatal(err)
	}
	last, d, err := n.FSM().LastRound("j", "a")
	if err != nil || last != 3 {
		t.Fatalf("LastRound after restart = %d, %v, want 3", last, err)
	}
	if got := readModel(t, n.FSM(), d); string(got) != "model of round 3" {
		t.Errorf("model after restart = %q, want %q", got, "model of round 3")
	}
	if st := n.Status(); st.LastSnapshotIndex == 0 {
		t.Errorf("Status after restart = %+v, want a snapshot", st)
	}
	if err := commitNode(ctx, n, 4); err != nil {
		t.Fatalf("round 4 after restart: %v", err)
	}
}

// soloRun opens a one-voter node of cfg, commits rounds 1 and 2 with a
// snapshot between them, and closes it.
func soloRun(t *testing.T, cfg Config) {
	t.Helper()
	ctx := context.Background()
	n := openNode(t, cfg)
	leaderOf(t, []*Node{n}, nil)
	if err := n.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatal(err)
	}
	if err := commitNode(ctx, n, 1); err != nil {
		t.Fatal(err)
	}
	if err := n.snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := commitNode(ctx, n, 2); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestNewRefusesOtherConfiguration: parts whose stored raft configuration
// lists other peers than the config are refused, naming the fix.
func TestNewRefusesOtherConfiguration(t *testing.T) {
	store, snaps := raft.NewInmemStore(), raft.NewInmemSnapshotStore()
	open := func(ps []Peer) (*Node, error) {
		_, trans := raft.NewInmemTransport(raftAddress(ps[0]))
		return New(testConfig("a", ps, ""), nil, store, store, snaps, trans)
	}
	n, err := open([]Peer{{ID: "a", RaftAddr: "raft-a"}})
	if err != nil {
		t.Fatal(err)
	}
	leaderOf(t, []*Node{n}, nil)
	if err := n.SubmitJob(context.Background(), "j", nil); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	n, err = open([]Peer{{ID: "a", RaftAddr: "raft-a2"}})
	if err == nil {
		n.Close()
		t.Fatal("New over another peer list's state = nil, want a refusal")
	}
	if !strings.Contains(err.Error(), "raft's stored configuration") || !strings.Contains(err.Error(), "restore the old peer list") {
		t.Errorf("New over another peer list's state = %v, want one naming the stored configuration and the fix", err)
	}
	_, trans := raft.NewInmemTransport("elsewhere")
	if _, err := New(testConfig("a", []Peer{{ID: "a", RaftAddr: "raft-a"}}, ""), nil, raft.NewInmemStore(), raft.NewInmemStore(), snaps, trans); err == nil || !strings.Contains(err.Error(), "give the transport the peer's raft_addr") {
		t.Errorf("New with a transport on another address = %v, want a refusal naming the fix", err)
	}
	if _, err := New(testConfig("a", soloPeer, ""), nil, nil, nil, nil, nil); err == nil || errors.Is(err, ErrClosed) {
		t.Errorf("New without parts = %v, want a refusal", err)
	}
}
