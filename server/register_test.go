package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math"
	"strconv"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// A job with register: makes each arm's final model a version of the
// registered model, with its lineage and figures as tags, and moves
// alias_best to the best arm's version.
func TestJobRegistersItsModels(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	digests := map[string]string{}
	for i, name := range []string{"site-1", "site-2", "site-3"} {
		d := strings.Repeat(string(rune('a'+i)), 64)
		digests[name] = d
		c.startSite(t, ctx, &fakeSite{name: name, update: plusOne(100),
			dataset: &pb.DatasetInfo{Name: "fashion-mnist", Sha256: d, NumSamples: 100, Source: "/data/" + name}})
	}
	src := []byte(`
name: reg
seed: 1
data: {dataset: fashion-mnist, path: /nonexistent}
model: {kind: logreg}
sites: {count: 3}
rounds: 3
deadline: {round: 30s}
arms:
  - {name: fedavg, strategy: fedavg}
  - {name: fedavgm, strategy: {name: fedavgm, momentum: 0.5}}
register: {name: fmnist-classifier, alias_best: champion}
`)
	resp, err := pb.NewJobsServiceClient(c.dial(t)).SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: src})
	if err != nil {
		t.Fatal(err)
	}
	got := waitJob(t, c, resp.GetJob().GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state = %v (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	rm, err := c.store.GetRegisteredModel(ctx, "fmnist-classifier")
	if err != nil {
		t.Fatal(err)
	}
	vs, _, err := c.store.SearchModelVersions(ctx, tracking.RegistryQuery{Filter: "name = 'fmnist-classifier'", OrderBy: []string{"version_number ASC"}})
	if err != nil || len(vs) != 2 {
		t.Fatalf("versions = %v (%v), want one per arm", vs, err)
	}
	sum := sha256.Sum256(src)
	// The evaluator's accuracy is the mean weight: every update adds 1, so
	// fedavg ends at 3 and fedavgm (momentum 0.5) at 1 + 1.5 + 1.75 = 4.25.
	for i, want := range []struct{ arm, acc string }{{"fedavg", "3"}, {"fedavgm", "4.25"}} {
		v := vs[i]
		tag := func(k string) string {
			for _, t := range v.Tags {
				if t.Key == k {
					return t.Value
				}
			}
			return ""
		}
		if tag(TagVersionArm) != want.arm || tag(TagVersionAccuracy) != want.acc || tag(TagVersionStrategy) != want.arm {
			t.Errorf("version %s: arm %q strategy %q accuracy %q, want %s, %s", v.Version, tag(TagVersionArm), tag(TagVersionStrategy), tag(TagVersionAccuracy), want.arm, want.acc)
		}
		if tag(TagVersionJobDigest) != hex.EncodeToString(sum[:]) || tag(TagVersionCohort) != "test" || tag(TagVersionJobID) != got.GetJobId() || tag(TagVersionJobRun) != got.GetTrackingRunId() {
			t.Errorf("version %s: job digest %q, cohort %q, job %q/%q", v.Version, tag(TagVersionJobDigest), tag(TagVersionCohort), tag(TagVersionJobID), tag(TagVersionJobRun))
		}
		for site, d := range digests {
			if tag(TagVersionDatasetPfx+site) != d {
				t.Errorf("version %s: %s%s = %q, want %q", v.Version, TagVersionDatasetPfx, site, tag(TagVersionDatasetPfx+site), d)
			}
		}
		run, err := c.store.GetRun(ctx, v.RunID)
		if err != nil {
			t.Fatal(err)
		}
		if ref, _ := run.Data.Tag(TagModelVersion); ref != "fmnist-classifier/"+v.Version {
			t.Errorf("arm run %s tagged %q, want fmnist-classifier/%s", v.RunID, ref, v.Version)
		}
		if u, _ := run.Data.Tag(tracking.TagUser); u == "" {
			t.Errorf("arm run has no %s tag", tracking.TagUser)
		}
		if st, _ := run.Data.Tag(tracking.TagSourceType); st != "JOB" {
			t.Errorf("arm run's %s = %q, want JOB", tracking.TagSourceType, st)
		}
		if v.Source != run.Info.ArtifactURI+"/model" {
			t.Errorf("version source %q, want the arm run's %s/model", v.Source, run.Info.ArtifactURI)
		}
		w := readArtifact(t, c.store, v.RunID, "model/"+ModelWeightsFile)
		ws, _, err := model.UnmarshalSafetensors(w)
		if err != nil {
			t.Fatal(err)
		}
		wantMean, _ := strconv.ParseFloat(want.acc, 64)
		if m := meanWeight(ws); math.Abs(m-wantMean) > 1e-5 {
			t.Errorf("version %s's weights have mean %v, want %v (the arm's final model)", v.Version, m, wantMean)
		}
		var mm struct {
			ArtifactPath string                    `yaml:"artifact_path"`
			RunID        string                    `yaml:"run_id"`
			Flavors      map[string]map[string]any `yaml:"flavors"`
			Size         int64                     `yaml:"model_size_bytes"`
		}
		if err := yaml.Unmarshal(readArtifact(t, c.store, v.RunID, "model/"+MLmodelFile), &mm); err != nil {
			t.Fatal(err)
		}
		if mm.ArtifactPath != "model" || mm.RunID != v.RunID || mm.Flavors["cohort"]["data"] != ModelWeightsFile || mm.Size != int64(len(w)) {
			t.Errorf("MLmodel = %+v", mm)
		}
	}
	if len(rm.Aliases) != 1 || rm.Aliases[0] != (tracking.ModelAlias{Alias: "champion", Version: vs[1].Version}) {
		t.Errorf("aliases = %v, want champion on fedavgm's version %s", rm.Aliases, vs[1].Version)
	}
	job, err := c.store.GetRun(ctx, got.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	if msg, _ := job.Data.Tag(TagAliasBest); !strings.Contains(msg, "arm fedavgm") {
		t.Errorf("job run's %s = %q, want it to name fedavgm", TagAliasBest, msg)
	}
	sites, err := c.store.ChildRuns(ctx, vs[0].RunID)
	if err != nil || len(sites) != 3 {
		t.Fatalf("site runs = %d (%v)", len(sites), err)
	}
	for _, s := range sites {
		s, err := c.store.GetRun(ctx, s.Info.RunID)
		if err != nil || len(s.Inputs) != 1 || s.Inputs[0].Dataset.SourceType != "local" || !strings.Contains(s.Inputs[0].Dataset.Source, `"uri":"/data/site-`) {
			t.Errorf("site run inputs = %+v (%v), want one local dataset with its path", s.Inputs, err)
		}
	}
}

func readArtifact(t *testing.T, s *tracking.SQLiteStore, runID, path string) []byte {
	t.Helper()
	r, err := s.OpenArtifact(context.Background(), runID, path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var b bytes.Buffer
	if _, err := io.Copy(&b, r); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func meanWeight(w *model.Weights) float64 {
	var sum float64
	n := 0
	for _, t := range w.Tensors {
		for _, v := range t.Data {
			sum += float64(v)
			n++
		}
	}
	return sum / float64(n)
}
