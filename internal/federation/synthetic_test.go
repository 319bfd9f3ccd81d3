package federation

import (
	"bytes"
	"context"
	"log/slog"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/prepare"
	"github.com/cohortfl/cohort/train"
)

const transferJob = `
name: transfer-tiny
seed: 11
tracking: {experiment: transfer}
data: {dataset: synthetic, synthetic: {samples_per_site: 40}}
model: {kind: transfer, params: 1000}
sites: {count: 3}
rounds: 2
arms:
  - {name: fedavg, strategy: fedavg}
deadline: {round: 1m}
`

// TestRunTransfer runs a transfer-only job through `cohort run`: the
// sites send the model back perturbed, the rounds commit, and no accuracy
// is reported, neither 0 nor any other.
func TestRunTransfer(t *testing.T) {
	var progress bytes.Buffer
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, []byte(transferJob), Options{DBPath: filepath.Join(t.TempDir(), "c.db"), Progress: &progress, Logger: log, Version: "test"})
	out := progress.String()
	t.Logf("progress:\n%s", out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if res.Job.GetState() != pb.JobState_JOB_STATE_SUCCEEDED || !res.Job.GetNoTestSet() {
		t.Errorf("job state %v, no_test_set %v; want succeeded, true", res.Job.GetState(), res.Job.GetNoTestSet())
	}
	if len(res.Comparison.Arms) != 1 {
		t.Fatalf("comparison has %d arms, want 1", len(res.Comparison.Arms))
	}
	a := res.Comparison.Arms[0]
	if a.Rounds != 2 || !math.IsNaN(a.FinalAccuracy) {
		t.Errorf("arm %s: %d rounds, final accuracy %v; want 2 rounds and none (NaN)", a.Name, a.Rounds, a.FinalAccuracy)
	}
	// Each round: 3 sites × 1,000 float32s out and back.
	if a.BytesSent < 2*3*4000 || a.BytesReceived < 2*3*4000 {
		t.Errorf("arm %s: %v bytes sent, %v received; want ≥ 24,000 each", a.Name, a.BytesSent, a.BytesReceived)
	}
	for _, want := range []string{"fedavg   2/2  sites 3  no accuracy", "arm fedavg done in", "no test set on the coordinator and no federated accuracy"} {
		if !strings.Contains(out, want) {
			t.Errorf("progress lacks %q", want)
		}
	}
	if strings.Contains(out, "accuracy 0.0000") || strings.Contains(out, "acc 0.0000") {
		t.Error("progress reports an accuracy of 0 for a job without one")
	}
	var table bytes.Buffer
	if err := res.Comparison.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(table.String(), "0.0000") {
		t.Errorf("comparison shows an accuracy of 0:\n%s", table.String())
	}
}

// TestSyntheticDeployedSameAsRun checks that a deployed site generates
// the same synthetic samples as `cohort run` gives that site, from the
// parameters the coordinator sends with its tasks.
func TestSyntheticDeployedSameAsRun(t *testing.T) {
	src := `
name: synth
seed: 5
data: {dataset: synthetic, test_fraction: 0.2, synthetic: {alpha: 0.5, beta: 0.5, samples_per_site: 0}}
model: {kind: logreg}
sites: {names: [kit, unibo, charite]}
rounds: 1
arms: [{name: fedavg, strategy: fedavg}]
`
	spec, err := job.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	run, err := Load(ctx, spec, "")
	if err != nil {
		t.Fatal(err)
	}
	// The coordinator's model spec, as it goes out with every task.
	prep, err := (&prepare.CoordinatorModels{Trainers: &train.Factory{}}).Prepare(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	task := &pb.Task{Kind: pb.TaskKind_TASK_KIND_TRAIN, Dataset: job.DatasetSynthetic, Model: prep.Spec}
	same := func(a, b *data.Dataset) bool {
		return a.N == b.N && a.Features == b.Features && slices.Equal(a.X, b.X) && slices.Equal(a.Y, b.Y)
	}
	var pooledTest int
	for _, name := range spec.Sites.Names {
		want := run.Sites[name]
		got := &client.LocalData{Site: name}
		tr, te, err := got.LoadTask(ctx, task)
		if err != nil {
			t.Fatalf("site %s: LoadTask: %v", name, err)
		}
		if !same(tr, want.Train) || !same(te, want.Test) {
			t.Errorf("site %s: deployed data (%d train, %d test) differs from cohort run's (%d, %d)", name, tr.N, te.N, want.Train.N, want.Test.N)
		}
		if te.N == 0 || tr.N < 3*te.N {
			t.Errorf("site %s: %d train, %d test samples; want a 0.2 test split", name, tr.N, te.N)
		}
		pooledTest += te.N
	}
	if a, b := run.Sites["kit"].Train, run.Sites["unibo"].Train; slices.Equal(a.Y, b.Y) && slices.Equal(a.X, b.X) {
		t.Error("sites kit and unibo hold the same samples")
	}
	// The deployed coordinator's test set is cohort run's: every site's
	// test split.
	if prep.Evaluator == nil {
		t.Fatal("deployed coordinator of a synthetic job has no evaluator, want its own test set")
	}
	runPrep, err := (&prepare.Models{Trainers: &train.Factory{}, Test: run.Test, Shape: []int{spec.Data.Synthetic.Dim}, Classes: spec.Data.Synthetic.Classes}).Prepare(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	got, err := prep.Evaluator.Evaluate(ctx, prep.Initial)
	if err != nil {
		t.Fatal(err)
	}
	want, err := runPrep.Evaluator.Evaluate(ctx, prep.Initial)
	if err != nil {
		t.Fatal(err)
	}
	if got.NumSamples != int64(pooledTest) || got.NumSamples != want.NumSamples || got.Loss != want.Loss || got.Accuracy != want.Accuracy {
		t.Errorf("deployed coordinator evaluates on %d samples (loss %v, accuracy %v), cohort run on %d (%v, %v); want the same %d", got.NumSamples, got.Loss, got.Accuracy, want.NumSamples, want.Loss, want.Accuracy, pooledTest)
	}

	// Bad input: a coordinator that sends no parameters, a site without a name.
	for _, tc := range []struct {
		name string
		l    *client.LocalData
		task *pb.Task
		want string
	}{
		{"old coordinator", &client.LocalData{Site: "kit"}, &pb.Task{Dataset: job.DatasetSynthetic, Model: &pb.ModelSpec{Kind: "logreg"}}, "upgrade the coordinator"},
		{"no site name", &client.LocalData{}, task, "set name in site.yaml"},
		{"bad parameters", &client.LocalData{Site: "kit"}, &pb.Task{Dataset: job.DatasetSynthetic, Model: &pb.ModelSpec{SyntheticData: &pb.SyntheticData{Alpha: -1}}}, "alpha -1 must be ≥ 0"},
	} {
		if _, _, err := tc.l.LoadTask(ctx, tc.task); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: LoadTask() = %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
}

// TestPrinterSaysTrackingIncomplete: a job whose tracking dropped events
// says so in the progress lines (cohort run, submit --watch, status -f).
func TestPrinterSaysTrackingIncomplete(t *testing.T) {
	var out bytes.Buffer
	p := &printer{out: &out, started: time.Now(), armStart: time.Now()}
	const msg = "the tracker fell behind and 7 round events were not recorded"
	p.event(&pb.JobEvent{Kind: "tracking_incomplete", Message: msg})
	if !strings.Contains(out.String(), msg) {
		t.Errorf("printed %q, want the tracking_incomplete message", out.String())
	}
}

// TestPrinterAccuracy checks the progress lines with and without a test
// set on the coordinator.
func TestPrinterAccuracy(t *testing.T) {
	tests := []struct {
		name    string
		kind    string
		metrics map[string]float64
		want    string
	}{
		{"round, test set", "round_committed", map[string]float64{"test_accuracy": 0.8123, "test_loss": 0.5, "sites": 3}, "acc 0.8123  loss 0.5000"},
		{"round, federated only", "round_committed", map[string]float64{"federated_accuracy": 0.7, "sites": 3}, "federated acc 0.7000"},
		{"round, none", "round_committed", map[string]float64{"sites": 3}, "sites 3  no accuracy"},
		{"arm, test set", "arm_finished", map[string]float64{"test_accuracy": 0.8123, "wall_seconds": 2}, "arm a done in 2.0s: accuracy 0.8123"},
		{"arm, zero is a result", "arm_finished", map[string]float64{"test_accuracy": 0, "wall_seconds": 2}, "accuracy 0.0000"},
		{"arm, federated only", "arm_finished", map[string]float64{"federated_accuracy": 0.7, "wall_seconds": 2}, "no test set on the coordinator; federated accuracy 0.7000"},
		{"arm, none", "arm_finished", map[string]float64{"wall_seconds": 2}, "no test set on the coordinator and no federated accuracy"},
	}
	for _, tc := range tests {
		var out bytes.Buffer
		p := &printer{out: &out, started: time.Now(), armStart: time.Now()}
		p.event(&pb.JobEvent{Kind: tc.kind, Arm: "a", Round: 1, Rounds: 2, Metrics: tc.metrics})
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("%s: printed %q, want it to contain %q", tc.name, out.String(), tc.want)
		}
		if tc.metrics["test_accuracy"] == 0 && tc.name != "arm, zero is a result" && strings.Contains(out.String(), "0.0000") {
			t.Errorf("%s: printed %q, an accuracy of 0 that was never measured", tc.name, out.String())
		}
	}
}
