package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

func TestSiteMetricKeys(t *testing.T) {
	m := map[string]float64{"num_samples": 1, "b": 1, "a": 1, strings.Repeat("k", 251): 1, "": 1}
	kept, dropped := siteMetricKeys(m)
	if fmt.Sprint(kept) != "[a b]" || len(dropped) != 2 {
		t.Errorf("siteMetricKeys = %v kept, %d dropped; want [a b], 2 (the empty and the over-long key)", kept, len(dropped))
	}
	many := make(map[string]float64)
	for i := range 5006 {
		many[fmt.Sprintf("m%05d", i)] = 1
	}
	many["train_loss"] = 1 // the agent's own come first
	kept, dropped = siteMetricKeys(many)
	if len(kept) != maxSiteMetrics || len(dropped) != 5007-maxSiteMetrics || kept[0] != "train_loss" || kept[1] != "m00000" {
		t.Errorf("5,007 keys: %d kept (first %v), %d dropped; want %d, [train_loss m00000 …], %d", len(kept), kept[:2], len(dropped), maxSiteMetrics, 5007-maxSiteMetrics)
	}
}

// TestFloodOfMetricsLosesNothingElse: an update with 5,006 metric keys
// (which made the whole site log-batch fail) is logged with its first 900
// keys, and the site's own figures are all there.
func TestFloodOfMetricsLosesNothingElse(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	flood := func(ctx context.Context, cli pb.CoordinatorServiceClient, task *pb.Task, w *model.Weights, n int64) error {
		b, err := model.MarshalSafetensors(w, nil)
		if err != nil {
			return err
		}
		ms := map[string]float64{"train_loss": 0.5}
		for i := range 5006 {
			ms[fmt.Sprintf("junk_%05d", i)] = float64(i)
		}
		return pushHeader(ctx, cli, &pb.UpdateHeader{TaskId: task.GetTaskId(), NumSamples: n, TotalSize: int64(len(b)), Sha256: sha256Of(b), Metrics: ms}, b)
	}
	for _, n := range []string{"site-1", "site-2", "site-3"} {
		c.startSite(t, ctx, &fakeSite{name: n, update: plusOne(10), push: flood})
	}
	j := submit(t, c, fmt.Sprintf(testJob, 3, "30s"))
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	cmp, err := tracking.Compare(ctx, c.store, got.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	sites, _ := c.store.ChildRuns(ctx, cmp.Arms[0].RunID)
	if len(sites) != 3 {
		t.Fatalf("%d site runs, want 3", len(sites))
	}
	for _, s := range sites {
		for _, key := range []string{"accepted", "train_loss", "num_samples", "junk_00000"} {
			if h, _ := c.store.GetMetricHistory(ctx, s.Info.RunID, key); len(h) != 3 {
				t.Errorf("%s: %d %s points, want one per round (3)", s.Info.RunName, len(h), key)
			}
		}
		if h, _ := c.store.GetMetricHistory(ctx, s.Info.RunID, "junk_05005"); len(h) != 0 {
			t.Errorf("%s: junk_05005 logged; want it dropped (beyond %d keys)", s.Info.RunName, maxSiteMetrics)
		}
	}
}

// TestJoinBounds: capabilities over 64 KiB are refused with a message that
// names the size; a site that joins again and again holds one pending
// join, not one per Join.
func TestJoinBounds(t *testing.T) {
	c := newCluster(t)
	cli := pb.NewCoordinatorServiceClient(c.dial(t))
	ctx := context.Background()
	huge := &pb.Capabilities{Datasets: []string{strings.Repeat("x", 70<<10)}}
	_, err := cli.Join(ctx, &pb.JoinRequest{SiteName: "site-1", Capabilities: huge})
	if statusCode(err) != "InvalidArgument" || !contains(err.Error(), "capabilities are") {
		t.Errorf("Join with 70 KiB of capabilities = %v, want InvalidArgument naming the size", err)
	}
	for range 1000 {
		if _, err := cli.Join(ctx, &pb.JoinRequest{SiteName: "site-1", Capabilities: &pb.Capabilities{Trainers: []string{"mlp"}}}); err != nil {
			t.Fatal(err)
		}
	}
	c.coord.mu.Lock()
	n := len(c.coord.pending)
	c.coord.mu.Unlock()
	if n != 1 {
		t.Errorf("after 1,000 Joins of one site: %d pending joins, want 1", n)
	}
}
