package server

import (
	"context"
	"math"
	"slices"
	"testing"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// gpuReport is a site's report of one task on one GPU: attributed joules,
// and the counter readings at the window's ends (in joules) and the
// window itself (in ms).
func gpuReport(uuid string, joules, from, to float64, startMs, endMs int64) *pb.EnergyReport {
	return &pb.EnergyReport{
		Seconds: float64(endMs-startMs) / 1000, Method: "measured", StartUnixMs: startMs, EndUnixMs: endMs,
		Gpus: []*pb.GPUEnergy{{Uuid: uuid, Joules: joules, DeviceJoules: to - from,
			CounterStartJoules: from, CounterEndJoules: to, UtilizationAvgPercent: 50}},
		Estimated: &pb.EnergyEstimate{Joules: 1},
	}
}

func near(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }

func TestEnergyTally(t *testing.T) {
	tests := []struct {
		name       string
		build      func(*energyTally)
		wantMethod string
		wantTotal  float64
		wantBy     [purposes]float64
		wantBusy   float64
	}{{
		// Four tasks of one meter overlapping on one GPU: their attributed
		// shares already sum to the union (here 0..1000 J), and add as is.
		name: "shares of one meter",
		build: func(t *energyTally) {
			t.addReport(purposeTrain, gpuReport("GPU-a", 400, 0, 1000, 1000, 11000))
			t.addReport(purposeTrain, gpuReport("GPU-a", 300, 100, 900, 2000, 10000))
			t.addReport(purposeTrain, gpuReport("GPU-a", 200, 200, 800, 3000, 9000))
			t.addReport(purposeWasted, gpuReport("GPU-a", 100, 300, 700, 4000, 8000))
		},
		wantMethod: methodMeasured, wantTotal: 1000, wantBy: [purposes]float64{900, 0, 100}, wantBusy: 10,
	}, {
		// Two site agents on one host, each alone on its meter: both report
		// the whole device over windows that overlap in counter space
		// (0..600 and 400..1000 of a device that spent 1000 J), so their
		// figures (600 + 600) are scaled to the union, 1000.
		name: "two meters on one GPU",
		build: func(t *energyTally) {
			t.addReport(purposeTrain, gpuReport("GPU-a", 600, 0, 600, 1000, 7000))
			t.addReport(purposeTrain, gpuReport("GPU-a", 600, 400, 1000, 5000, 11000))
		},
		wantMethod: methodMeasured, wantTotal: 1000, wantBy: [purposes]float64{1000, 0, 0}, wantBusy: 10,
	}, {
		name: "separate GPUs add",
		build: func(t *energyTally) {
			t.addReport(purposeTrain, gpuReport("GPU-a", 600, 0, 600, 1000, 7000))
			t.addReport(purposeEval, gpuReport("GPU-b", 600, 0, 600, 1000, 7000))
			t.addCoordinator(purposeTrain, 5, methodMeasured)
			t.addCoordinator(purposeTrain, 7, methodEstimated) // never mixed in
			t.alone = 2                                        // the coordinator's evaluation, after the tasks
		},
		wantMethod: methodMeasured, wantTotal: 1205, wantBy: [purposes]float64{605, 600, 0}, wantBusy: 8,
	}, {
		// One report without any measured figure makes the round estimated:
		// measured and estimated joules are never summed.
		name: "one site estimated",
		build: func(t *energyTally) {
			t.addReport(purposeTrain, gpuReport("GPU-a", 600, 0, 600, 1000, 7000))
			t.addReport(purposeWasted, &pb.EnergyReport{Method: "none", Estimated: &pb.EnergyEstimate{Joules: 3}})
			t.addCoordinator(purposeEval, 2, methodEstimated)
		},
		wantMethod: methodEstimated, wantTotal: 6, wantBy: [purposes]float64{1, 2, 3}, wantBusy: 6,
	}, {
		name: "a site without a meter",
		build: func(t *energyTally) {
			t.addReport(purposeTrain, gpuReport("GPU-a", 600, 0, 600, 1000, 7000))
			t.addReport(purposeTrain, nil)
		},
		wantMethod: methodEstimated, wantTotal: 1, wantBy: [purposes]float64{1, 0, 0}, wantBusy: 6,
	}, {
		// A failed attempt's work is carried into the next as wasted.
		name: "failed attempt carried",
		build: func(t *energyTally) {
			var failed energyTally
			failed.addReport(purposeTrain, gpuReport("GPU-a", 300, 0, 300, 1000, 4000))
			failed.addCoordinator(purposeEval, 10, methodMeasured)
			failed.wasteAll()
			t.merge(&failed)
			t.addReport(purposeTrain, gpuReport("GPU-a", 500, 300, 800, 4000, 9000))
		},
		wantMethod: methodMeasured, wantTotal: 810, wantBy: [purposes]float64{500, 0, 310}, wantBusy: 8,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var tally energyTally
			tt.build(&tally)
			got := tally.total()
			if got.Method != tt.wantMethod || !near(got.Total, tt.wantTotal) || !near(got.BusySeconds, tt.wantBusy) {
				t.Errorf("total() = %s %v J over %v s, want %s %v J over %v s", got.Method, got.Total, got.BusySeconds, tt.wantMethod, tt.wantTotal, tt.wantBusy)
			}
			for i := range purposes {
				if !near(got.ByPurpose[i], tt.wantBy[i]) {
					t.Errorf("total().ByPurpose[%d] = %v, want %v", i, got.ByPurpose[i], tt.wantBy[i])
				}
			}
		})
	}
}

func TestLateEnergyBounded(t *testing.T) {
	var l lateEnergy
	for range 1<<16 + 10 {
		l.add(&pb.EnergyReport{})
	}
	l.add(nil)
	if n := len(l.take()); n != 1<<16 {
		t.Errorf("late reports kept = %d, want %d", n, 1<<16)
	}
	if n := len(l.take()); n != 0 {
		t.Errorf("late reports after take = %d, want 0", n)
	}
}

// TestLateReportsCountInTheArm: a failure or an update that reaches the
// coordinator after its round closed is refused, and what it cost reaches
// the arm's collector of late reports (its next round counts it as
// wasted).
func TestLateReportsCountInTheArm(t *testing.T) {
	c := newCluster(t)
	var late lateEnergy
	c.coord.closeTasks([]string{"cut-task", "late-task"}, &late)

	c.coord.handleSiteMessage(&siteConn{name: "site-3"}, &pb.SiteMessage{Msg: &pb.SiteMessage_Failed{Failed: &pb.TaskFailed{
		TaskId: "cut-task", Reason: "cancelled", Energy: &pb.EnergyReport{Estimated: &pb.EnergyEstimate{Joules: 7}}}}})

	cli := pb.NewCoordinatorServiceClient(c.dial(t))
	err := pushHeader(context.Background(), cli, &pb.UpdateHeader{TaskId: "late-task", NumSamples: 1, TotalSize: 3,
		Energy: &pb.EnergyReport{Estimated: &pb.EnergyEstimate{Joules: 5}}, EvalEnergy: &pb.EnergyReport{Estimated: &pb.EnergyEstimate{Joules: 1}}}, []byte("abc"))
	if !contains(err.Error(), "round") {
		t.Errorf("late push = %v, want a stale-round refusal", err)
	}
	var sum float64
	for _, r := range late.take() {
		sum += r.GetEstimated().GetJoules()
	}
	if sum != 13 {
		t.Errorf("late reports hold %v J, want 7 + 5 + 1 = 13", sum)
	}
	c.coord.forgetClosed([]string{"cut-task", "late-task"})
	if c.coord.closedTask("cut-task").late != nil {
		t.Errorf("a forgotten task is still known")
	}
}

// TestCentralizedLRDecaysPerRoundEquivalent: with two local epochs a round,
// the centralized arm's four epochs train at the rates of rounds 1, 1, 2, 2
// — as the federated arms decay — not one decay per epoch.
func TestCentralizedLRDecaysPerRoundEquivalent(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lrs := make(chan float64, 16)
	record := func(task *pb.Task, g *model.Weights) (*model.Weights, int64, error) {
		lrs <- task.GetTrain().GetLr()
		return plusOne(10)(task, g)
	}
	c.startSite(t, ctx, &fakeSite{name: "pool", update: record, caps: &pb.Capabilities{Trainers: []string{pb.PooledDataTrainer}}})
	j := submit(t, c, `
name: lr
data: {dataset: fashion-mnist, path: /nonexistent}
model: {kind: logreg}
sites: {count: 1}
rounds: 2
train: {epochs: 2, lr: 1, lr_decay: 0.5}
arms: [{name: centralized, centralized: {}}]
`)
	if got := waitJob(t, c, j.GetJobId()); got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	close(lrs)
	var got []float64
	for lr := range lrs {
		got = append(got, lr)
	}
	if want := []float64{1, 1, 0.5, 0.5}; !slices.Equal(got, want) {
		t.Errorf("centralized epochs' lr = %v, want %v", got, want)
	}
}
