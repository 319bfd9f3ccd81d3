package mlflowclient

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

// jsonFloat is a double as proto3 JSON spells it, as MLflow sends and
// takes it: NaN and ±Inf as the strings "NaN", "Infinity", "-Infinity".
type jsonFloat float64

// MarshalJSON implements json.Marshaler.
func (f jsonFloat) MarshalJSON() ([]byte, error) {
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

// UnmarshalJSON implements json.Unmarshaler; it takes a number, one of
// the three strings, or a number in a string.
func (f *jsonFloat) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		switch s {
		case "NaN":
			*f = jsonFloat(math.NaN())
		case "Infinity":
			*f = jsonFloat(math.Inf(1))
		case "-Infinity":
			*f = jsonFloat(math.Inf(-1))
		default:
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return fmt.Errorf("metric value %q is not a number", s)
			}
			*f = jsonFloat(v)
		}
		return nil
	}
	var v float64
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*f = jsonFloat(v)
	return nil
}

// jsonInt64 is an int64 that proto3 JSON may send as a string.
type jsonInt64 int64

// UnmarshalJSON implements json.Unmarshaler.
func (n *jsonInt64) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	if string(b) == "null" || len(b) == 0 {
		*n = 0
		return nil
	}
	v, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil {
		return fmt.Errorf("%q is not an integer", b)
	}
	*n = jsonInt64(v)
	return nil
}

type wireKV struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

type wireMetric struct {
	Key       string    `json:"key"`
	Value     jsonFloat `json:"value"`
	Timestamp jsonInt64 `json:"timestamp"`
	Step      jsonInt64 `json:"step"`
}

// MarshalJSON writes timestamp and step as JSON numbers.
func (m wireMetric) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Key       string    `json:"key"`
		Value     jsonFloat `json:"value"`
		Timestamp int64     `json:"timestamp"`
		Step      int64     `json:"step"`
	}{m.Key, m.Value, int64(m.Timestamp), int64(m.Step)})
}

type wireExperiment struct {
	ExperimentID     string    `json:"experiment_id"`
	Name             string    `json:"name"`
	ArtifactLocation string    `json:"artifact_location"`
	LifecycleStage   string    `json:"lifecycle_stage"`
	CreationTime     jsonInt64 `json:"creation_time"`
	LastUpdateTime   jsonInt64 `json:"last_update_time"`
	Tags             []wireKV  `json:"tags"`
}

type wireRunInfo struct {
	RunID          string    `json:"run_id"`
	RunUUID        string    `json:"run_uuid"`
	RunName        string    `json:"run_name"`
	ExperimentID   string    `json:"experiment_id"`
	UserID         string    `json:"user_id"`
	Status         string    `json:"status"`
	StartTime      jsonInt64 `json:"start_time"`
	EndTime        jsonInt64 `json:"end_time"`
	ArtifactURI    string    `json:"artifact_uri"`
	LifecycleStage string    `json:"lifecycle_stage"`
}

type wireRun struct {
	Info wireRunInfo `json:"info"`
	Data struct {
		Metrics []wireMetric `json:"metrics"`
		Params  []wireKV     `json:"params"`
		Tags    []wireKV     `json:"tags"`
	} `json:"data"`
}

// Requests, as MLflow's service.proto names their fields. The spool keeps
// them as they are sent, with run IDs that may be placeholders.

type createRunReq struct {
	ExperimentID string   `json:"experiment_id"`
	UserID       string   `json:"user_id,omitempty"`
	RunName      string   `json:"run_name,omitempty"`
	StartTime    int64    `json:"start_time"`
	Tags         []wireKV `json:"tags,omitempty"`
}

type updateRunReq struct {
	RunID   string `json:"run_id"`
	RunUUID string `json:"run_uuid,omitempty"`
	Status  string `json:"status,omitempty"`
	EndTime int64  `json:"end_time,omitempty"`
	RunName string `json:"run_name,omitempty"`
}

type logBatchReq struct {
	RunID   string       `json:"run_id"`
	Metrics []wireMetric `json:"metrics,omitempty"`
	Params  []wireKV     `json:"params,omitempty"`
	Tags    []wireKV     `json:"tags,omitempty"`
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
	Tags    []wireKV    `json:"tags,omitempty"`
	Dataset wireDataset `json:"dataset"`
}

type logInputsReq struct {
	RunID    string             `json:"run_id"`
	Datasets []wireDatasetInput `json:"datasets"`
}

type searchRunsReq struct {
	ExperimentIDs []string `json:"experiment_ids"`
	Filter        string   `json:"filter,omitempty"`
	RunViewType   string   `json:"run_view_type,omitempty"`
	MaxResults    int      `json:"max_results,omitempty"`
	OrderBy       []string `json:"order_by,omitempty"`
	PageToken     string   `json:"page_token,omitempty"`
}

func millis(ms jsonInt64) time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms)).UTC()
}

func toMetric(m wireMetric) tracking.Metric {
	return tracking.Metric{Key: m.Key, Value: float64(m.Value), Timestamp: int64(m.Timestamp), Step: int64(m.Step)}
}

func fromMetric(m tracking.Metric) wireMetric {
	return wireMetric{Key: m.Key, Value: jsonFloat(m.Value), Timestamp: jsonInt64(m.Timestamp), Step: jsonInt64(m.Step)}
}

// run converts a run as MLflow sends it; metrics, params and tags come
// sorted by key as the embedded store returns them.
func (r wireRun) run() tracking.Run {
	id := cmp.Or(r.Info.RunID, r.Info.RunUUID)
	out := tracking.Run{Info: tracking.RunInfo{
		RunID: id, RunName: r.Info.RunName, ExperimentID: r.Info.ExperimentID, UserID: r.Info.UserID,
		Status: tracking.RunStatus(r.Info.Status), StartTime: millis(r.Info.StartTime), EndTime: millis(r.Info.EndTime),
		ArtifactURI: r.Info.ArtifactURI, LifecycleStage: tracking.LifecycleStage(r.Info.LifecycleStage),
	}}
	for _, m := range r.Data.Metrics {
		out.Data.Metrics = append(out.Data.Metrics, toMetric(m))
	}
	for _, p := range r.Data.Params {
		out.Data.Params = append(out.Data.Params, tracking.Param{Key: p.Key, Value: p.Value})
	}
	for _, t := range r.Data.Tags {
		out.Data.Tags = append(out.Data.Tags, tracking.Tag{Key: t.Key, Value: t.Value})
	}
	slices.SortFunc(out.Data.Metrics, func(a, b tracking.Metric) int { return cmp.Compare(a.Key, b.Key) })
	slices.SortFunc(out.Data.Params, func(a, b tracking.Param) int { return cmp.Compare(a.Key, b.Key) })
	slices.SortFunc(out.Data.Tags, func(a, b tracking.Tag) int { return cmp.Compare(a.Key, b.Key) })
	if out.Info.RunName == "" {
		out.Info.RunName, _ = out.Data.Tag(tracking.TagRunName)
	}
	return out
}
