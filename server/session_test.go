package server

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// fakeSessionStream is a session's stream whose Send calls send; its
// other methods are those of a nil stream (unused here).
type fakeSessionStream struct {
	grpc.BidiStreamingServer[pb.SiteMessage, pb.CoordinatorMessage]
	send func(*pb.CoordinatorMessage) error
}

func (f fakeSessionStream) Send(m *pb.CoordinatorMessage) error { return f.send(m) }

// newTestConn is a siteConn whose sends go to send.
func newTestConn(send func(*pb.CoordinatorMessage) error) *siteConn {
	return &siteConn{
		name:    "site-a",
		stream:  fakeSessionStream{send: send},
		send:    make(chan *pb.CoordinatorMessage, 8),
		sendErr: make(chan error, 1),
		done:    make(chan struct{}),
	}
}

// queue is what sendTo does with a connected site's message.
func queue(conn *siteConn, taskID string) {
	conn.send <- &pb.CoordinatorMessage{Msg: &pb.CoordinatorMessage_Cancel{Cancel: &pb.CancelTask{TaskId: taskID}}}
	conn.kick()
}

// TestSessionSends: messages queued by several goroutines are all sent,
// each goroutine's in its order, by one sender at a time, and none runs
// once the session's sends are stopped.
func TestSessionSends(t *testing.T) {
	const producers, each = 4, 200
	var (
		mu      sync.Mutex
		got     = make(map[int][]int)
		running atomic.Int32
		most    atomic.Int32
		sent    int
		all     = make(chan struct{}) // closed at the last message
	)
	conn := newTestConn(func(m *pb.CoordinatorMessage) error {
		n := running.Add(1)
		defer running.Add(-1)
		if n > most.Load() {
			most.Store(n) // only a second sender could race here
		}
		mu.Lock()
		var p, i int
		if _, err := fmt.Sscanf(m.GetCancel().GetTaskId(), "%d-%d", &p, &i); err != nil {
			t.Errorf("task id %q: %v", m.GetCancel().GetTaskId(), err)
		}
		got[p] = append(got[p], i)
		if sent++; sent == producers*each {
			close(all)
		}
		mu.Unlock()
		return nil
	})
	var wg sync.WaitGroup
	for p := range producers {
		wg.Go(func() {
			for i := range each {
				queue(conn, fmt.Sprintf("%d-%d", p, i))
			}
		})
	}
	wg.Wait()
	<-all
	conn.stopSends()
	want := make(map[int][]int)
	for p := range producers {
		for i := range each {
			want[p] = append(want[p], i)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if diff := gocmp.Diff(want, got); diff != "" {
		t.Errorf("sent (-want +got):\n%s", diff)
	}
	if n := most.Load(); n != 1 {
		t.Errorf("concurrent sends: %d, want 1", n)
	}
	if conn.sending {
		t.Error("a sender runs after stopSends")
	}
	queue(conn, "9-9") // stopped: queued (the queue is empty), never sent
	if n := len(got); n != producers {
		t.Errorf("producers whose messages were sent after stopSends: %d, want %d", n, producers)
	}
}

// TestSessionSendFails: a failed send ends the sends: its error goes to
// sendErr, and later messages start no sender.
func TestSessionSendFails(t *testing.T) {
	broken := errors.New("stream broken")
	var (
		mu    sync.Mutex
		calls int
	)
	conn := newTestConn(func(*pb.CoordinatorMessage) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		return broken
	})
	queue(conn, "0-0")
	if err := <-conn.sendErr; !errors.Is(err, broken) {
		t.Errorf("sendErr = %v, want %v", err, broken)
	}
	queue(conn, "0-1")
	conn.stopSends()
	mu.Lock()
	defer mu.Unlock()
	if calls != 1 {
		t.Errorf("sends tried = %d, want 1 (none after the failed one)", calls)
	}
}
