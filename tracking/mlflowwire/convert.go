package mlflowwire

import (
	"cmp"
	"slices"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

// The conversions: From* builds the wire form of a tracking value, as a
// server answers with it; ToTracking reads one back, as a client does.

// Millis returns t in milliseconds since the Unix epoch.
func Millis(t time.Time) Int64 { return Int64(t.UnixMilli()) }

// Time returns the time ms milliseconds after the Unix epoch, in UTC;
// 0 is the zero time (MLflow's "not set").
func (ms Int64) Time() time.Time {
	if ms == 0 {
		return time.Time{}
	}
	return time.UnixMilli(int64(ms)).UTC()
}

// FromMetric returns m's wire form.
func FromMetric(m tracking.Metric) Metric {
	return Metric{Key: m.Key, Value: Float64(m.Value), Timestamp: Int64(m.Timestamp), Step: Int64(m.Step)}
}

// ToTracking returns m as the tracking package has it.
func (m Metric) ToTracking() tracking.Metric {
	return tracking.Metric{Key: m.Key, Value: float64(m.Value), Timestamp: int64(m.Timestamp), Step: int64(m.Step)}
}

// FromTags returns tags' wire form; nil when there are none.
func FromTags(tags []tracking.Tag) []KeyValue {
	if len(tags) == 0 {
		return nil
	}
	out := make([]KeyValue, len(tags))
	for i, t := range tags {
		out[i] = KeyValue(t)
	}
	return out
}

// FromParams returns params' wire form; nil when there are none.
func FromParams(params []tracking.Param) []KeyValue {
	if len(params) == 0 {
		return nil
	}
	out := make([]KeyValue, len(params))
	for i, p := range params {
		out[i] = KeyValue(p)
	}
	return out
}

// ToTags returns kv as tags, sorted by key; nil when there are none.
func ToTags(kv []KeyValue) []tracking.Tag {
	var out []tracking.Tag
	for _, t := range kv {
		out = append(out, tracking.Tag(t))
	}
	slices.SortFunc(out, func(a, b tracking.Tag) int { return cmp.Compare(a.Key, b.Key) })
	return out
}

// FromDatasetInput returns in's wire form.
func FromDatasetInput(in tracking.DatasetInput) DatasetInput {
	w := DatasetInput{Dataset: Dataset(in.Dataset)}
	for _, t := range in.Tags {
		w.Tags = append(w.Tags, KeyValue(t))
	}
	return w
}

// ToTracking returns in as the tracking package has it.
func (in DatasetInput) ToTracking() tracking.DatasetInput {
	out := tracking.DatasetInput{Dataset: tracking.Dataset(in.Dataset)}
	for _, t := range in.Tags {
		out.Tags = append(out.Tags, tracking.InputTag(t))
	}
	return out
}

// FromRunInfo returns i's wire form: the ID as run_id and run_uuid, no
// end_time before the run has ended.
func FromRunInfo(i tracking.RunInfo) RunInfo {
	w := RunInfo{
		RunID: i.RunID, RunUUID: i.RunID, RunName: i.RunName, ExperimentID: i.ExperimentID, UserID: i.UserID,
		Status: string(i.Status), StartTime: Millis(i.StartTime), ArtifactURI: i.ArtifactURI, LifecycleStage: string(i.LifecycleStage),
	}
	if !i.EndTime.IsZero() {
		e := Millis(i.EndTime)
		w.EndTime = &e
	}
	return w
}

// ToTracking returns i as the tracking package has it: the ID from run_id
// or else run_uuid; a start or end time of 0 or absent is the zero time.
func (i RunInfo) ToTracking() tracking.RunInfo {
	out := tracking.RunInfo{
		RunID: cmp.Or(i.RunID, i.RunUUID), RunName: i.RunName, ExperimentID: i.ExperimentID, UserID: i.UserID,
		Status: tracking.RunStatus(i.Status), StartTime: i.StartTime.Time(),
		ArtifactURI: i.ArtifactURI, LifecycleStage: tracking.LifecycleStage(i.LifecycleStage),
	}
	if i.EndTime != nil {
		out.EndTime = i.EndTime.Time()
	}
	return out
}

// FromRun returns r's wire form.
func FromRun(r tracking.Run) Run {
	w := Run{Info: FromRunInfo(r.Info)}
	for _, m := range r.Data.Metrics {
		w.Data.Metrics = append(w.Data.Metrics, FromMetric(m))
	}
	w.Data.Params = FromParams(r.Data.Params)
	w.Data.Tags = FromTags(r.Data.Tags)
	for _, in := range r.Inputs {
		w.Inputs.DatasetInputs = append(w.Inputs.DatasetInputs, FromDatasetInput(in))
	}
	return w
}

// ToTracking returns r as the tracking package has it: metrics, params
// and tags sorted by key, as the embedded store returns them, and the run
// name taken from the mlflow.runName tag when run_name is empty (older
// MLflow servers send only the tag).
func (r Run) ToTracking() tracking.Run {
	out := tracking.Run{Info: r.Info.ToTracking()}
	for _, m := range r.Data.Metrics {
		out.Data.Metrics = append(out.Data.Metrics, m.ToTracking())
	}
	for _, p := range r.Data.Params {
		out.Data.Params = append(out.Data.Params, tracking.Param(p))
	}
	out.Data.Tags = ToTags(r.Data.Tags)
	for _, in := range r.Inputs.DatasetInputs {
		out.Inputs = append(out.Inputs, in.ToTracking())
	}
	slices.SortFunc(out.Data.Metrics, func(a, b tracking.Metric) int { return cmp.Compare(a.Key, b.Key) })
	slices.SortFunc(out.Data.Params, func(a, b tracking.Param) int { return cmp.Compare(a.Key, b.Key) })
	if out.Info.RunName == "" {
		out.Info.RunName, _ = out.Data.Tag(tracking.TagRunName)
	}
	return out
}

// FromExperiment returns e's wire form.
func FromExperiment(e tracking.Experiment) Experiment {
	return Experiment{
		ExperimentID: e.ExperimentID, Name: e.Name, ArtifactLocation: e.ArtifactLocation, LifecycleStage: string(e.LifecycleStage),
		LastUpdateTime: Millis(e.LastUpdateTime), CreationTime: Millis(e.CreationTime), Tags: FromTags(e.Tags),
	}
}

// ToTracking returns e as the tracking package has it, tags sorted by key.
func (e Experiment) ToTracking() tracking.Experiment {
	return tracking.Experiment{
		ExperimentID: e.ExperimentID, Name: e.Name, ArtifactLocation: e.ArtifactLocation, LifecycleStage: tracking.LifecycleStage(e.LifecycleStage),
		CreationTime: e.CreationTime.Time(), LastUpdateTime: e.LastUpdateTime.Time(), Tags: ToTags(e.Tags),
	}
}

// FromModelVersion returns mv's wire form.
func FromModelVersion(mv tracking.ModelVersion) ModelVersion {
	return ModelVersion{
		Name: mv.Name, Version: mv.Version, CreationTimestamp: Millis(mv.CreationTime), LastUpdatedTimestamp: Millis(mv.LastUpdatedTime),
		UserID: mv.UserID, CurrentStage: mv.CurrentStage, Description: mv.Description, Source: mv.Source, RunID: mv.RunID,
		Status: mv.Status, StatusMessage: mv.StatusMessage, Tags: FromTags(mv.Tags), RunLink: mv.RunLink, Aliases: mv.Aliases,
	}
}

// FromModelVersions returns mvs' wire form, an empty list for none.
func FromModelVersions(mvs []tracking.ModelVersion) []ModelVersion {
	out := make([]ModelVersion, len(mvs))
	for i, mv := range mvs {
		out[i] = FromModelVersion(mv)
	}
	return out
}

// ToTracking returns v as the tracking package has it, tags sorted by key.
func (v ModelVersion) ToTracking() tracking.ModelVersion {
	return tracking.ModelVersion{
		Name: v.Name, Version: v.Version, CreationTime: v.CreationTimestamp.Time(), LastUpdatedTime: v.LastUpdatedTimestamp.Time(),
		Description: v.Description, UserID: v.UserID, CurrentStage: v.CurrentStage, Source: v.Source, RunID: v.RunID,
		RunLink: v.RunLink, Status: v.Status, StatusMessage: v.StatusMessage, Tags: ToTags(v.Tags), Aliases: slices.Clone(v.Aliases),
	}
}

// FromRegisteredModel returns rm's wire form.
func FromRegisteredModel(rm tracking.RegisteredModel) RegisteredModel {
	w := RegisteredModel{
		Name: rm.Name, CreationTimestamp: Millis(rm.CreationTime), LastUpdatedTimestamp: Millis(rm.LastUpdatedTime),
		Description: rm.Description, Tags: FromTags(rm.Tags),
	}
	if len(rm.LatestVersions) > 0 {
		w.LatestVersions = FromModelVersions(rm.LatestVersions)
	}
	for _, a := range rm.Aliases {
		w.Aliases = append(w.Aliases, ModelAlias(a))
	}
	return w
}

// ToTracking returns m as the tracking package has it, tags sorted by key.
func (m RegisteredModel) ToTracking() tracking.RegisteredModel {
	out := tracking.RegisteredModel{
		Name: m.Name, CreationTime: m.CreationTimestamp.Time(), LastUpdatedTime: m.LastUpdatedTimestamp.Time(),
		Description: m.Description, Tags: ToTags(m.Tags),
	}
	for _, v := range m.LatestVersions {
		out.LatestVersions = append(out.LatestVersions, v.ToTracking())
	}
	for _, a := range m.Aliases {
		out.Aliases = append(out.Aliases, tracking.ModelAlias(a))
	}
	return out
}

// FromRunMetric returns m's wire form.
func FromRunMetric(m tracking.RunMetric) RunMetric {
	return RunMetric{Key: m.Key, Value: Float64(m.Value), Timestamp: Int64(m.Timestamp), Step: Int64(m.Step), RunID: m.RunID}
}
