package server

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// plusK returns an update adding k to every weight, claiming n samples.
func plusK(k float32, n int64) func(*pb.Task, *model.Weights) (*model.Weights, int64, error) {
	return func(_ *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		w := g.Clone()
		for i := range w.Tensors {
			for j := range w.Tensors[i].Data {
				w.Tensors[i].Data[j] += k
			}
		}
		return w, n, nil
	}
}

// screenJob is a four-site FedAvg job of three rounds; %s is the arm's
// strategy mapping.
const screenJob = `
name: screen
seed: 1
data: {dataset: fashion-mnist, path: /nonexistent}
model: {kind: logreg}
sites: {count: 4, min_per_round: 3}
rounds: 3
deadline: {round: 30s}
arms:
  - {name: fedavg, strategy: %s}
`

// lineage declares n training samples of Fashion-MNIST, as a site does
// when it joins.
func lineage(n int64) *pb.Capabilities {
	return &pb.Capabilities{Lineage: []*pb.DatasetInfo{{Name: "fashion-mnist/train", Sha256: "ab", NumSamples: n}}}
}

// siteRuns returns the arm's site runs by site name.
func siteRuns(t *testing.T, c *cluster, jobRun string) map[string]tracking.Run {
	t.Helper()
	cmp, err := tracking.Compare(context.Background(), c.store, jobRun)
	if err != nil {
		t.Fatal(err)
	}
	runs, err := c.store.ChildRuns(context.Background(), cmp.Arms[0].RunID)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]tracking.Run{}
	for _, r := range runs {
		out[r.Info.RunName[len("fedavg/"):]] = r
	}
	return out
}

func lastMetric(t *testing.T, c *cluster, runID, key string) (float64, bool) {
	t.Helper()
	h, err := c.store.GetMetricHistory(context.Background(), runID, key)
	if err != nil || len(h) == 0 {
		return 0, false
	}
	return h[len(h)-1].Value, true
}

// TestScreening runs one attacker among three honest sites (each adding 1
// to every weight, 100 samples) through the coordinator's defences; the
// fake evaluation's accuracy is the mean weight, 3 after three clean
// rounds.
func TestScreening(t *testing.T) {
	tests := []struct {
		name     string
		strategy string
		attacker *fakeSite
		want     float64 // the final mean weight
		tag      string  // substring of the attacker's cohort.screened tag; "" none
		claimed  float64 // the attacker's samples_claimed metric; 0 none
		fraction float64 // the attacker's weight_fraction; 0 unchecked
	}{
		// A 100× norm bomb is refused: the rounds close with the others.
		{"norm bomb refused", "{name: fedavg}", &fakeSite{update: plusK(100, 100)}, 3, "refused: delta norm", 0, 0},
		// In clip mode its delta is scaled to 10 × the median: (1+1+1+10)/4.
		{"norm bomb clipped", "{name: fedavg, clip: {mode: clip}}", &fakeSite{update: plusK(100, 100)}, 3 * 13.0 / 4, "clipped: delta norm", 0, 0},
		// An absolute bound refuses what the adaptive one lets through.
		{"absolute bound", "{name: fedavg, clip: {norm: 5}}", &fakeSite{update: plusK(3, 100)}, 3, "over the bound 5", 0, 0},
		// A claim of 2^40 samples is capped at the 100 declared at join:
		// (3·1 + 2)/4 a round.
		{"claim capped at lineage", "{name: fedavg}", &fakeSite{update: plusK(2, 1<<40), caps: lineage(100)}, 3 * 5.0 / 4, "", 1 << 40, 0.25},
		// Without a declaration, max_weight_fraction caps it at half the
		// round's weight: (1 + 2)/2 a round.
		{"claim capped at fraction", "{name: fedavg}", &fakeSite{update: plusK(2, 1<<40)}, 3 * 1.5, "", 0, 0.5},
		// Switched off, the claim takes the model over.
		{"defences off", "{name: fedavg, max_weight_fraction: 1, clip: off}", &fakeSite{update: plusK(2, 1<<40)}, 6, "", 0, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for _, name := range []string{"site-1", "site-2", "site-3"} {
				c.startSite(t, ctx, &fakeSite{name: name, update: plusOne(100), caps: lineage(100)})
			}
			bad := tt.attacker
			bad.name, bad.results = "site-4", make(chan string, 10)
			c.startSite(t, ctx, bad)
			j := submit(t, c, fmt.Sprintf(screenJob, tt.strategy))
			got := waitJob(t, c, j.GetJobId())
			if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
				t.Fatalf("job state = %v (%s), want SUCCEEDED", got.GetState(), got.GetError())
			}
			w := c.models.last().Tensors[0].Data[0]
			if math.Abs(float64(w)-tt.want) > 1e-4*tt.want {
				t.Errorf("final weight = %v, want %v", w, tt.want)
			}
			runs := siteRuns(t, c, got.GetTrackingRunId())
			atk := runs["site-4"]
			tag, _ := atk.Data.Tag(TagScreened)
			switch {
			case tt.tag == "" && tag != "":
				t.Errorf("attacker's %s tag = %q, want none", TagScreened, tag)
			case tt.tag != "" && !contains(tag, tt.tag):
				t.Errorf("attacker's %s tag = %q, want it to say %q", TagScreened, tag, tt.tag)
			}
			if n, ok := lastMetric(t, c, atk.Info.RunID, MetricUpdateNorm); !ok || n <= 0 {
				t.Errorf("attacker's %s = %v (logged %v), want its delta norm", MetricUpdateNorm, n, ok)
			}
			if n, _ := lastMetric(t, c, atk.Info.RunID, MetricSamplesClaimed); n != tt.claimed {
				t.Errorf("attacker's %s = %v, want %v", MetricSamplesClaimed, n, tt.claimed)
			}
			if tt.fraction > 0 {
				if f, _ := lastMetric(t, c, atk.Info.RunID, MetricWeightFraction); math.Abs(f-tt.fraction) > 1e-9 {
					t.Errorf("attacker's %s = %v, want %v", MetricWeightFraction, f, tt.fraction)
				}
			}
			if tag, ok := runs["site-1"].Data.Tag(TagScreened); ok {
				t.Errorf("an honest site was screened: %q", tag)
			}
		})
	}
}

// TestScreeningDefaults: a job of three or more sites bounds influence
// unless it says otherwise.
func TestScreeningDefaults(t *testing.T) {
	spec, err := job.Parse([]byte(fmt.Sprintf(screenJob, "{name: fedavg}")))
	if err != nil {
		t.Fatal(err)
	}
	st := spec.Arms[0].Strategy
	if st.MaxWeightFraction != job.DefaultMaxWeightFraction || st.Clip.Mode != job.ClipReject || st.Clip.AdaptiveFactor != job.DefaultAdaptiveFactor {
		t.Errorf("defaults: max_weight_fraction %v, clip %+v; want %v and reject at %v× the median",
			st.MaxWeightFraction, st.Clip, job.DefaultMaxWeightFraction, job.DefaultAdaptiveFactor)
	}
}

// TestServerOptimizerAndDP: a fedavgm arm carries its momentum from round
// to round (hand-computed below), and a DP-FedAvg arm logs the ε it has
// spent, growing each round.
func TestServerOptimizerAndDP(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, name := range []string{"site-1", "site-2", "site-3", "site-4"} {
		c.startSite(t, ctx, &fakeSite{name: name, update: plusOne(100)})
	}
	j := submit(t, c, `
name: opt
seed: 1
data: {dataset: fashion-mnist, path: /nonexistent}
model: {kind: logreg}
sites: {count: 4}
rounds: 3
deadline: {round: 30s}
arms:
  - {name: fedavgm, strategy: {name: fedavgm, momentum: 0.5}}
  - {name: dp, strategy: {name: fedavg, dp: {clip: 100, noise_multiplier: 1}}}
`)
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state = %v (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	cmp, err := tracking.Compare(context.Background(), c.store, got.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	// Every pseudo-gradient is +1: momentum v = 1, 1.5, 1.75; weights 1,
	// 2.5, 4.25.
	if acc := cmp.Arms[0].FinalAccuracy; math.Abs(acc-4.25) > 1e-6 {
		t.Errorf("fedavgm's final mean weight = %v, want 4.25 (momentum carried over rounds)", acc)
	}
	h, err := c.store.GetMetricHistory(context.Background(), cmp.Arms[1].RunID, MetricDPEpsilon)
	if err != nil || len(h) != 3 {
		t.Fatalf("dp arm's %s history = %v (%v), want 3 rounds", MetricDPEpsilon, h, err)
	}
	var table strings.Builder
	if err := cmp.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if eps := cmp.Arms[1].DPEpsilon; eps != h[2].Value || !strings.Contains(table.String(), "DP ε") || !math.IsNaN(cmp.Arms[0].DPEpsilon) {
		t.Errorf("comparison: dp arm's ε %v (want %v), fedavgm's %v (want NaN), table:\n%s", eps, h[2].Value, cmp.Arms[0].DPEpsilon, table.String())
	}
	for i := 1; i < len(h); i++ {
		if !(h[i].Value > h[i-1].Value) || h[0].Value <= 0 {
			t.Errorf("%s per round = %v, want positive and growing", MetricDPEpsilon, h)
		}
	}
}

func TestServerStateTravelsWithTheModel(t *testing.T) {
	global := initialWeights()
	st, err := aggregators.New("fedadam", nil)
	if err != nil {
		t.Fatal(err)
	}
	if w := withState(global, st); w != global {
		t.Fatal("a strategy with no state yet should store the global model alone")
	}
	r, _ := st.Begin(global)
	u := global.Clone()
	u.Tensors[0].Data[0] = 1
	if err := r.Add(u, 1); err != nil {
		t.Fatal(err)
	}
	if _, _, err := r.Result(); err != nil {
		t.Fatal(err)
	}
	if err := st.(aggregators.Stateful).SetState(r.(aggregators.StatefulRound).NextState()); err != nil {
		t.Fatal(err)
	}
	g, state := splitState(withState(global, st))
	if len(g.Tensors) != len(global.Tensors) || state == nil || len(state.Tensors) != 2*len(global.Tensors) {
		t.Fatalf("split: %d global tensors and state %v", len(g.Tensors), state)
	}
	st2, _ := aggregators.New("fedadam", nil)
	a := &armRun{strategy: st2}
	if err := a.restoreState(state); err != nil {
		t.Fatal(err)
	}
	want, got := st.(aggregators.Stateful).State(), st2.(aggregators.Stateful).State()
	for i := range want.Tensors {
		for j, v := range want.Tensors[i].Data {
			if got.Tensors[i].Data[j] != v {
				t.Fatalf("restored state differs at %s[%d]: %v, want %v", want.Tensors[i].Name, j, got.Tensors[i].Data[j], v)
			}
		}
	}
	if err := (&armRun{strategy: &aggregators.FedAvg{}}).restoreState(state); err == nil {
		t.Error("restoring server state into fedavg, which keeps none, should fail")
	}
}

// TestNormSet keeps a round's norms sorted as sites report and report
// again, and the median over them is that of the values by site.
func TestNormSet(t *testing.T) {
	s := normSet{by: map[string]float64{}}
	steps := []struct {
		site   string
		v      float64
		median float64
	}{
		{"a", 3, 3},
		{"b", 1, 2},
		{"c", 2, 2},
		{"a", 0.5, 1},   // a replaces its 3
		{"d", 10, 1.5},  // 0.5 1 2 10
		{"b", 10, 6},    // 0.5 2 10 10
		{"c", 10, 10},   // 0.5 10 10 10
		{"e", 0.25, 10}, // 0.25 0.5 10 10 10
	}
	for i, st := range steps {
		s.set(st.site, st.v)
		if !slices.IsSorted(s.sorted) || len(s.sorted) != len(s.by) {
			t.Fatalf("step %d: sorted %v, by %v: want the values of by, ascending", i, s.sorted, s.by)
		}
		if m := medianSorted(s.sorted); m != st.median {
			t.Errorf("step %d (%s = %g): median %g, want %g", i, st.site, st.v, m, st.median)
		}
	}
}
