package client

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// sentStream is a session stream that keeps what is sent on it, and fails
// sends once failing is set.
type sentStream struct {
	grpc.BidiStreamingClient[pb.SiteMessage, pb.CoordinatorMessage]
	mu      sync.Mutex
	sent    []*pb.SiteMessage
	failing atomic.Bool
}

func (s *sentStream) Send(m *pb.SiteMessage) error {
	if s.failing.Load() {
		return errors.New("stream broken")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sent = append(s.sent, m)
	return nil
}

// TestHeartbeatsOnlyWhenQuiet drives a session's heartbeats with ticks of
// its own: a tick within half an interval of the last message sends
// nothing, one past it a heartbeat with the running tasks, an idle site
// beats at every tick, and a failed send ends the heartbeats.
func TestHeartbeatsOnlyWhenQuiet(t *testing.T) {
	const every = 10 * time.Second
	t0 := time.Unix(1_000_000, 0)
	stream := &sentStream{}
	s := newSession(stream)
	s.beat = every
	ticks := make(chan time.Time)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.heartbeats(context.Background(), ticks, func() []string { return []string{"task-1"} })
	}()
	// tick hands the loop a tick at t0+d and returns once it is handled:
	// the same tick again is taken only then, and sends nothing (the
	// session was either just beaten at that time or quiet for less
	// than half an interval).
	tick := func(d time.Duration) {
		ticks <- t0.Add(d)
		ticks <- t0.Add(d)
	}
	result := func(d time.Duration) {
		s.now = func() time.Time { return t0.Add(d) } // the loop reads no clock
		if err := s.send(&pb.SiteMessage{Msg: &pb.SiteMessage_Result{Result: &pb.TaskResult{TaskId: "task-0"}}}); err != nil {
			t.Fatal(err)
		}
	}

	result(0)
	tick(4 * time.Second)  // 4 s after the result: nothing
	tick(6 * time.Second)  // beats
	tick(16 * time.Second) // idle: beats
	result(20 * time.Second)
	tick(24 * time.Second) // 4 s after the result: nothing
	// The stream breaks: the next heartbeat fails and ends the loop.
	stream.failing.Store(true)
	ticks <- t0.Add(40 * time.Second)
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("heartbeats went on after a send failed")
	}

	var got []string
	for _, m := range stream.sent {
		switch msg := m.Msg.(type) {
		case *pb.SiteMessage_Result:
			got = append(got, "result")
		case *pb.SiteMessage_Heartbeat:
			got = append(got, time.UnixMilli(msg.Heartbeat.GetUnixMs()).Sub(t0).String())
			if r := msg.Heartbeat.GetRunningTasks(); len(r) != 1 || r[0] != "task-1" {
				t.Errorf("heartbeat's running tasks = %q, want [task-1]", r)
			}
		}
	}
	want := []string{"result", "6s", "16s", "result"}
	if len(got) != len(want) {
		t.Fatalf("sent %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sent %q, want %q", got, want)
		}
	}
}

// TestProgressFollowsTheHeartbeat: a training site's progress goes at
// most every heartbeat interval the coordinator gave, unless the site's
// Config sets its own, and never before an interval into the task.
func TestProgressFollowsTheHeartbeat(t *testing.T) {
	t0 := time.Unix(1_000_000, 0)
	calls := []time.Duration{time.Second, 3 * time.Second, 6 * time.Second, 8 * time.Second, 12 * time.Second} // into the task
	for _, c := range []struct {
		name     string
		interval time.Duration // Config.ProgressInterval
		want     []time.Duration
	}{
		{"the heartbeat's 5s", 0, []time.Duration{6 * time.Second, 12 * time.Second}},
		{"the site's own 1s", time.Second, calls},
	} {
		t.Run(c.name, func(t *testing.T) {
			stream := &sentStream{}
			s := newSession(stream)
			s.beat = 5 * time.Second
			var clock time.Duration
			s.now = func() time.Time { return t0.Add(clock) }
			a := &Agent{cfg: Config{ProgressInterval: c.interval}}
			cfg := a.taskTrainConfig(s, &pb.Task{TaskId: "task-1", Train: &pb.TrainParams{Epochs: 2}})
			for i, d := range calls {
				clock = d
				cfg.Progress(1, i, 10, float64(i))
			}
			var got []time.Duration
			for _, m := range stream.sent {
				p := m.GetProgress()
				if p == nil || p.GetTaskId() != "task-1" || p.GetBatches() != 10 || p.GetLoss() != float64(p.GetBatch()) {
					t.Fatalf("sent %v, want task-1's progress", m)
				}
				got = append(got, calls[p.GetBatch()])
			}
			if len(got) != len(c.want) {
				t.Fatalf("progress at %v, want %v", got, c.want)
			}
			for i := range got {
				if got[i] != c.want[i] {
					t.Fatalf("progress at %v, want %v", got, c.want)
				}
			}
		})
	}
}
