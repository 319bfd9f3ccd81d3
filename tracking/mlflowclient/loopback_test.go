package mlflowclient_test

import (
	"context"
	"io"
	"math"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowclient"
	"github.com/cohortfl/cohort/tracking/mlflowserver"
)

// TestLoopbackAgainstOwnServer logs a job through the client into Cohort's
// own MLflow REST server over a real SQLite store, and reads it back both
// through the client and from the store.
func TestLoopbackAgainstOwnServer(t *testing.T) {
	ctx := t.Context()
	dir := t.TempDir()
	store, err := tracking.OpenSQLite(ctx, filepath.Join(dir, "cohort.db"), tracking.WithArtifactRoot(filepath.Join(dir, "artifacts")))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h, err := mlflowserver.New(store, mlflowserver.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	c, err := mlflowclient.New(mlflowclient.Config{URI: srv.URL, SpoolDir: filepath.Join(dir, "spool"), BackoffFactor: time.Millisecond, BackoffJitter: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(runCtx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	exp, err := c.EnsureExperiment(ctx, "loopback")
	if err != nil {
		t.Fatal(err)
	}
	if again, err := c.EnsureExperiment(ctx, "loopback"); err != nil || again != exp {
		t.Fatalf("EnsureExperiment again = %q, %v; want %q", again, err, exp)
	}
	job, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "job", Tags: map[string]string{tracking.TagJobID: "j1"}})
	if err != nil {
		t.Fatal(err)
	}
	var params []tracking.Param
	for i := range 150 { // more than one request's worth
		params = append(params, tracking.Param{Key: "spec.p" + string(rune('a'+i%26)) + strings.Repeat("x", i/26), Value: "v"})
	}
	if err := c.LogBatch(ctx, job.Info.RunID, nil, params, nil); err != nil {
		t.Fatal(err)
	}
	var want []tracking.Metric
	for i, name := range []string{"centralized", "fedavg"} {
		kind := tracking.KindFederated
		if i == 0 {
			kind = tracking.KindCentralized
		}
		arm, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: name, ParentRunID: job.Info.RunID,
			StartTime: time.UnixMilli(1700000000000 + int64(i)), Tags: map[string]string{tracking.TagArm: name, tracking.TagKind: kind}})
		if err != nil {
			t.Fatal(err)
		}
		var ms []tracking.Metric
		for r := 1; r <= 1200; r++ { // more than one request's worth
			ms = append(ms, tracking.Metric{Key: tracking.MetricTestAccuracy, Value: float64(r) / 2000, Timestamp: 1700000000000 + int64(r), Step: int64(r)})
		}
		ms = append(ms, tracking.Metric{Key: "loss", Value: math.NaN(), Timestamp: 1, Step: 1}, tracking.Metric{Key: "loss", Value: math.Inf(1), Timestamp: 2, Step: 2})
		if err := c.LogBatch(ctx, arm.Info.RunID, ms, nil, []tracking.Tag{{Key: tracking.TagEnergyMethod, Value: "estimated"}}); err != nil {
			t.Fatal(err)
		}
		if err := c.LogInputs(ctx, arm.Info.RunID, []tracking.DatasetInput{{Dataset: tracking.Dataset{Name: "fmnist", Digest: "d1", SourceType: "local", Source: `{"path":"x"}`}}}); err != nil {
			t.Fatal(err)
		}
		if err := c.LogArtifact(ctx, arm.Info.RunID, "energy/round-0001.json", strings.NewReader(`{"joules":1}`)); err != nil {
			t.Fatal(err)
		}
		if err := c.UpdateRun(ctx, arm.Info.RunID, tracking.StatusFinished, time.UnixMilli(1700000100000), ""); err != nil {
			t.Fatal(err)
		}
		want = ms[:1200]
	}
	if err := c.Flush(ctx); err != nil {
		t.Fatalf("Flush = %v", err)
	}

	cmpn, err := tracking.Compare(ctx, c, job.Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if len(cmpn.Arms) != 2 || cmpn.Arms[0].Name != "centralized" || cmpn.Arms[1].Rounds != 1200 || cmpn.Arms[1].EnergyMethod != "estimated" {
		t.Errorf("Compare through the client = %+v", cmpn)
	}
	fedavg := cmpn.Arms[1].RunID
	hist, err := store.GetMetricHistory(ctx, fedavg, tracking.MetricTestAccuracy)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, hist); diff != "" {
		t.Errorf("history in the store (-want +got):\n%s", diff)
	}
	loss, err := c.GetMetricHistory(ctx, fedavg, "loss")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]tracking.Metric{{Key: "loss", Value: math.NaN(), Timestamp: 1, Step: 1}, {Key: "loss", Value: math.Inf(1), Timestamp: 2, Step: 2}}, loss, cmpopts.EquateNaNs()); diff != "" {
		t.Errorf("NaN and Inf through the server (-want +got):\n%s", diff)
	}
	run, err := store.GetRun(ctx, job.Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if len(run.Data.Params) != 150 {
		t.Errorf("job run in the store has %d params, want 150", len(run.Data.Params))
	}
	arm, err := store.GetRun(ctx, fedavg)
	if err != nil {
		t.Fatal(err)
	}
	if arm.Info.Status != tracking.StatusFinished {
		t.Errorf("arm status in the store = %s, want FINISHED", arm.Info.Status)
	}
	rc, err := store.OpenArtifact(ctx, fedavg, "energy/round-0001.json")
	if err != nil {
		t.Fatalf("artifact uploaded through the proxy: %v", err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != `{"joules":1}` {
		t.Errorf("artifact = %q", b)
	}
}
