package client

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

func notLeader(t *testing.T, leader string) error {
	t.Helper()
	md := map[string]string{}
	if leader != "" {
		md[pb.LeaderAddressKey] = leader
	}
	st, err := status.New(codes.Unavailable, "not the leader").WithDetails(&errdetails.ErrorInfo{Reason: pb.NotLeaderReason, Domain: pb.ErrorDomain, Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Errorf("joining: %w", st.Err())
}

// TestNextTarget: a follower's leader hint sends the site to the leader
// (when the site lists it) with a short wait; other errors go round the
// list.
func TestNextTarget(t *testing.T) {
	a := &Agent{cfg: Config{Targets: []string{"a:1", "b:1", "c:1"}}, log: slog.New(slog.DiscardHandler)}
	tests := []struct {
		name       string
		i          int
		err        error
		want       int
		wantHinted bool
	}{
		{"leader named", 0, notLeader(t, "c:1"), 2, true},
		{"leader named is the next", 1, notLeader(t, "c:1"), 2, true},
		{"no leader yet", 2, notLeader(t, ""), 0, true},
		{"leader not listed", 0, notLeader(t, "d:1"), 1, true},
		{"connection refused", 1, status.Error(codes.Unavailable, "connection refused"), 2, false},
		{"plain error", 2, errors.New("coordinator closed the session"), 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, hinted := a.nextTarget(tt.i, tt.err)
			if got != tt.want || hinted != tt.wantHinted {
				t.Errorf("nextTarget(%d, %v) = %d, %v; want %d, %v", tt.i, tt.err, got, hinted, tt.want, tt.wantHinted)
			}
		})
	}
}

// stopper is a trainer whose persistent workers can be stopped; it records
// which.
type stopper struct {
	train.Trainer
	stopped chan string
}

func (s stopper) StopWorker(key string) { s.stopped <- key }

// TestRetireFinishedArmWorker: when a job's next arm reaches a site, the
// previous arm's persistent worker is stopped, once; a task of the same arm
// or of another job stops nothing.
func TestRetireFinishedArmWorker(t *testing.T) {
	a := &Agent{cfg: Config{Name: "kit"}}
	s := stopper{stopped: make(chan string, 8)}
	for _, task := range []*pb.Task{
		{JobId: "j1", Arm: "centralized"},
		{JobId: "j1", Arm: "centralized"},
		{JobId: "j2", Arm: "fedavg"},
		{JobId: "j1", Arm: "fedavg"},
		{JobId: "j1", Arm: "fedavg"},
		{JobId: "j1", Arm: "fedprox"},
	} {
		a.retire(s, task)
	}
	a.wg.Wait()
	close(s.stopped)
	var got []string
	for k := range s.stopped {
		got = append(got, k)
	}
	slices.Sort(got)
	if want := []string{"kit/j1/centralized", "kit/j1/fedavg"}; !slices.Equal(got, want) {
		t.Errorf("workers stopped = %v, want %v", got, want)
	}
}
