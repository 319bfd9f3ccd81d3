package ha

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
)

// TestOpenOnInheritedListener opens a three-node cluster whose raft
// sockets were bound before Open (as systemd socket activation passes
// them) and held open throughout: the nodes talk mutual TLS over them,
// elect a leader and replicate a round, and each node's advertised
// address is the configured one.
func TestOpenOnInheritedListener(t *testing.T) {
	ctx := context.Background()
	ca := newTestCA(t, "cohort")
	ps, lns := loopbackPeers(t, 3)
	var ns []*Node
	for i, p := range ps {
		cfg := testConfig(p.ID, ps, t.TempDir())
		cfg.ServerTLS, cfg.ClientTLS = ca.configs(t, p.ID)
		cfg.RaftListener = lns[i]
		ns = append(ns, openNode(t, cfg))
	}
	l := leaderOf(t, ns, nil)
	if err := l.SubmitJob(ctx, "j", nil); err != nil {
		t.Fatalf("SubmitJob = %v", err)
	}
	if err := commitNode(ctx, l, 1); err != nil {
		t.Fatalf("round 1 = %v", err)
	}
	waitUntil(t, "round 1 reaches every node", ns, func() bool {
		for _, n := range ns {
			if last, _, _ := n.FSM().LastRound("j", "a"); last != 1 {
				return false
			}
		}
		return true
	})
	byID := map[string]string{}
	for _, p := range ps {
		byID[p.ID] = p.RaftAddr
	}
	for _, n := range ns {
		if addr, id := n.raft.LeaderWithID(); string(addr) != byID[string(id)] {
			t.Errorf("node %s knows leader %s at %s, want its configured address %s", n.ID(), id, addr, byID[string(id)])
		}
	}
	for i, ln := range lns {
		ns[i].Close()
		if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("node %s closed: its inherited listener Accept = %v, want net.ErrClosed", ps[i].ID, err)
		}
	}
}

// TestOpenRefusesListenerWithoutNetwork gives a raft socket to a
// one-voter cluster without a raft address: Open refuses, naming the
// fix, and closes the socket.
func TestOpenRefusesListenerWithoutNetwork(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	cfg := testConfig("a", soloPeer, t.TempDir())
	cfg.RaftListener = ln
	n, err := Open(cfg)
	if err == nil {
		n.Close()
		t.Fatal("Open = nil, want a refusal")
	}
	if want := "give the peer a raft_addr, or pass no raft socket"; !strings.Contains(err.Error(), want) {
		t.Errorf("Open = %v, want it to contain %q", err, want)
	}
	if _, err := ln.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("after a refused Open, Accept = %v, want net.ErrClosed", err)
	}
}
