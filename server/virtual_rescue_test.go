package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/server/round"
)

// TestVirtualRescueHelper: a dead worker's slice goes to the surviving
// worker with the fewest extra slices, the first in name order among
// equals, and to none when every worker has failed.
func TestVirtualRescueHelper(t *testing.T) {
	workers := []string{"worker-1", "worker-2", "worker-3"}
	tests := []struct {
		name  string
		dead  []string
		extra map[string]int
		want  string
	}{
		{"first in name order", []string{"worker-2"}, nil, "worker-1"},
		{"first dead", []string{"worker-1"}, nil, "worker-2"},
		{"least loaded", []string{"worker-3"}, map[string]int{"worker-1": 1}, "worker-2"},
		{"loaded but alone", []string{"worker-1", "worker-3"}, map[string]int{"worker-2": 2}, "worker-2"},
		{"equal loads", nil, map[string]int{"worker-1": 1, "worker-2": 1, "worker-3": 1}, "worker-1"},
		{"every worker dead", workers, nil, ""},
	}
	for _, tt := range tests {
		var v virtualRescue
		v.init()
		for _, w := range tt.dead {
			v.dead[w] = "gone"
		}
		for w, n := range tt.extra {
			v.extra[w] = n
		}
		if got := v.helper(workers); got != tt.want {
			t.Errorf("%s: helper() = %q, want %q", tt.name, got, tt.want)
		}
	}
}

// TestVirtualFailure: a round that failed because no worker was left
// keeps its state machine's error (retries still see a quorum failure)
// and says which workers failed, why, and what to do.
func TestVirtualFailure(t *testing.T) {
	var v virtualRescue
	v.init()
	v.dead["worker-2"] = "disconnected: site disconnected"
	v.dead["worker-1"] = "training: the worker died"
	x := &roundExec{virt: v}
	quorum := fmt.Errorf("round 1: at most 2 of the 3 updates needed can still arrive: %w", round.ErrQuorumUnreachable)
	if got := x.virtualFailure(quorum); got != quorum {
		t.Errorf("virtualFailure() with every slice placed = %v, want the round's error unchanged", got)
	}
	x.virt.lost = "no worker is left to train worker-2's slice of 3 virtual clients: every worker of round 1 failed (" +
		x.virt.deadList([]string{"worker-2", "worker-1"}) + ")"
	err := x.virtualFailure(quorum)
	if !errors.Is(err, round.ErrQuorumUnreachable) || !retryable(err) {
		t.Errorf("virtualFailure() = %v, want it to wrap round.ErrQuorumUnreachable", err)
	}
	want := "every worker of round 1 failed (worker-1: training: the worker died; worker-2: disconnected: site disconnected)"
	if !strings.Contains(err.Error(), want) {
		t.Errorf("virtualFailure() = %q, want it to contain %q", err, want)
	}
}
