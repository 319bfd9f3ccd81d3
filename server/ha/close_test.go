package ha

import (
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// stallingTransport is an in-memory transport whose AppendEntries, once
// stalled, blocks until the transport is closed (or, when ignoreClose is
// set, until release): raft's replication to a peer stuck on the network.
type stallingTransport struct {
	*raft.InmemTransport
	stall       atomic.Bool
	ignoreClose bool
	stalled     chan struct{} // closed when the first call blocks
	closed      chan struct{} // closed by Close
	release     chan struct{} // closed when the test ends
	once        sync.Once
	stallOnce   sync.Once
}

func newStallingTransport(addr raft.ServerAddress, ignoreClose bool) *stallingTransport {
	_, in := raft.NewInmemTransport(addr)
	return &stallingTransport{InmemTransport: in, ignoreClose: ignoreClose,
		stalled: make(chan struct{}), closed: make(chan struct{}), release: make(chan struct{})}
}

func (s *stallingTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if !s.stall.Load() {
		return s.InmemTransport.AppendEntries(id, target, args, resp)
	}
	s.stallOnce.Do(func() { close(s.stalled) })
	closed := s.closed
	if s.ignoreClose {
		closed = nil
	}
	select {
	case <-closed:
	case <-s.release:
	}
	return errors.New("transport closed")
}

// AppendEntriesPipeline is refused, so that replication and heartbeats
// both go through AppendEntries.
func (s *stallingTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (s *stallingTransport) Close() error {
	s.once.Do(func() { close(s.closed) })
	return s.InmemTransport.Close()
}

// TestCloseUnblocksAStuckShutdown stalls the leader's calls to its
// followers and closes it: raft's shutdown waits for those calls, so Close
// closes the transport under them after the grace and returns; a transport
// whose close does not help makes Close give up with ErrShutdownStuck
// instead of hanging (a CI run once hung 20 minutes in a stop).
func TestCloseUnblocksAStuckShutdown(t *testing.T) {
	const grace = 200 * time.Millisecond
	for _, tc := range []struct {
		name        string
		ignoreClose bool
		wantErr     error
		minWait     time.Duration
	}{
		{name: "closing the transport frees it", minWait: grace},
		{name: "stuck for good", ignoreClose: true, wantErr: ErrShutdownStuck, minWait: 2 * grace},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ps := peers(3)
			trans := make([]*stallingTransport, len(ps))
			for i, p := range ps {
				trans[i] = newStallingTransport(raftAddress(p), tc.ignoreClose)
			}
			for _, a := range trans {
				for _, b := range trans {
					if a != b {
						a.Connect(b.LocalAddr(), b.InmemTransport)
					}
				}
			}
			var ns []*Node
			for i, p := range ps {
				n, err := New(testConfig(p.ID, ps, ""), nil, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), trans[i])
				if err != nil {
					t.Fatal(err)
				}
				ns = append(ns, n)
			}
			l := leaderOf(t, ns, nil)
			var lt *stallingTransport
			for i, n := range ns {
				if n == l {
					lt = trans[i]
				}
			}
			t.Cleanup(func() {
				close(lt.release) // the abandoned goroutines end, for goleak
				for _, n := range ns {
					_ = n.Close()
				}
			})
			lt.stall.Store(true)
			select {
			case <-lt.stalled:
			case <-time.After(30 * time.Second):
				t.Fatal("the leader sent no AppendEntries in 30 s")
			}
			l.grace = grace
			start := time.Now()
			err := l.Close()
			took := time.Since(start)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("Close = %v, want %v", err, tc.wantErr)
			}
			if took < tc.minWait || took > tc.minWait+10*time.Second {
				t.Errorf("Close took %s, want %s (the grace it waits) and not much more", took, tc.minWait)
			}
		})
	}
}
