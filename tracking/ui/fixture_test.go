package ui

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

// seedJob logs a job the way the coordinator does: a job run, a
// centralized arm and federated arms, each federated arm with one site run
// per site, metrics per round. It returns the store and the job run's ID.
func seedJob(tb testing.TB, name string, federated, sites, rounds int) (*tracking.SQLiteStore, string) {
	tb.Helper()
	ctx := context.Background()
	store, err := tracking.OpenSQLite(ctx, filepath.Join(tb.TempDir(), "cohort.db"))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { store.Close() })
	exp, err := store.EnsureExperiment(ctx, name)
	if err != nil {
		tb.Fatal(err)
	}
	start := time.Now().Add(-time.Hour)
	create := func(runName, parent string, tags map[string]string, at time.Time) string {
		r, err := store.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: runName, ParentRunID: parent, StartTime: at, Tags: tags})
		if err != nil {
			tb.Fatal(err)
		}
		return r.Info.RunID
	}
	log := func(runID string, ms []tracking.Metric) {
		for len(ms) > 0 {
			n := min(len(ms), tracking.MaxMetricsPerBatch)
			if err := store.LogBatch(ctx, runID, ms[:n], nil, nil); err != nil {
				tb.Fatal(err)
			}
			ms = ms[n:]
		}
	}
	job := create(name, "", map[string]string{tracking.TagKind: "job", tracking.TagJobID: "j1"}, start)
	arms := []string{"centralized"}
	for i := range federated {
		arms = append(arms, fmt.Sprintf("fed-%d", i+1))
	}
	for ai, arm := range arms {
		kind := "federated"
		if ai == 0 {
			kind = "centralized"
		}
		at := start.Add(time.Duration(ai) * time.Minute)
		armID := create(arm, job, map[string]string{tracking.TagKind: kind, tracking.TagArm: arm, tracking.TagEnergyMethod: "estimated"}, at)
		var ms []tracking.Metric
		cum := 0.0
		for r := 0; r <= rounds; r++ {
			ts := at.Add(time.Duration(r) * time.Second).UnixMilli()
			acc := 0.9 - 0.5*math.Exp(-float64(r)/float64(rounds/4+1)) - 0.01*float64(ai)
			ms = append(ms, tracking.Metric{Key: tracking.MetricTestAccuracy, Value: acc, Timestamp: ts, Step: int64(r)})
			if r == 0 {
				continue
			}
			cum += 10 + float64(ai)
			ms = append(ms,
				tracking.Metric{Key: tracking.MetricRoundSeconds, Value: 1.5, Timestamp: ts, Step: int64(r)},
				tracking.Metric{Key: tracking.MetricEnergyJoules, Value: 10 + float64(ai), Timestamp: ts, Step: int64(r)},
				tracking.Metric{Key: "energy_joules_cumulative", Value: cum, Timestamp: ts, Step: int64(r)},
				tracking.Metric{Key: tracking.MetricBytesSent, Value: 1e6, Timestamp: ts, Step: int64(r)},
			)
		}
		log(armID, ms)
		if kind != "federated" {
			continue
		}
		for s := range sites {
			site := fmt.Sprintf("site-%d", s+1)
			sid := create(arm+"/"+site, armID, map[string]string{tracking.TagKind: "site", tracking.TagSite: site, tracking.TagArm: arm, tracking.TagEnergyMethod: "estimated"}, at.Add(time.Millisecond*time.Duration(s)))
			var sm []tracking.Metric
			for r := 1; r <= rounds; r++ {
				ts := at.Add(time.Duration(r) * time.Second).UnixMilli()
				sm = append(sm,
					tracking.Metric{Key: tracking.MetricTrainLoss, Value: 1 / float64(r), Timestamp: ts, Step: int64(r)},
					tracking.Metric{Key: tracking.MetricNumSamples, Value: float64(1000 * (s + 1)), Timestamp: ts, Step: int64(r)},
					tracking.Metric{Key: tracking.MetricTrainSeconds, Value: 0.5 + 0.1*float64(s), Timestamp: ts, Step: int64(r)},
					tracking.Metric{Key: "estimated_energy_joules", Value: 2 + float64(s), Timestamp: ts, Step: int64(r)},
				)
			}
			log(sid, sm)
			if err := store.LogInputs(ctx, sid, []tracking.DatasetInput{{
				Tags:    []tracking.InputTag{{Key: tracking.TagDatasetContext, Value: "training"}},
				Dataset: tracking.Dataset{Name: "fashion-mnist/train", Digest: testDigest(arm, site), SourceType: "cohort-site", Source: `{"site":"` + site + `"}`, Profile: `{"num_samples": 1000}`},
			}}); err != nil {
				tb.Fatal(err)
			}
		}
	}
	if err := store.UpdateRun(ctx, job, tracking.StatusFinished, start.Add(30*time.Minute), ""); err != nil {
		tb.Fatal(err)
	}
	return store, job
}

// testDigest is the dataset digest seedJob logs for a site of an arm: 36
// hex digits, distinct per arm and site.
func testDigest(arm, site string) string {
	return fmt.Sprintf("%x", sha256.Sum256([]byte(arm+"/"+site)))[:tracking.MaxDatasetDigestLength]
}

// registryModelName holds every character a URL needs escaped.
const registryModelName = "fmnist fedavg #1 100%? ü"

// registryFixture is a job (seedJob: a centralized arm and fed-1 with
// site-1 and site-2) whose two arms are registered as versions 1
// (centralized) and 2 (fed-1, alias champion) of registryModelName.
type registryFixture struct {
	store   *tracking.SQLiteStore
	job     tracking.Run
	central tracking.Run
	fed     tracking.Run
	sites   []tracking.Run
}

func seedRegistry(tb testing.TB) registryFixture {
	tb.Helper()
	ctx := context.Background()
	store, jobID := seedJob(tb, "fmnist-job", 1, 2, 3)
	f := registryFixture{store: store}
	var err error
	if f.job, err = store.GetRun(ctx, jobID); err != nil {
		tb.Fatal(err)
	}
	arms, err := store.ChildRuns(ctx, jobID)
	if err != nil || len(arms) != 2 {
		tb.Fatalf("arms of the job: %v, %v", arms, err)
	}
	f.central, f.fed = arms[0], arms[1]
	if f.sites, err = store.ChildRuns(ctx, f.fed.Info.RunID); err != nil || len(f.sites) != 2 {
		tb.Fatalf("sites of fed-1: %v, %v", f.sites, err)
	}
	if _, err := store.CreateRegisteredModel(ctx, registryModelName, "Fashion-MNIST, FedAvg against centralized", map[string]string{"team": "cohort"}); err != nil {
		tb.Fatal(err)
	}
	versions := []struct {
		run  tracking.Run
		tags map[string]string
	}{
		{f.central, map[string]string{tracking.TagArm: "centralized", "cohort.final_accuracy": "0.8912", "cohort.energy_joules": "440", "cohort.accuracy_per_kj": "2.0255", "cohort.job_digest": "sha256:2f1c0e9a7b3d5c8e", "cohort.version": "0.9.0"}},
		{f.fed, map[string]string{tracking.TagArm: "fed-1", "cohort.strategy": "fedavg", "cohort.final_accuracy": "0.8807", "cohort.energy_joules": "330", "cohort.accuracy_per_kj": "2.6688", "cohort.job_digest": "sha256:2f1c0e9a7b3d5c8e", "cohort.version": "0.9.0",
			"cohort.dataset_digest.site-1": testDigest("fed-1", "site-1"), "cohort.dataset_digest.site-2": testDigest("fed-1", "site-2")}},
	}
	for _, v := range versions {
		if _, err := store.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: registryModelName, Source: v.run.Info.ArtifactURI + "/model", RunID: v.run.Info.RunID, Tags: v.tags}); err != nil {
			tb.Fatal(err)
		}
	}
	if err := store.SetRegisteredModelAlias(ctx, registryModelName, "champion", "2"); err != nil {
		tb.Fatal(err)
	}
	return f
}
