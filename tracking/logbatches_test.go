package tracking

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// runData is what a run holds: its latest values (RunData, the system
// tags aside) and every metric's history.
func runData(t *testing.T, s *SQLiteStore, runID string) (RunData, map[string][]Metric) {
	t.Helper()
	ctx := context.Background()
	run, err := s.GetRun(ctx, runID)
	if err != nil {
		t.Fatalf("GetRun(%s) = %v", runID, err)
	}
	d := run.Data
	var tags []Tag
	for _, tg := range d.Tags {
		if !strings.HasPrefix(tg.Key, "mlflow.") {
			tags = append(tags, tg)
		}
	}
	d.Tags = tags
	hist := make(map[string][]Metric)
	for _, m := range d.Metrics {
		if hist[m.Key], err = s.GetMetricHistory(ctx, runID, m.Key); err != nil {
			t.Fatalf("GetMetricHistory(%s, %s) = %v", runID, m.Key, err)
		}
	}
	return d, hist
}

// TestLogBatchesMatchesLogBatch logs the same batches (a run twice among
// them, NaN and older points, a rename) with one LogBatches call into one
// store and one LogBatch call each into another: the runs must read back
// the same.
func TestLogBatchesMatchesLogBatch(t *testing.T) {
	ctx := context.Background()
	one, _ := openStore(t)
	each, _ := openStore(t)
	const runs = 3
	var idsOne, idsEach []string
	for range runs {
		idsOne = append(idsOne, mustCreateRun(t, one, CreateRun{StartTime: ms(0)}).Info.RunID)
		idsEach = append(idsEach, mustCreateRun(t, each, CreateRun{StartTime: ms(0)}).Info.RunID)
	}
	batch := func(i, run int) RunBatch {
		return RunBatch{
			Metrics: []Metric{
				{Key: "accepted", Value: 1, Timestamp: int64(100 + i), Step: int64(i)},
				{Key: "loss", Value: math.NaN(), Timestamp: int64(100 + i), Step: int64(3 - i)},
				{Key: "loss", Value: float64(i), Timestamp: int64(50), Step: int64(3 - i)},
			},
			Params: []Param{{Key: "site", Value: fmt.Sprint(run)}},
			Tags:   []Tag{{Key: "round", Value: fmt.Sprint(i)}, {Key: TagRunName, Value: fmt.Sprintf("run-%d-%d", run, i)}},
		}
	}
	var batches []RunBatch
	for i, run := range []int{0, 1, 0, 2, 1} {
		b := batch(i, run)
		b.RunID = idsOne[run]
		b.Inputs = []DatasetInput{{Tags: []InputTag{{Key: TagDatasetContext, Value: "training"}},
			Dataset: Dataset{Name: fmt.Sprint("d", i%2), Digest: "abc", SourceType: "local", Source: "{}", Profile: fmt.Sprint(i)}}}
		batches = append(batches, b)
		if err := each.LogBatch(ctx, idsEach[run], b.Metrics, b.Params, b.Tags); err != nil {
			t.Fatalf("LogBatch(batch %d) = %v", i, err)
		}
		if err := each.LogInputs(ctx, idsEach[run], b.Inputs); err != nil {
			t.Fatalf("LogInputs(batch %d) = %v", i, err)
		}
	}
	if err := one.LogBatches(ctx, batches); err != nil {
		t.Fatalf("LogBatches = %v", err)
	}
	for i := range runs {
		gotD, gotH := runData(t, one, idsOne[i])
		wantD, wantH := runData(t, each, idsEach[i])
		if diff := cmp.Diff(wantD, gotD, equateNaN); diff != "" {
			t.Errorf("run %d after LogBatches, against LogBatch (-want +got):\n%s", i, diff)
		}
		if diff := cmp.Diff(wantH, gotH, equateNaN); diff != "" {
			t.Errorf("run %d's histories after LogBatches, against LogBatch (-want +got):\n%s", i, diff)
		}
		gotRun, err := one.GetRun(ctx, idsOne[i])
		if err != nil {
			t.Fatal(err)
		}
		wantRun, err := each.GetRun(ctx, idsEach[i])
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(wantRun.Inputs, gotRun.Inputs); diff != "" {
			t.Errorf("run %d's inputs after LogBatches, against LogInputs (-want +got):\n%s", i, diff)
		}
	}
	if err := one.LogBatches(ctx, nil); err != nil {
		t.Errorf("LogBatches(nil) = %v, want nil", err)
	}
}

// TestByRun checks the order LogBatches writes in: by run ID, each run's
// batches in the order given.
func TestByRun(t *testing.T) {
	for _, c := range []struct {
		runs []string
		want []int
	}{
		{nil, []int{}},
		{[]string{"a"}, []int{0}},
		{[]string{"c", "a", "b"}, []int{1, 2, 0}},
		{[]string{"b", "a", "b", "a", "b"}, []int{1, 3, 0, 2, 4}},
	} {
		batches := make([]RunBatch, len(c.runs))
		for i, r := range c.runs {
			batches[i].RunID = r
		}
		if got := byRun(batches); !slices.Equal(got, c.want) {
			t.Errorf("byRun(%q) = %v, want %v", c.runs, got, c.want)
		}
	}
}

// TestLogBatchesAllOrNothing checks that a batch that fails, whether its
// check fails or its write does, leaves every run as it was, with an
// error that names the batch and its run.
func TestLogBatchesAllOrNothing(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	good := mustCreateRun(t, s, CreateRun{}).Info.RunID
	bad := mustCreateRun(t, s, CreateRun{}).Info.RunID
	deleted := mustCreateRun(t, s, CreateRun{}).Info.RunID
	if err := s.LogBatch(ctx, bad, nil, []Param{{Key: "lr", Value: "0.1"}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRun(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	ok := RunBatch{RunID: good, Metrics: []Metric{{Key: "acc", Value: 1}}, Params: []Param{{Key: "p", Value: "v"}}, Tags: []Tag{{Key: "t", Value: "v"}},
		Inputs: []DatasetInput{{Dataset: Dataset{Name: "d", Digest: "x", SourceType: "local", Source: "{}"}}}}
	for _, c := range []struct {
		name string
		bad  RunBatch
		want error
	}{
		{"bad key", RunBatch{RunID: bad, Metrics: []Metric{{Key: "a//b"}}}, ErrInvalid},
		{"input without source", RunBatch{RunID: bad, Inputs: []DatasetInput{{Dataset: Dataset{Name: "d", Digest: "x", SourceType: "local"}}}}, ErrInvalid},
		{"too many metrics", RunBatch{RunID: bad, Metrics: make([]Metric, MaxMetricsPerBatch+1)}, ErrInvalid},
		{"param conflict", RunBatch{RunID: bad, Params: []Param{{Key: "lr", Value: "0.2"}}}, ErrParamConflict},
		{"no such run", RunBatch{RunID: strings.Repeat("0", 32), Tags: []Tag{{Key: "t", Value: "v"}}}, ErrNotFound},
		{"deleted run", RunBatch{RunID: deleted, Tags: []Tag{{Key: "t", Value: "v"}}}, ErrRunDeleted},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := s.LogBatches(ctx, []RunBatch{ok, c.bad, ok})
			if !errors.Is(err, c.want) {
				t.Fatalf("LogBatches(ok, %s, ok) = %v, want %v", c.name, err, c.want)
			}
			if want := "batch 1, to run " + c.bad.RunID; !strings.Contains(err.Error(), want) {
				t.Errorf("LogBatches(ok, %s, ok) = %q, want it to name %q", c.name, err, want)
			}
			d, _ := runData(t, s, good)
			run, err := s.GetRun(ctx, good)
			if err != nil {
				t.Fatal(err)
			}
			if len(d.Metrics)+len(d.Params)+len(d.Tags)+len(run.Inputs) != 0 {
				t.Errorf("after the failed LogBatches, run %s holds %+v and inputs %+v, want nothing", good, d, run.Inputs)
			}
		})
	}
}

// TestLogBatchesManyRuns logs to more runs than one query of runStages
// asks for: each run gets its batch, and a deleted run in the last chunk
// fails the call, named by its batch.
func TestLogBatchesManyRuns(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	const n = 2*idChunk + 1
	reqs := make([]CreateRun, n)
	for i := range reqs {
		reqs[i] = CreateRun{Name: fmt.Sprintf("site-%d", i)}
	}
	runs, err := s.CreateRuns(ctx, reqs)
	if err != nil {
		t.Fatal(err)
	}
	batches := make([]RunBatch, n)
	for i, r := range runs {
		batches[i] = RunBatch{RunID: r.Info.RunID, Metrics: []Metric{{Key: "acc", Value: float64(i), Step: 1}}}
	}
	if err := s.LogBatches(ctx, batches); err != nil {
		t.Fatalf("LogBatches(%d runs) = %v", n, err)
	}
	for _, i := range []int{0, idChunk, n - 1} {
		d, _ := runData(t, s, runs[i].Info.RunID)
		if m, ok := d.Metric("acc"); !ok || m.Value != float64(i) {
			t.Errorf("run %d: acc = %+v (%v), want %d", i, m, ok, i)
		}
	}
	if err := s.DeleteRun(ctx, runs[n-1].Info.RunID); err != nil {
		t.Fatal(err)
	}
	err = s.LogBatches(ctx, batches)
	if want := fmt.Sprintf("batch %d, to run %s", n-1, runs[n-1].Info.RunID); !errors.Is(err, ErrRunDeleted) || !strings.Contains(err.Error(), want) {
		t.Errorf("LogBatches with run %d deleted = %v, want ErrRunDeleted naming %q", n-1, err, want)
	}
}

// FuzzLogBatchesChecksAsLogBatch checks that LogBatches accepts and
// refuses an entry exactly as LogBatch does, and writes the same.
func FuzzLogBatchesChecksAsLogBatch(f *testing.F) {
	for _, seed := range []struct{ key, value string }{
		{"acc", "x"}, {"a/b", ""}, {"a//b", "x"}, {"", "x"}, {"k", "\xff"}, {"/a", "x"}, {strings.Repeat("k", 251), "v"},
	} {
		f.Add(seed.key, seed.value, int64(1))
	}
	s, _ := openStore(f)
	f.Fuzz(func(t *testing.T, key, value string, step int64) {
		ctx := context.Background()
		a := mustCreateRun(t, s, CreateRun{}).Info.RunID
		b := mustCreateRun(t, s, CreateRun{}).Info.RunID
		ms := []Metric{{Key: key, Value: 1, Step: step}}
		ps := []Param{{Key: key, Value: value}}
		ts := []Tag{{Key: key, Value: value}}
		errOne := s.LogBatch(ctx, a, ms, ps, ts)
		errBatches := s.LogBatches(ctx, []RunBatch{{RunID: b, Metrics: ms, Params: ps, Tags: ts}})
		if (errOne == nil) != (errBatches == nil) || errors.Is(errOne, ErrInvalid) != errors.Is(errBatches, ErrInvalid) {
			t.Fatalf("LogBatch(%q, %q) = %v but LogBatches = %v", key, value, errOne, errBatches)
		}
		gotD, gotH := runData(t, s, b)
		wantD, wantH := runData(t, s, a)
		if diff := cmp.Diff(wantD, gotD); diff != "" {
			t.Errorf("LogBatches(%q, %q) against LogBatch (-want +got):\n%s", key, value, diff)
		}
		if diff := cmp.Diff(wantH, gotH); diff != "" {
			t.Errorf("LogBatches(%q, %q) histories against LogBatch (-want +got):\n%s", key, value, diff)
		}
	})
}

// TestCreateRuns creates runs in one call: each reads back as returned,
// under its parent; a request that fails (named by index) creates none.
func TestCreateRuns(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	parent := mustCreateRun(t, s, CreateRun{Name: "arm"}).Info.RunID
	site := func(name string) CreateRun {
		return CreateRun{Name: name, ParentRunID: parent, StartTime: ms(1), Tags: map[string]string{"cohort.site": name}}
	}
	runs, err := s.CreateRuns(ctx, []CreateRun{site("a"), site("b")})
	if err != nil {
		t.Fatalf("CreateRuns = %v", err)
	}
	if len(runs) != 2 || runs[0].Info.RunName != "a" || runs[1].Info.RunName != "b" {
		t.Fatalf("CreateRuns = %+v, want runs a and b in order", runs)
	}
	for _, want := range runs {
		got, err := s.GetRun(ctx, want.Info.RunID)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want.Info, got.Info); diff != "" {
			t.Errorf("GetRun(%s).Info against CreateRuns' (-want +got):\n%s", want.Info.RunName, diff)
		}
		if diff := cmp.Diff(want.Data.Tags, got.Data.Tags); diff != "" {
			t.Errorf("GetRun(%s) tags against CreateRuns' (-want +got):\n%s", want.Info.RunName, diff)
		}
	}
	other, err := s.EnsureExperiment(ctx, "other")
	if err != nil {
		t.Fatal(err)
	}
	deleted, err := s.EnsureExperiment(ctx, "deleted")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteExperiment(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		bad  CreateRun
		want error
	}{
		{"no such parent", CreateRun{ParentRunID: strings.Repeat("0", 32)}, ErrNotFound},
		// The parent is checked (and remembered) for run 0 already.
		{"parent in another experiment", CreateRun{ExperimentID: other, ParentRunID: parent}, ErrInvalid},
		{"deleted experiment", CreateRun{ExperimentID: deleted}, ErrExperimentDeleted},
		{"no such experiment", CreateRun{ExperimentID: "99"}, ErrNotFound},
		{"bad tag", CreateRun{Tags: map[string]string{"": "v"}}, ErrInvalid},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := s.CreateRuns(ctx, []CreateRun{site("c"), c.bad})
			if !errors.Is(err, c.want) || !strings.Contains(err.Error(), "run 1") {
				t.Errorf("CreateRuns(ok, %s) = %v, want %v naming run 1", c.name, err, c.want)
			}
			children, err := s.ChildRuns(ctx, parent)
			if err != nil {
				t.Fatal(err)
			}
			if len(children) != 2 {
				t.Errorf("after the failed CreateRuns, %d runs under the parent, want 2", len(children))
			}
		})
	}
}

// TestEndRuns ends runs in one call, as UpdateRun ends each; a run that
// cannot be ended (deleted, unknown), named by index, or a bad status
// ends none.
func TestEndRuns(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	a := mustCreateRun(t, s, CreateRun{Name: "a", StartTime: ms(1)}).Info.RunID
	b := mustCreateRun(t, s, CreateRun{Name: "b", StartTime: ms(1)}).Info.RunID
	deleted := mustCreateRun(t, s, CreateRun{Name: "deleted"}).Info.RunID
	if err := s.DeleteRun(ctx, deleted); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		ids    []string
		status RunStatus
		want   error
	}{
		{"a deleted run", []string{a, deleted}, StatusFinished, ErrRunDeleted},
		{"an unknown run", []string{a, strings.Repeat("0", 32)}, StatusFinished, ErrNotFound},
		{"a bad status", []string{a}, "DONE", ErrInvalid},
		{"no end time", []string{a}, StatusFinished, ErrInvalid},
	} {
		end := ms(9)
		if c.name == "no end time" {
			end = time.Time{}
		}
		err := s.EndRuns(ctx, c.ids, c.status, end)
		if !errors.Is(err, c.want) || errors.Is(err, ErrInvalid) == strings.Contains(err.Error(), "run 1") {
			t.Errorf("EndRuns(%s) = %v, want %v naming run 1", c.name, err, c.want)
		}
		if r, _ := s.GetRun(ctx, a); r.Info.Status != StatusRunning || !r.Info.EndTime.IsZero() {
			t.Errorf("after EndRuns(%s) failed, run a is %s ending %v; want it running", c.name, r.Info.Status, r.Info.EndTime)
		}
	}
	if err := s.EndRuns(ctx, []string{a, b}, StatusFailed, ms(9)); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{a, b} {
		r, err := s.GetRun(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if r.Info.Status != StatusFailed || !r.Info.EndTime.Equal(ms(9)) {
			t.Errorf("run %s is %s ending %v, want FAILED ending %v", r.Info.RunName, r.Info.Status, r.Info.EndTime, ms(9))
		}
	}
}
