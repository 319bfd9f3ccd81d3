package mlflowwire

import (
	"encoding/json"
	"math"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cohortfl/cohort/tracking"
)

// roundTrip encodes v as a server would and decodes it into a new T as a
// client would.
func roundTrip[T any](t *testing.T, v T) T {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("encoding %T: %v", v, err)
	}
	var out T
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("decoding %T from %s: %v", v, b, err)
	}
	return out
}

func TestRunRoundTrip(t *testing.T) {
	start := time.UnixMilli(1700000000123).UTC()
	for _, tt := range []struct {
		name string
		run  tracking.Run
	}{
		{"running, no data", tracking.Run{Info: tracking.RunInfo{RunID: "r1", RunName: "brave-owl-1", ExperimentID: "1", Status: tracking.StatusRunning,
			StartTime: start, ArtifactURI: "mlflow-artifacts:/1/r1/artifacts", LifecycleStage: tracking.LifecycleActive}}},
		{"finished, with NaN and inputs", tracking.Run{
			Info: tracking.RunInfo{RunID: "r2", RunName: "site-1", ExperimentID: "2", UserID: "ana", Status: tracking.StatusFinished,
				StartTime: start, EndTime: start.Add(90 * time.Second), ArtifactURI: "a", LifecycleStage: tracking.LifecycleDeleted},
			Data: tracking.RunData{
				Metrics: []tracking.Metric{{Key: "acc", Value: 0.91, Timestamp: 1700000000200, Step: 3}, {Key: "loss", Value: math.NaN(), Timestamp: 1, Step: 9}, {Key: "z", Value: math.Inf(-1)}},
				Params:  []tracking.Param{{Key: "lr", Value: "0.1"}, {Key: "mu", Value: "0.01"}},
				Tags:    []tracking.Tag{{Key: tracking.TagRunName, Value: "site-1"}, {Key: "z", Value: "last"}},
			},
			Inputs: []tracking.DatasetInput{{Tags: []tracking.InputTag{{Key: tracking.TagDatasetContext, Value: "training"}},
				Dataset: tracking.Dataset{Name: "fmnist/train", Digest: "abc", SourceType: "local", Source: `{"path":"/d"}`, Profile: `{"num_samples":10}`}}},
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			got := roundTrip(t, FromRun(tt.run)).ToTracking()
			if diff := cmp.Diff(tt.run, got, cmpopts.EquateNaNs(), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("FromRun → JSON → ToTracking changed the run (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunInfoWire(t *testing.T) {
	w := FromRunInfo(tracking.RunInfo{RunID: "r", StartTime: time.UnixMilli(5)})
	if w.RunUUID != "r" || w.EndTime != nil || w.StartTime != 5 {
		t.Errorf("FromRunInfo = run_uuid %q, end_time %v, start_time %d; want r, absent, 5", w.RunUUID, w.EndTime, w.StartTime)
	}
	// What older servers send: run_uuid only, the name only as a tag, an
	// end_time of 0 for a run that has not ended, unsorted data.
	var old Run
	in := `{"info": {"run_uuid": "u", "start_time": "7", "end_time": 0}, "data": {"tags": [{"key": "z", "value": "1"}, {"key": "mlflow.runName", "value": "old-run"}], "params": [{"key": "b", "value": "2"}, {"key": "a", "value": "1"}]}}`
	if err := json.Unmarshal([]byte(in), &old); err != nil {
		t.Fatal(err)
	}
	got := old.ToTracking()
	want := tracking.Run{
		Info: tracking.RunInfo{RunID: "u", RunName: "old-run", StartTime: time.UnixMilli(7).UTC()},
		Data: tracking.RunData{Params: []tracking.Param{{Key: "a", Value: "1"}, {Key: "b", Value: "2"}}, Tags: []tracking.Tag{{Key: tracking.TagRunName, Value: "old-run"}, {Key: "z", Value: "1"}}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Run.ToTracking of an old server's run (-want +got):\n%s", diff)
	}
}

func TestExperimentRoundTrip(t *testing.T) {
	e := tracking.Experiment{ExperimentID: "3", Name: "fmnist", ArtifactLocation: "mlflow-artifacts:/3", LifecycleStage: tracking.LifecycleActive,
		CreationTime: time.UnixMilli(1000).UTC(), LastUpdateTime: time.UnixMilli(2000).UTC(), Tags: []tracking.Tag{{Key: "a", Value: "b"}}}
	if diff := cmp.Diff(e, roundTrip(t, FromExperiment(e)).ToTracking()); diff != "" {
		t.Errorf("FromExperiment → JSON → ToTracking (-want +got):\n%s", diff)
	}
}

func TestRegistryRoundTrip(t *testing.T) {
	mv := tracking.ModelVersion{Name: "m", Version: "2", CreationTime: time.UnixMilli(10).UTC(), LastUpdatedTime: time.UnixMilli(20).UTC(),
		Description: "d", UserID: "u", CurrentStage: "None", Source: "models:/m/2", RunID: "r", RunLink: "l", Status: "READY",
		Tags: []tracking.Tag{{Key: "k", Value: "v"}}, Aliases: []string{"prod"}}
	rm := tracking.RegisteredModel{Name: "m", CreationTime: time.UnixMilli(1).UTC(), LastUpdatedTime: time.UnixMilli(2).UTC(), Description: "x",
		LatestVersions: []tracking.ModelVersion{mv}, Tags: []tracking.Tag{{Key: "a", Value: "b"}}, Aliases: []tracking.ModelAlias{{Alias: "prod", Version: "2"}}}
	got := roundTrip(t, RegisteredModelResponse{RegisteredModel: FromRegisteredModel(rm)}).RegisteredModel.ToTracking()
	if diff := cmp.Diff(rm, got); diff != "" {
		t.Errorf("FromRegisteredModel → JSON → ToTracking (-want +got):\n%s", diff)
	}
}

func TestFileInfo(t *testing.T) {
	for in, want := range map[string]int64{`{"path": "d", "is_dir": true}`: 0, `{"path": "f", "file_size": "12"}`: 12, `{"path": "g", "file_size": 7}`: 7} {
		var f FileInfo
		if err := json.Unmarshal([]byte(in), &f); err != nil || f.Size() != want {
			t.Errorf("FileInfo from %s: Size() = %d, %v; want %d", in, f.Size(), err, want)
		}
	}
	b, _ := json.Marshal(FileInfo{Path: "d", IsDir: true})
	if want := `{"path":"d","is_dir":true}`; string(b) != want {
		t.Errorf("a folder's FileInfo = %s; want %s (no file_size)", b, want)
	}
}
