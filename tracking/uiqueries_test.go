package tracking

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func tagValue(t *testing.T, s *SQLiteStore, runID, key string) (string, bool) {
	t.Helper()
	r, err := s.GetRun(context.Background(), runID)
	if err != nil {
		t.Fatal(err)
	}
	for _, tg := range r.Data.Tags {
		if tg.Key == key {
			return tg.Value, true
		}
	}
	return "", false
}

func TestRecordLoggedModel(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	run := mustCreateRun(t, s, CreateRun{}).Info.RunID
	for _, m := range []string{`{"artifact_path": "a", "flavors": {}}`, "{\n  \"artifact_path\": \"b\"\n}"} {
		if err := s.RecordLoggedModel(ctx, run, []byte(m)); err != nil {
			t.Fatalf("RecordLoggedModel(%s) = %v", m, err)
		}
	}
	v, _ := tagValue(t, s, run, TagLoggedModels)
	if want := `[{"artifact_path":"a","flavors":{}}, {"artifact_path":"b"}]`; v != want {
		t.Errorf("history = %s; want %s", v, want)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(v), &list); err != nil || len(list) != 2 {
		t.Errorf("history does not parse as a list of 2: %v %v", list, err)
	}
	huge := `{"x": "` + strings.Repeat("y", MaxTagValueLength) + `"}`
	for _, c := range []struct {
		name, run, model string
		want             error
	}{
		{"not JSON", run, `{"a": `, ErrInvalid},
		{"a list", run, `[1]`, ErrInvalid},
		{"past the tag limit", run, huge, ErrInvalid},
		{"unknown run", "nope", `{}`, ErrNotFound},
	} {
		if err := s.RecordLoggedModel(ctx, c.run, []byte(c.model)); !errors.Is(err, c.want) {
			t.Errorf("%s: RecordLoggedModel = %v; want %v", c.name, err, c.want)
		}
	}
	if after, _ := tagValue(t, s, run, TagLoggedModels); after != v {
		t.Errorf("a refused model changed the history to %s", after)
	}
	if err := s.SetTag(ctx, run, Tag{Key: TagLoggedModels, Value: "not a list"}); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordLoggedModel(ctx, run, []byte(`{}`)); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "delete the tag") {
		t.Errorf("over a corrupt history: %v; want ErrInvalid naming the fix", err)
	}
	if err := s.DeleteRun(ctx, run); err != nil {
		t.Fatal(err)
	}
	if err := s.RecordLoggedModel(ctx, run, []byte(`{}`)); !errors.Is(err, ErrRunDeleted) {
		t.Errorf("on a deleted run: %v; want ErrRunDeleted", err)
	}
}

func TestSearchDatasets(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	exp, err := s.CreateExperiment(ctx, "e", nil)
	if err != nil {
		t.Fatal(err)
	}
	in := func(name, digest, context string) DatasetInput {
		d := DatasetInput{Dataset: Dataset{Name: name, Digest: digest, SourceType: "local", Source: "{}"}}
		if context != "" {
			d.Tags = []InputTag{{Key: TagDatasetContext, Value: context}}
		}
		return d
	}
	r0, r1, r2 := mustCreateRun(t, s, CreateRun{}), mustCreateRun(t, s, CreateRun{}), mustCreateRun(t, s, CreateRun{ExperimentID: exp})
	for _, c := range []struct {
		run    string
		inputs []DatasetInput
	}{
		{r0.Info.RunID, []DatasetInput{in("train", "d1", "training"), in("test", "d2", "evaluation")}},
		{r1.Info.RunID, []DatasetInput{in("train", "d1", "training"), in("train", "d1b", "")}},
		{r2.Info.RunID, []DatasetInput{in("other", "d3", "training")}},
	} {
		if err := s.LogInputs(ctx, c.run, c.inputs); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.SearchDatasets(ctx, []string{DefaultExperimentID})
	if err != nil {
		t.Fatal(err)
	}
	want := []DatasetSummary{
		{ExperimentID: "0", Name: "test", Digest: "d2", Context: "evaluation"},
		{ExperimentID: "0", Name: "train", Digest: "d1", Context: "training"},
		{ExperimentID: "0", Name: "train", Digest: "d1b"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SearchDatasets(0) (-want +got):\n%s", diff)
	}
	if got, err := s.SearchDatasets(ctx, []string{exp, "0"}); err != nil || len(got) != 4 {
		t.Errorf("SearchDatasets(both) = %d, %v; want 4", len(got), err)
	}
	if got, err := s.SearchDatasets(ctx, nil); err != nil || got != nil {
		t.Errorf("SearchDatasets(none) = %v, %v; want nothing", got, err)
	}
	if _, err := s.SearchDatasets(ctx, []string{"x1"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("SearchDatasets(x1) = %v; want ErrInvalid", err)
	}
}

func TestMetricHistoryBulk(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	a, b := mustCreateRun(t, s, CreateRun{}).Info.RunID, mustCreateRun(t, s, CreateRun{}).Info.RunID
	if b < a {
		a, b = b, a
	}
	// a: two points at step 1 (timestamps 20 and 10), one NaN at step 0.
	if err := s.LogBatch(ctx, a, []Metric{{Key: "m", Value: 2, Timestamp: 20, Step: 1}, {Key: "m", Value: 1, Timestamp: 10, Step: 1}, {Key: "m", Value: math.NaN(), Timestamp: 30, Step: 0}, {Key: "other", Value: 9, Timestamp: 1}}, nil, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.LogMetric(ctx, b, Metric{Key: "m", Value: 5, Timestamp: 1, Step: 7}); err != nil {
		t.Fatal(err)
	}
	got, err := s.MetricHistoryBulk(ctx, []string{b, "nope", a}, "m", 100)
	if err != nil {
		t.Fatal(err)
	}
	want := []RunMetric{
		{a, Metric{Key: "m", Value: 1, Timestamp: 10, Step: 1}},
		{a, Metric{Key: "m", Value: 2, Timestamp: 20, Step: 1}},
		{a, Metric{Key: "m", Value: math.NaN(), Timestamp: 30, Step: 0}},
		{b, Metric{Key: "m", Value: 5, Timestamp: 1, Step: 7}},
	}
	if diff := cmp.Diff(want, got, cmpopts.EquateNaNs()); diff != "" {
		t.Errorf("MetricHistoryBulk (-want +got):\n%s", diff)
	}
	if got, err := s.MetricHistoryBulk(ctx, []string{a, b}, "m", 2); err != nil || len(got) != 2 || got[1].Value != 2 {
		t.Errorf("limit 2 = %v, %v; want a's first two points", got, err)
	}
	if _, err := s.MetricHistoryBulk(ctx, []string{a}, "m", 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("limit 0 = %v; want ErrInvalid", err)
	}
	if _, err := s.MetricHistoryBulk(ctx, make([]string, 501), "m", 1); !errors.Is(err, ErrInvalid) {
		t.Errorf("501 runs = %v; want ErrInvalid", err)
	}
}

func TestUncheckedParent(t *testing.T) {
	s, _ := openStore(t)
	const ghost = "0123456789abcdef0123456789abcdef"
	if _, err := s.CreateRun(context.Background(), CreateRun{ParentRunID: ghost}); !errors.Is(err, ErrNotFound) {
		t.Errorf("a missing parent, checked: %v; want ErrNotFound", err)
	}
	r := mustCreateRun(t, s, CreateRun{ParentRunID: ghost, UncheckedParent: true})
	if v, _ := tagValue(t, s, r.Info.RunID, TagParentRunID); v != ghost {
		t.Errorf("parent tag = %q; want %q", v, ghost)
	}
}
