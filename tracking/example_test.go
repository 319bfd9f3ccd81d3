package tracking_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

// Logging a job as the coordinator does: a job run, an arm run nested under
// it, and a site run under the arm, with per-round metrics.
func Example() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "cohort-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := tracking.OpenSQLite(ctx, filepath.Join(dir, "cohort.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	exp, err := store.EnsureExperiment(ctx, "fashion-mnist")
	if err != nil {
		log.Fatal(err)
	}
	job, err := store.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "fmnist-fedavg"})
	if err != nil {
		log.Fatal(err)
	}
	arm, err := store.CreateRun(ctx, tracking.CreateRun{
		ExperimentID: exp,
		Name:         "fedavg",
		ParentRunID:  job.Info.RunID,
		Tags:         map[string]string{tracking.TagArm: "fedavg", tracking.TagKind: tracking.KindFederated},
	})
	if err != nil {
		log.Fatal(err)
	}
	site, err := store.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "kit", ParentRunID: arm.Info.RunID})
	if err != nil {
		log.Fatal(err)
	}
	now := time.Now().UnixMilli()
	for round := range int64(3) {
		err := store.LogBatch(ctx, arm.Info.RunID, []tracking.Metric{
			{Key: tracking.MetricTestAccuracy, Value: 0.7 + 0.05*float64(round), Timestamp: now, Step: round},
			{Key: tracking.MetricRoundSeconds, Value: 1.5, Timestamp: now, Step: round},
		}, nil, nil)
		if err != nil {
			log.Fatal(err)
		}
		if err := store.LogMetric(ctx, site.Info.RunID, tracking.Metric{Key: tracking.MetricTrainLoss, Value: 1 / float64(round+1), Timestamp: now, Step: round}); err != nil {
			log.Fatal(err)
		}
	}
	if err := store.UpdateRun(ctx, arm.Info.RunID, tracking.StatusFinished, time.Now(), ""); err != nil {
		log.Fatal(err)
	}

	arms, err := store.ChildRuns(ctx, job.Info.RunID)
	if err != nil {
		log.Fatal(err)
	}
	for _, a := range arms {
		acc, _ := a.Data.Metric(tracking.MetricTestAccuracy)
		fmt.Printf("%s %s: %s %.2f after %d rounds\n", a.Info.RunName, a.Info.Status, acc.Key, acc.Value, acc.Step+1)
	}
	sites, _ := store.ChildRuns(ctx, arm.Info.RunID)
	fmt.Println("sites under fedavg:", len(sites))
	// Output:
	// fedavg FINISHED: test_accuracy 0.80 after 3 rounds
	// sites under fedavg: 1
}

// Params are immutable: the same value again is fine, a new one is not.
func ExampleSQLiteStore_LogParam() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "cohort-example")
	defer os.RemoveAll(dir)
	store, err := tracking.OpenSQLite(ctx, filepath.Join(dir, "cohort.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	run, _ := store.CreateRun(ctx, tracking.CreateRun{Name: "baseline"})
	fmt.Println(store.LogParam(ctx, run.Info.RunID, tracking.Param{Key: "lr", Value: "0.05"}))
	fmt.Println(store.LogParam(ctx, run.Info.RunID, tracking.Param{Key: "lr", Value: "0.05"}))
	err = store.LogParam(ctx, run.Info.RunID, tracking.Param{Key: "lr", Value: "0.1"})
	fmt.Println(errors.Is(err, tracking.ErrParamConflict))
	// Output:
	// <nil>
	// <nil>
	// true
}

// Artifacts are files under the run's artifact URI; paths stay inside it.
func ExampleSQLiteStore_LogArtifact() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "cohort-example")
	defer os.RemoveAll(dir)
	store, err := tracking.OpenSQLite(ctx, filepath.Join(dir, "cohort.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	run, _ := store.CreateRun(ctx, tracking.CreateRun{})
	if err := store.LogArtifact(ctx, run.Info.RunID, "plots/comparison.txt", strings.NewReader("arm  final acc\n")); err != nil {
		log.Fatal(err)
	}
	files, _ := store.ListArtifacts(ctx, run.Info.RunID, "plots")
	for _, f := range files {
		fmt.Println(f.Path, f.FileSize)
	}
	err = store.LogArtifact(ctx, run.Info.RunID, "../escape.txt", strings.NewReader("no"))
	fmt.Println(errors.Is(err, tracking.ErrInvalid))
	// Output:
	// plots/comparison.txt 15
	// true
}

// Comparing the arms of a job: accuracy, time, bytes moved and energy.
func ExampleCompare() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "cohort-example")
	defer os.RemoveAll(dir)
	store, err := tracking.OpenSQLite(ctx, filepath.Join(dir, "cohort.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	job, _ := store.CreateRun(ctx, tracking.CreateRun{Name: "job", StartTime: time.UnixMilli(0)})
	for i, arm := range []struct {
		name, kind string
		acc        []float64
	}{
		{"centralized", tracking.KindCentralized, []float64{0.85, 0.88}},
		{"fedavg", tracking.KindFederated, []float64{0.80, 0.86, 0.87}},
	} {
		run, _ := store.CreateRun(ctx, tracking.CreateRun{
			Name: arm.name, ParentRunID: job.Info.RunID, StartTime: time.UnixMilli(int64(i + 1)),
			Tags: map[string]string{tracking.TagArm: arm.name, tracking.TagKind: arm.kind, tracking.TagEnergyMethod: "estimated"},
		})
		var ms []tracking.Metric
		for step, a := range arm.acc {
			ms = append(ms,
				tracking.Metric{Key: tracking.MetricTestAccuracy, Value: a, Step: int64(step)},
				tracking.Metric{Key: tracking.MetricRoundSeconds, Value: 2, Step: int64(step)},
				tracking.Metric{Key: tracking.MetricEnergyJoules, Value: 40, Step: int64(step)},
				tracking.Metric{Key: tracking.MetricCO2Grams, Value: 0.004, Step: int64(step)})
			if arm.kind == tracking.KindFederated {
				ms = append(ms, tracking.Metric{Key: tracking.MetricBytesSent, Value: 4e6, Step: int64(step)})
			}
		}
		if err := store.LogBatch(ctx, run.Info.RunID, ms, nil, nil); err != nil {
			log.Fatal(err)
		}
	}
	c, err := tracking.Compare(ctx, store, job.Info.RunID)
	if err != nil {
		log.Fatal(err)
	}
	if err := c.WriteTable(os.Stdout); err != nil {
		log.Fatal(err)
	}
	// Output:
	// arm          kind         final acc  best acc  rounds  wall s  MB moved  energy J  energy method  eval J  wasted J  GPU %  acc/kJ  CO2 mg
	// centralized  centralized     0.8800    0.8800       1     4.0         -      80.0  estimated           -         -      -  11.000    8.00
	// fedavg       federated       0.8700    0.8700       2     6.0     12.00     120.0  estimated           -         -      -   7.250   12.00
}

// Recording a round of many sites at once, as the coordinator's recorder
// does: their runs in one CreateRuns transaction, their metrics in one
// LogBatches transaction.
func ExampleSQLiteStore_LogBatches() {
	ctx := context.Background()
	dir, err := os.MkdirTemp("", "cohort-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	store, err := tracking.OpenSQLite(ctx, filepath.Join(dir, "cohort.db"))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()

	arm, err := store.CreateRun(ctx, tracking.CreateRun{Name: "fedavg"})
	if err != nil {
		log.Fatal(err)
	}
	sites := []string{"kit", "tum", "eth"}
	var reqs []tracking.CreateRun
	for _, s := range sites {
		reqs = append(reqs, tracking.CreateRun{Name: "fedavg/" + s, ParentRunID: arm.Info.RunID})
	}
	runs, err := store.CreateRuns(ctx, reqs)
	if err != nil {
		log.Fatal(err)
	}
	now := time.Now().UnixMilli()
	var batches []tracking.RunBatch
	for i, run := range runs {
		batches = append(batches, tracking.RunBatch{RunID: run.Info.RunID, Metrics: []tracking.Metric{
			{Key: tracking.MetricAccepted, Value: 1, Timestamp: now, Step: 1},
			{Key: "train_loss", Value: 0.5 - 0.1*float64(i), Timestamp: now, Step: 1},
		}})
	}
	if err := store.LogBatches(ctx, batches); err != nil {
		log.Fatal(err)
	}
	// One bad batch and nothing is written; the error names it.
	batches[1].Metrics = append(batches[1].Metrics, tracking.Metric{Key: "a//b"})
	err = store.LogBatches(ctx, batches)
	fmt.Println(errors.Is(err, tracking.ErrInvalid), strings.Contains(err.Error(), "batch 1, to run "+runs[1].Info.RunID))

	children, err := store.ChildRuns(ctx, arm.Info.RunID)
	if err != nil {
		log.Fatal(err)
	}
	for _, c := range children {
		loss, _ := c.Data.Metric("train_loss")
		fmt.Printf("%s train_loss %.1f\n", c.Info.RunName, loss.Value)
	}
	// Unordered output:
	// true true
	// fedavg/kit train_loss 0.5
	// fedavg/tum train_loss 0.4
	// fedavg/eth train_loss 0.3
}
