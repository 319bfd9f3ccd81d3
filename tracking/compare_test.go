package tracking

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// logJob writes a job with a centralized arm and two federated arms, as
// the coordinator would, and returns the job run's ID.
func logJob(t testing.TB, s *SQLiteStore) string {
	t.Helper()
	ctx := context.Background()
	exp, err := s.EnsureExperiment(ctx, "fashion-mnist")
	if err != nil {
		t.Fatal(err)
	}
	job := mustCreateRun(t, s, CreateRun{ExperimentID: exp, Name: "fmnist-job", StartTime: ms(0)})
	arms := []struct {
		name, kind, method string
		acc                []float64
		perRound           map[string]float64
	}{
		{"centralized", KindCentralized, "estimated", []float64{0.80, 0.86, 0.88},
			map[string]float64{MetricRoundSeconds: 2, MetricEnergyJoules: 100, MetricCO2Grams: 0.01}},
		{"fedavg", KindFederated, "nvml-counter", []float64{0.70, 0.84, 0.83, 0.87},
			map[string]float64{MetricRoundSeconds: 1.5, MetricBytesSent: 1e6, MetricBytesReceived: 2e6, MetricEnergyJoules: 50, MetricCO2Grams: 0.005,
				MetricEvalEnergyJoules: 5, MetricWastedEnergyJoules: 1, MetricGPUUtilizationPercent: 40}},
		{"fedprox", KindFederated, "", []float64{0.60, 0.75},
			map[string]float64{MetricRoundSeconds: 1, MetricBytesSent: 5e5, MetricBytesReceived: 5e5}},
	}
	for i, a := range arms {
		tags := map[string]string{TagArm: a.name, TagKind: a.kind}
		if a.method != "" {
			tags[TagEnergyMethod] = a.method
		}
		arm := mustCreateRun(t, s, CreateRun{ExperimentID: exp, Name: a.name + "-run", ParentRunID: job.Info.RunID, StartTime: ms(int64(i + 1)), Tags: tags})
		var batch []Metric
		for step, acc := range a.acc {
			batch = append(batch, Metric{MetricTestAccuracy, acc, int64(100 + step), int64(step)})
			for k, v := range a.perRound {
				batch = append(batch, Metric{k, v, int64(100 + step), int64(step)})
			}
		}
		if err := s.LogBatch(ctx, arm.Info.RunID, batch, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	// A retried round: fedavg's round 1 logged again later with a new value.
	fedavg, _ := s.ChildRuns(ctx, job.Info.RunID)
	if err := s.LogBatch(ctx, fedavg[1].Info.RunID, []Metric{{MetricTestAccuracy, 0.85, 500, 1}, {MetricRoundSeconds, 2.5, 500, 1}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	// fedprox evaluates every other round: round 2 logs its seconds, no
	// accuracy; it still counts as a round.
	if err := s.LogBatch(ctx, fedavg[2].Info.RunID, []Metric{{MetricRoundSeconds, 1, 600, 2}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	return job.Info.RunID
}

func TestCompare(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	jobID := logJob(t, s)
	c, err := Compare(ctx, s, jobID)
	if err != nil {
		t.Fatalf("Compare = %v", err)
	}
	nan := math.NaN()
	hist := func(vals ...float64) []Metric {
		var h []Metric
		for i, v := range vals {
			h = append(h, Metric{MetricTestAccuracy, v, int64(100 + i), int64(i)})
		}
		return h
	}
	fedavgHist := hist(0.70, 0.85, 0.83, 0.87)
	fedavgHist[1].Timestamp = 500
	want := Comparison{JobRunID: jobID, Arms: []ArmSummary{
		{Name: "centralized", FinalAccuracy: 0.88, BestAccuracy: 0.88, Rounds: 2, WallSeconds: 6,
			BytesSent: nan, BytesReceived: nan, EnergyJoules: 300, EnergyMethod: "estimated", CO2Grams: 0.03,
			TrainEnergyJoules: nan, EvalEnergyJoules: nan, WastedEnergyJoules: nan, EnergyAboveIdle: nan, GPUUtilization: nan, DPEpsilon: nan,
			AccuracyHistory: hist(0.80, 0.86, 0.88)},
		{Name: "fedavg", Federated: true, FinalAccuracy: 0.87, BestAccuracy: 0.87, Rounds: 3, WallSeconds: 1.5*3 + 2.5,
			BytesSent: 4e6, BytesReceived: 8e6, EnergyJoules: 200, EnergyMethod: "nvml-counter", CO2Grams: 0.02,
			EvalEnergyJoules: 20, WastedEnergyJoules: 4, GPUUtilization: 40, TrainEnergyJoules: nan, EnergyAboveIdle: nan, DPEpsilon: nan,
			AccuracyHistory: fedavgHist},
		{Name: "fedprox", Federated: true, FinalAccuracy: 0.75, BestAccuracy: 0.75, Rounds: 2, WallSeconds: 3,
			BytesSent: 1e6, BytesReceived: 1e6, EnergyJoules: nan, CO2Grams: nan,
			TrainEnergyJoules: nan, EvalEnergyJoules: nan, WastedEnergyJoules: nan, EnergyAboveIdle: nan, GPUUtilization: nan, DPEpsilon: nan,
			AccuracyHistory: hist(0.60, 0.75)},
	}}
	for i := range want.Arms {
		want.Arms[i].RunID = c.Arms[i].RunID
	}
	if diff := cmp.Diff(want, c, cmpApprox); diff != "" {
		t.Errorf("Compare mismatch (-want +got):\n%s", diff)
	}

	var b strings.Builder
	if err := c.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	wantTable := `arm          kind         final acc  best acc  rounds  wall s  MB moved  energy J  energy method  eval J  wasted J  GPU %  acc/kJ  CO2 mg
centralized  centralized     0.8800    0.8800       2     6.0         -     300.0  estimated           -         -      -   2.933   30.00
fedavg       federated       0.8700    0.8700       3     7.0     12.00     200.0  nvml-counter     20.0       4.0     40   4.350   20.00
fedprox      federated       0.7500    0.7500       2     3.0      2.00         -  -                   -         -      -       -       -
`
	if diff := cmp.Diff(wantTable, b.String()); diff != "" {
		t.Errorf("WriteTable mismatch (-want +got):\n%s", diff)
	}
}

var cmpApprox = cmp.Comparer(func(a, b float64) bool {
	return a == b || math.IsNaN(a) && math.IsNaN(b) || math.Abs(a-b) <= 1e-9*math.Max(math.Abs(a), math.Abs(b))
})

func TestCompareErrors(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	if _, err := Compare(ctx, s, "0123456789abcdef0123456789abcdef"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Compare(missing job) = %v, want ErrNotFound", err)
	}
	lone := mustCreateRun(t, s, CreateRun{}).Info.RunID
	c, err := Compare(ctx, s, lone)
	if err != nil || len(c.Arms) != 0 {
		t.Errorf("Compare(job without arms) = %+v, %v; want no arms", c, err)
	}
	var b strings.Builder
	if err := c.WriteTable(&b); err != nil || !strings.HasPrefix(b.String(), "arm ") || strings.Count(b.String(), "\n") != 1 {
		t.Errorf("WriteTable(no arms) = %q, %v; want the header alone", b.String(), err)
	}
	if err := c.WriteTable(errWriter{}); err == nil {
		t.Errorf("WriteTable(failing writer) = nil, want an error")
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }
