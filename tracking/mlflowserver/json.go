package mlflowserver

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strconv"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

// jInt64 is a protobuf int64 in JSON: a number or a decimal string, as
// protobuf's JSON mapping accepts; set records whether it was present.
type jInt64 struct {
	v   int64
	set bool
}

func (j *jInt64) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s := string(bytes.Trim(b, `"`))
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<62 {
			return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[int64]()}
		}
		n = int64(f)
	}
	j.v, j.set = n, true
	return nil
}

// jFloat is a protobuf double in JSON: a number, or one of the strings
// "NaN", "Infinity", "-Infinity" (or a decimal string).
type jFloat struct {
	v   float64
	set bool
}

func (j *jFloat) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		return nil
	}
	s := string(b)
	if len(b) > 0 && b[0] == '"' {
		if err := json.Unmarshal(b, &s); err != nil {
			return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[float64]()}
		}
		switch s {
		case "NaN":
			j.v, j.set = math.NaN(), true
			return nil
		case "Infinity", "inf", "Inf":
			j.v, j.set = math.Inf(1), true
			return nil
		case "-Infinity", "-inf", "-Inf":
			j.v, j.set = math.Inf(-1), true
			return nil
		}
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return &json.UnmarshalTypeError{Value: string(b), Type: reflect.TypeFor[float64]()}
	}
	j.v, j.set = f, true
	return nil
}

// floatJSON writes a double as protobuf's JSON mapping does: NaN and ±Inf
// as strings.
type floatJSON float64

func (f floatJSON) MarshalJSON() ([]byte, error) {
	v := float64(f)
	switch {
	case math.IsNaN(v):
		return []byte(`"NaN"`), nil
	case math.IsInf(v, 1):
		return []byte(`"Infinity"`), nil
	case math.IsInf(v, -1):
		return []byte(`"-Infinity"`), nil
	}
	return strconv.AppendFloat(nil, v, 'g', -1, 64), nil
}

// Wire types, as MLflow's protos (mlflow/protos/service.proto) in JSON.

type keyValue struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type wireMetric struct {
	Key       string    `json:"key"`
	Value     floatJSON `json:"value"`
	Timestamp int64     `json:"timestamp"`
	Step      int64     `json:"step"`
}

type wireRunInfo struct {
	RunID          string `json:"run_id"`
	RunUUID        string `json:"run_uuid"`
	RunName        string `json:"run_name,omitempty"`
	ExperimentID   string `json:"experiment_id"`
	UserID         string `json:"user_id,omitempty"`
	Status         string `json:"status"`
	StartTime      int64  `json:"start_time"`
	EndTime        *int64 `json:"end_time,omitempty"`
	ArtifactURI    string `json:"artifact_uri"`
	LifecycleStage string `json:"lifecycle_stage"`
}

type wireRunData struct {
	Metrics []wireMetric `json:"metrics,omitempty"`
	Params  []keyValue   `json:"params,omitempty"`
	Tags    []keyValue   `json:"tags,omitempty"`
}

type wireDataset struct {
	Name       string `json:"name"`
	Digest     string `json:"digest"`
	SourceType string `json:"source_type"`
	Source     string `json:"source"`
	Schema     string `json:"schema,omitempty"`
	Profile    string `json:"profile,omitempty"`
}

type wireDatasetInput struct {
	Tags    []keyValue  `json:"tags,omitempty"`
	Dataset wireDataset `json:"dataset"`
}

type wireRunInputs struct {
	DatasetInputs []wireDatasetInput `json:"dataset_inputs,omitempty"`
}

type wireRun struct {
	Info   wireRunInfo   `json:"info"`
	Data   wireRunData   `json:"data"`
	Inputs wireRunInputs `json:"inputs"`
}

type wireExperiment struct {
	ExperimentID     string     `json:"experiment_id"`
	Name             string     `json:"name"`
	ArtifactLocation string     `json:"artifact_location"`
	LifecycleStage   string     `json:"lifecycle_stage"`
	LastUpdateTime   int64      `json:"last_update_time"`
	CreationTime     int64      `json:"creation_time"`
	Tags             []keyValue `json:"tags,omitempty"`
}

type wireFileInfo struct {
	Path     string `json:"path"`
	IsDir    bool   `json:"is_dir"`
	FileSize *int64 `json:"file_size,omitempty"`
}

func millis(t time.Time) int64 { return t.UnixMilli() }

func toWireTags(tags []tracking.Tag) []keyValue {
	if len(tags) == 0 {
		return nil
	}
	out := make([]keyValue, len(tags))
	for i, t := range tags {
		out[i] = keyValue(t)
	}
	return out
}

func toWireRunInfo(i tracking.RunInfo) wireRunInfo {
	w := wireRunInfo{
		RunID: i.RunID, RunUUID: i.RunID, RunName: i.RunName, ExperimentID: i.ExperimentID, UserID: i.UserID,
		Status: string(i.Status), StartTime: millis(i.StartTime), ArtifactURI: i.ArtifactURI, LifecycleStage: string(i.LifecycleStage),
	}
	if !i.EndTime.IsZero() {
		e := millis(i.EndTime)
		w.EndTime = &e
	}
	return w
}

func toWireMetric(m tracking.Metric) wireMetric {
	return wireMetric{Key: m.Key, Value: floatJSON(m.Value), Timestamp: m.Timestamp, Step: m.Step}
}

func toWireRun(r tracking.Run) wireRun {
	w := wireRun{Info: toWireRunInfo(r.Info)}
	for _, m := range r.Data.Metrics {
		w.Data.Metrics = append(w.Data.Metrics, toWireMetric(m))
	}
	for _, p := range r.Data.Params {
		w.Data.Params = append(w.Data.Params, keyValue(p))
	}
	w.Data.Tags = toWireTags(r.Data.Tags)
	for _, in := range r.Inputs {
		wi := wireDatasetInput{Dataset: wireDataset(in.Dataset)}
		for _, t := range in.Tags {
			wi.Tags = append(wi.Tags, keyValue(t))
		}
		w.Inputs.DatasetInputs = append(w.Inputs.DatasetInputs, wi)
	}
	return w
}

func toWireExperiment(e tracking.Experiment) wireExperiment {
	return wireExperiment{
		ExperimentID: e.ExperimentID, Name: e.Name, ArtifactLocation: e.ArtifactLocation, LifecycleStage: string(e.LifecycleStage),
		LastUpdateTime: millis(e.LastUpdateTime), CreationTime: millis(e.CreationTime), Tags: toWireTags(e.Tags),
	}
}
