package server

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/server/ha"
)

// resolvingTracker resolves placeholders "p-X" to "X"; "p-lost" never
// resolves (its server stays away).
type resolvingTracker struct{ Tracker }

func (resolvingTracker) ResolveID(_ context.Context, id string) (string, error) {
	switch {
	case id == "p-lost":
		return "", errors.New("server unreachable")
	case strings.HasPrefix(id, "p-"):
		return strings.TrimPrefix(id, "p-"), nil
	}
	return id, nil
}

func TestReplicatedRunIDsAreResolved(t *testing.T) {
	c := &Coordinator{log: slog.New(slog.DiscardHandler)}
	j := &jobRun{id: "j", tracker: resolvingTracker{}}
	got := c.resolveRunIDs(context.Background(), j, ha.RunIDs{
		Experiment: "p-7", Job: "job1",
		Arms:  map[string]string{"fedavg": "p-a1", "fedprox": "p-lost"},
		Sites: map[string]map[string]string{"fedavg": {"kit": "p-s1", "unibo": "p-lost"}},
	})
	want := ha.RunIDs{
		Experiment: "7", Job: "job1",
		Arms:  map[string]string{"fedavg": "a1"},
		Sites: map[string]map[string]string{"fedavg": {"kit": "s1"}},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("resolved run IDs (-want +got):\n%s", d)
	}
}
