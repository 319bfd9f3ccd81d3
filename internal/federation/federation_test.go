package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/energy"
	"github.com/cohortfl/cohort/tracking"
)

// subset is the stratified Fashion-MNIST subset shipped in the repository.
var subset, _ = filepath.Abs("../../data/testdata/fmnist-subset")

const quickJob = `
name: e2e
seed: 7
tracking: {experiment: e2e}
data: {dataset: fashion-mnist, path: %q, partition: {kind: dirichlet, alpha: 1.0}}
model: {kind: mlp, hidden: [32]}
sites: {count: 3}
rounds: 2
train: {epochs: 1, batch_size: 32, lr: 0.05}
arms:
  - {name: centralized, centralized: {epochs: 2}}
  - {name: fedavg, strategy: fedavg}
  - {name: fedprox, strategy: {name: fedprox, mu: 0.1}}
deadline: {round: 2m}
`

// TestRunEndToEnd runs a real job: a coordinator on loopback TCP, three
// site agents and a pooled-data site, real training on the shipped
// subset, and the SQLite tracking store.
func TestRunEndToEnd(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "cohort.db")
	var progress bytes.Buffer
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := []byte(strings.Replace(quickJob, "%q", `"`+subset+`"`, 1))
	meter, err := energy.NewMeter(energy.Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	defer meter.Close()
	res, err := Run(ctx, src, Options{DBPath: db, Progress: &progress, Logger: log, Version: "test", Meter: client.EnergyMeter(meter)})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := len(res.Comparison.Arms); got != 3 {
		t.Fatalf("comparison has %d arms, want 3", got)
	}
	for _, a := range res.Comparison.Arms {
		if a.Rounds != 2 {
			t.Errorf("arm %s: %d rounds logged, want 2", a.Name, a.Rounds)
		}
		// 10 classes: chance is 0.1. Two passes over 5,400 images with a
		// small MLP reach well above 0.6 in every arm.
		if a.FinalAccuracy < 0.6 {
			t.Errorf("arm %s: final accuracy %.3f, want ≥ 0.6", a.Name, a.FinalAccuracy)
		}
		if !(a.TrainEnergyJoules > 0) || !(a.EvalEnergyJoules >= 0) || a.WastedEnergyJoules != 0 {
			t.Errorf("arm %s: train, eval, wasted energy = %v, %v, %v J; want > 0, ≥ 0, 0", a.Name, a.TrainEnergyJoules, a.EvalEnergyJoules, a.WastedEnergyJoules)
		}
		if a.Federated && !(a.BytesSent > 0 && a.BytesReceived > 0) {
			t.Errorf("arm %s: bytes sent %v received %v, want both > 0", a.Name, a.BytesSent, a.BytesReceived)
		}
	}
	for _, want := range []string{"arm centralized", "arm fedavg", "arm fedprox", "2/2"} {
		if !strings.Contains(progress.String(), want) {
			t.Errorf("progress output lacks %q", want)
		}
	}

	// The tracking file holds the whole tree: job → 3 arms → 3 sites under
	// each federated arm, each with 2 rounds of train_loss.
	store, err := tracking.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	jobRun, err := store.GetRun(context.Background(), res.Job.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	if jobRun.Info.Status != tracking.StatusFinished {
		t.Errorf("job run status = %s, want FINISHED", jobRun.Info.Status)
	}
	if v, ok := jobRun.Data.Param("train.lr"); !ok || v != "0.05" {
		t.Errorf("job run param train.lr = %q, %v; want 0.05", v, ok)
	}
	arms, _ := store.ChildRuns(context.Background(), jobRun.Info.RunID)
	for _, arm := range arms {
		sites, _ := store.ChildRuns(context.Background(), arm.Info.RunID)
		kind, _ := arm.Data.Tag(tracking.TagKind)
		want := 3
		if kind == tracking.KindCentralized {
			want = 1
		}
		// The strategy's client settings, as the sites trained with them.
		wantMu := map[string]string{"fedavg": "0", "fedprox": "0.1"}[arm.Info.RunName]
		if mu, ok := arm.Data.Param("mu"); mu != wantMu || ok != (kind == tracking.KindFederated) {
			t.Errorf("arm %s: param mu = %q (logged %v), want %q", arm.Info.RunName, mu, ok, wantMu)
		}
		if len(sites) != want {
			t.Errorf("arm %s has %d site runs, want %d", arm.Info.RunName, len(sites), want)
		}
		for _, s := range sites {
			h, _ := store.GetMetricHistory(context.Background(), s.Info.RunID, tracking.MetricTrainLoss)
			if len(h) != 2 {
				t.Errorf("site run %s: %d train_loss points, want 2", s.Info.RunName, len(h))
			}
			// Each task's timing, and (federated arms: sites evaluate the
			// model they received on their test split) the evaluation's
			// energy, measured apart from the training's.
			task, _ := store.GetMetricHistory(context.Background(), s.Info.RunID, tracking.MetricTaskSeconds)
			trainer, _ := store.GetMetricHistory(context.Background(), s.Info.RunID, tracking.MetricTrainerSeconds)
			if len(task) != 2 || len(trainer) != 2 || trainer[1].Value <= 0 || trainer[1].Value > task[1].Value {
				t.Errorf("site run %s: task_seconds %v, trainer_seconds %v; want 2 points each, 0 < trainer ≤ task", s.Info.RunName, task, trainer)
			}
			if kind == tracking.KindFederated {
				if ev, _ := store.GetMetricHistory(context.Background(), s.Info.RunID, tracking.MetricEvalEnergyJoules); len(ev) != 2 {
					t.Errorf("site run %s: %d eval_energy_joules points, want 2", s.Info.RunName, len(ev))
				}
			}
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "artifacts")); err != nil {
		t.Errorf("no artifacts folder beside the database: %v", err)
	}
	// Every site's energy report is kept per round; the estimate is there
	// even on a machine with nothing to measure.
	site := func() tracking.Run {
		for _, arm := range arms {
			if sites, _ := store.ChildRuns(context.Background(), arm.Info.RunID); len(sites) > 0 {
				return sites[0]
			}
		}
		t.Fatal("no site runs")
		return tracking.Run{}
	}()
	rc, err := store.OpenArtifact(context.Background(), site.Info.RunID, "energy/round-0001.json")
	if err != nil {
		t.Fatalf("energy report artifact: %v", err)
	}
	defer rc.Close()
	var rep struct {
		Seconds   float64 `json:"seconds"`
		Estimated struct {
			Method string `json:"method"`
		} `json:"estimated"`
	}
	if err := json.NewDecoder(rc).Decode(&rep); err != nil || rep.Estimated.Method != "estimated" || rep.Seconds <= 0 {
		t.Errorf("energy report = %+v, %v; want a window and an estimate", rep, err)
	}
}
