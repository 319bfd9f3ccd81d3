package server

import (
	"context"
	"math"
	"testing"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// TestMedianResistsAHijackingSite: one of four sites sends the negated
// global model and claims 2^40 samples. FedAvg with its defences switched
// off follows it; the median arm
// ends where the three honest sites take it, each round adding 1 to every
// weight (the fake evaluation's accuracy is the mean weight).
func TestMedianResistsAHijackingSite(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	negate := func(_ *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		w := g.Clone()
		for i := range w.Tensors {
			for j := range w.Tensors[i].Data {
				w.Tensors[i].Data[j] = -w.Tensors[i].Data[j]
			}
		}
		return w, 1 << 40, nil
	}
	for _, s := range []*fakeSite{
		{name: "site-1", update: plusOne(100)},
		{name: "site-2", update: plusOne(300)},
		{name: "site-3", update: plusOne(50)},
		{name: "site-4", update: negate},
	} {
		c.startSite(t, ctx, s)
	}
	j := submit(t, c, `
name: hijack
seed: 1
data: {dataset: fashion-mnist, path: /nonexistent}
model: {kind: logreg}
sites: {count: 4}
rounds: 3
deadline: {round: 30s}
arms:
  - {name: fedavg, strategy: {name: fedavg, max_weight_fraction: 1, clip: off}}
  - {name: median, strategy: median}
`)
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state = %v (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	cmp, err := tracking.Compare(context.Background(), c.store, got.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	final := map[string]float64{}
	for _, a := range cmp.Arms {
		final[a.Name] = a.FinalAccuracy
	}
	t.Logf("final mean weight per arm: %v", final)
	// Median of (−g, g+1, g+1, g+1) is g+1: 3 after 3 rounds from 0.
	if got := final["median"]; math.Abs(got-3) > 1e-6 {
		t.Errorf("median arm's final mean weight = %v, want 3, the clean result", got)
	}
	// FedAvg weights the attacker 2^40 to 450: the model stays at ≈ −g = 0.
	if got := final["fedavg"]; math.Abs(got) > 1e-3 {
		t.Errorf("fedavg arm's final mean weight = %v, want ≈ 0: the hijacking site should have taken it over", got)
	}
}
