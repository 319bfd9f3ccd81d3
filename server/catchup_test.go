package server

import (
	"context"
	"fmt"
	"io"
	"testing"
	"time"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// gatedArtifacts is a SQLite store whose LogArtifact calls (one a site's
// update, for its energy report) each wait for a value on gate: a tracker
// that writes as fast as the test lets it.
type gatedArtifacts struct {
	plainTracker
	gate <-chan struct{}
}

func (g gatedArtifacts) LogArtifact(ctx context.Context, runID, relPath string, r io.Reader) error {
	select {
	case <-g.gate:
	case <-ctx.Done():
		return ctx.Err()
	}
	return g.plainTracker.LogArtifact(ctx, runID, relPath, r)
}

// behind publishes a round whose sites' updates each make one gated
// tracker call.
func behind(r *recorder, sites int) {
	r.publish(JobStarted{Experiment: "e"})
	r.publish(ArmStarted{Arm: "fedavg", Kind: tracking.KindFederated, Rounds: 2})
	r.publish(RoundStarted{Arm: "fedavg", Round: 1, Rounds: 2, Attempt: 1})
	for i := range sites {
		r.publish(UpdateAccepted{Arm: "fedavg", Round: 1, Site: fmt.Sprintf("site-%d", i), NumSamples: 1,
			Energy: &pb.EnergyReport{Method: "estimated", Json: []byte(`{}`)}})
	}
}

// TestCatchUpWaitsForAWritingTracker: the next round waits while more
// than a round's events are queued and the tracker keeps writing, and
// returns once they are down to a round's, for each of two waiters on
// the same recorder (a job's arms run one after another today, but
// catchUp does not count on it); nothing is dropped.
func TestCatchUpWaitsForAWritingTracker(t *testing.T) {
	const sites = 16
	gate := make(chan struct{})
	r, _ := newTestRecorder(t, gatedArtifacts{plainTracker{openStore(t)}, gate}, Config{RecordQueue: 20})
	below := r.roundBacklog() // 10: half the queue's bound
	behind(r, sites)
	if n := r.backlog.Load(); n <= below {
		t.Fatalf("backlog %d, want more than %d for this test", n, below)
	}
	const arms = 2
	done := make(chan int64)
	for range arms {
		go func() {
			r.catchUp(context.Background(), below, time.Hour) // only the backlog ends it
			done <- r.backlog.Load()                          // no event is published after: it only falls
		}()
	}
	ticks := 0
	watchdog := time.After(time.Minute)
	for returned := 0; returned < arms; {
		select {
		case gate <- struct{}{}:
			ticks++
		case left := <-done:
			returned++
			if left > below {
				t.Fatalf("catchUp returned with %d events queued, want at most %d", left, below)
			}
		case <-watchdog:
			t.Fatalf("%d of %d waiting arms went on within a minute of %d writes", returned, arms, ticks)
		}
	}
	if ticks < sites-int(below) {
		t.Errorf("catchUp returned after %d writes, want at least %d", ticks, sites-int(below))
	}
	stop := make(chan struct{})
	defer close(stop)
	go func() {
		for {
			select {
			case gate <- struct{}{}:
			case <-stop:
				return
			}
		}
	}()
	r.publish(RoundClosed{Arm: "fedavg", Round: 1, Rounds: 2})
	r.publish(JobFinished{Interrupted: true})
	r.finish(time.Minute)
	if n := r.droppedCount(); n != 0 {
		t.Errorf("dropped %d events, want none", n)
	}
}

// TestCatchUpGoesOnPastAStalledTracker: a tracker that writes nothing for
// the stall period holds the round no longer, nor does an ended context.
func TestCatchUpGoesOnPastAStalledTracker(t *testing.T) {
	const stall = 100 * time.Millisecond
	gate := make(chan struct{}) // never given: the tracker is stuck
	r, _ := newTestRecorder(t, gatedArtifacts{plainTracker{openStore(t)}, gate}, Config{RecordQueue: 20})
	below := r.roundBacklog()
	behind(r, 16)
	began := time.Now()
	waited := r.catchUp(context.Background(), below, stall)
	if took := time.Since(began); waited < stall || took > 50*stall {
		t.Errorf("catchUp waited %v (took %v) for a stalled tracker, want one stall period (%v)", waited, took, stall)
	}
	if n := r.backlog.Load(); n <= below {
		t.Errorf("backlog %d after a stalled catchUp, want still over %d", n, below)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if waited := r.catchUp(ctx, below, time.Hour); waited > time.Minute {
		t.Errorf("catchUp waited %v with its context ended", waited)
	}
	r.finish(10 * time.Millisecond) // cancels the stuck call
}
