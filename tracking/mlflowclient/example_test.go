package mlflowclient_test

import (
	"context"
	"log"
	"log/slog"
	"os"
	"time"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowclient"
)

// A coordinator logs into a remote MLflow server: start Run beside the
// job, log as into the embedded store, and at the end flush, stop Run
// and close.
func Example() {
	c, err := mlflowclient.New(mlflowclient.Config{
		URI:    "https://mlflow.example.org", // credentials from MLFLOW_TRACKING_TOKEN etc.
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
	})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()

	exp, err := c.EnsureExperiment(ctx, "fashion-mnist")
	if err != nil {
		log.Fatal(err)
	}
	run, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "job"})
	if err != nil {
		log.Fatal(err)
	}
	_ = c.LogBatch(ctx, run.Info.RunID, []tracking.Metric{{Key: "test_accuracy", Value: 0.87, Timestamp: time.Now().UnixMilli(), Step: 1}}, nil, nil)
	_ = c.UpdateRun(ctx, run.Info.RunID, tracking.StatusFinished, time.Now(), "")

	fctx, cancel := context.WithTimeout(ctx, time.Minute)
	if err := c.Flush(fctx); err != nil {
		log.Print(err) // what is not sent stays in the spool for the next start
	}
	cancel()
	stop()
	<-done
}

// At a job's end, register the final model from the run's artifact folder
// and point the champion alias at it; later, `cohort models download`
// fetches it by alias.
func ExampleClient_CreateModelVersion() {
	c, err := mlflowclient.New(mlflowclient.Config{URI: "https://mlflow.example.org"})
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	runID := "0a1b…" // the job's run, a placeholder ID is fine: the spool is flushed first
	if err := c.EnsureRegisteredModel(ctx, "fashion-mnist"); err != nil {
		log.Fatal(err)
	}
	v, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "fashion-mnist", RunID: runID, Source: "runs:/" + runID + "/model"})
	if err != nil {
		log.Fatal(err)
	}
	if err := c.SetRegisteredModelAlias(ctx, "fashion-mnist", "champion", v.Version); err != nil {
		log.Fatal(err)
	}
	if err := c.DownloadArtifacts(ctx, "models:/fashion-mnist@champion", "./champion"); err != nil {
		log.Fatal(err)
	}
}
