package tracking

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// openStore opens a store on a new file in t.TempDir() and closes it at
// the end of the test.
func openStore(t testing.TB, opts ...Option) (*SQLiteStore, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "cohort.db")
	s := openAt(t, path, opts...)
	return s, path
}

func openAt(t testing.TB, path string, opts ...Option) *SQLiteStore {
	t.Helper()
	if tt, ok := t.(*testing.T); ok {
		opts = append([]Option{WithLogger(slog.New(slog.NewTextHandler(tt.Output(), &slog.HandlerOptions{Level: slog.LevelDebug})))}, opts...)
	}
	s, err := OpenSQLite(context.Background(), path, opts...)
	if err != nil {
		t.Fatalf("OpenSQLite(%q) = %v", path, err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close() = %v", err)
		}
	})
	return s
}

// ms is a fixed time with millisecond precision, as the store keeps times.
func ms(n int64) time.Time { return time.UnixMilli(1_700_000_000_000 + n).UTC() }

func mustCreateRun(t testing.TB, s *SQLiteStore, req CreateRun) Run {
	t.Helper()
	r, err := s.CreateRun(context.Background(), req)
	if err != nil {
		t.Fatalf("CreateRun(%+v) = %v", req, err)
	}
	return r
}

// equateNaN lets cmp treat NaN metric values as equal.
var equateNaN = cmpopts.EquateNaNs()

func TestOpenSetsUpSchema(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	for _, c := range []struct{ pragma, want string }{
		{"journal_mode", "wal"},
		{"user_version", fmt.Sprint(schemaVersion)},
		{"foreign_keys", "1"},
		{"synchronous", "1"}, // NORMAL
	} {
		var got string
		if err := s.w.QueryRowContext(ctx, "PRAGMA "+c.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", c.pragma, err)
		}
		if got != c.want {
			t.Errorf("PRAGMA %s = %q, want %q", c.pragma, got, c.want)
		}
	}
	var qo string
	if err := s.r.QueryRowContext(ctx, "PRAGMA query_only").Scan(&qo); err != nil || qo != "1" {
		t.Errorf("read pool PRAGMA query_only = %q, %v; want \"1\"", qo, err)
	}
	exp, err := s.GetExperiment(ctx, DefaultExperimentID)
	if err != nil {
		t.Fatalf("GetExperiment(0) = %v", err)
	}
	wantLoc := fileURI(filepath.Join(filepath.Dir(path), "artifacts", "0"))
	if exp.Name != DefaultExperimentName || exp.ArtifactLocation != wantLoc || exp.LifecycleStage != LifecycleActive {
		t.Errorf("GetExperiment(0) = %+v, want name %q, location %q, active", exp, DefaultExperimentName, wantLoc)
	}
}

func TestOpenRejects(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()

	newer := filepath.Join(dir, "newer.db")
	s := openAt(t, newer)
	if _, err := s.w.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", schemaVersion+1)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	foreign := filepath.Join(dir, "mlflow.db")
	db, err := sql.Open("sqlite", foreign)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE alembic_version (version_num TEXT)"); err != nil {
		t.Fatal(err)
	}
	db.Close()

	for _, c := range []struct {
		path string
		want error
	}{
		{newer, ErrSchemaVersion},
		{foreign, ErrSchemaVersion},
		{"", ErrInvalid},
		{":memory:", ErrInvalid},
		{"file:x.db?mode=memory", ErrInvalid},
		{filepath.Join(dir, "no", "such", "dir", "x.db"), nil},
	} {
		s, err := OpenSQLite(ctx, c.path)
		if err == nil {
			s.Close()
			t.Errorf("OpenSQLite(%q) = nil error, want one", c.path)
			continue
		}
		if c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("OpenSQLite(%q) = %v, want %v", c.path, err, c.want)
		}
	}
}

func TestExperiments(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t, WithArtifactRoot(filepath.Join(t.TempDir(), "art")))
	before := time.Now().Add(-time.Second)
	id, err := s.CreateExperiment(ctx, "fashion-mnist", map[string]string{"team": "fl", "b": "2"})
	if err != nil {
		t.Fatalf("CreateExperiment = %v", err)
	}
	if id != "1" {
		t.Errorf("first CreateExperiment ID = %q, want \"1\"", id)
	}
	got, err := s.GetExperiment(ctx, id)
	if err != nil {
		t.Fatalf("GetExperiment(%s) = %v", id, err)
	}
	if got.CreationTime.Before(before) || !got.CreationTime.Equal(got.LastUpdateTime) {
		t.Errorf("GetExperiment times = %v, %v; want equal and recent", got.CreationTime, got.LastUpdateTime)
	}
	want := Experiment{
		ExperimentID:     id,
		Name:             "fashion-mnist",
		ArtifactLocation: fileURI(filepath.Join(s.root, id)),
		LifecycleStage:   LifecycleActive,
		CreationTime:     got.CreationTime,
		LastUpdateTime:   got.LastUpdateTime,
		Tags:             []Tag{{"b", "2"}, {"team", "fl"}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetExperiment(%s) mismatch (-want +got):\n%s", id, diff)
	}
	byName, err := s.GetExperimentByName(ctx, "fashion-mnist")
	if diff := cmp.Diff(want, byName); err != nil || diff != "" {
		t.Errorf("GetExperimentByName = %v, mismatch (-want +got):\n%s", err, diff)
	}
	if _, err := s.CreateExperiment(ctx, "fashion-mnist", nil); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("CreateExperiment(duplicate) = %v, want ErrAlreadyExists", err)
	}
	if got, err := s.EnsureExperiment(ctx, "fashion-mnist"); err != nil || got != id {
		t.Errorf("EnsureExperiment(existing) = %q, %v; want %q", got, err, id)
	}
	id2, err := s.EnsureExperiment(ctx, "synthetic")
	if err != nil || id2 != "2" {
		t.Errorf("EnsureExperiment(new) = %q, %v; want \"2\"", id2, err)
	}
	if err := s.SetExperimentTag(ctx, id2, Tag{"owner", "kit"}); err != nil {
		t.Errorf("SetExperimentTag = %v", err)
	}

	list, err := s.ListExperiments(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := func(exps []Experiment) []string {
		var n []string
		for _, e := range exps {
			n = append(n, e.ExperimentID+":"+e.Name)
		}
		return n
	}
	if diff := cmp.Diff([]string{"0:Default", "1:fashion-mnist", "2:synthetic"}, names(list)); diff != "" {
		t.Errorf("ListExperiments mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Tag{{"owner", "kit"}}, list[2].Tags); diff != "" {
		t.Errorf("ListExperiments tags of 2 mismatch (-want +got):\n%s", diff)
	}

	if err := s.DeleteExperiment(ctx, id2); err != nil {
		t.Fatalf("DeleteExperiment = %v", err)
	}
	if list, _ := s.ListExperiments(ctx); len(list) != 2 {
		t.Errorf("ListExperiments after delete = %v, want 2 experiments", names(list))
	}
	if _, err := s.EnsureExperiment(ctx, "synthetic"); !errors.Is(err, ErrExperimentDeleted) {
		t.Errorf("EnsureExperiment(deleted) = %v, want ErrExperimentDeleted", err)
	}
	if _, err := s.CreateExperiment(ctx, "synthetic", nil); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("CreateExperiment(deleted name) = %v, want ErrAlreadyExists", err)
	}
	if _, err := s.CreateRun(ctx, CreateRun{ExperimentID: id2}); !errors.Is(err, ErrExperimentDeleted) {
		t.Errorf("CreateRun(deleted experiment) = %v, want ErrExperimentDeleted", err)
	}
	if err := s.RestoreExperiment(ctx, id2); err != nil {
		t.Fatalf("RestoreExperiment = %v", err)
	}
	if e, _ := s.GetExperiment(ctx, id2); e.LifecycleStage != LifecycleActive {
		t.Errorf("after RestoreExperiment stage = %q, want active", e.LifecycleStage)
	}

	for _, c := range []struct {
		name string
		err  error
		want error
	}{
		{"GetExperiment(99)", get(s.GetExperiment(ctx, "99")), ErrNotFound},
		{"GetExperiment(abc)", get(s.GetExperiment(ctx, "abc")), ErrInvalid},
		{"GetExperiment(-1)", get(s.GetExperiment(ctx, "-1")), ErrInvalid},
		{"GetExperiment(01)", get(s.GetExperiment(ctx, "01")), ErrInvalid},
		{"GetExperimentByName(nope)", get(s.GetExperimentByName(ctx, "nope")), ErrNotFound},
		{"CreateExperiment(\"\")", get(s.CreateExperiment(ctx, " ", nil)), ErrInvalid},
		{"CreateExperiment(bad tag)", get(s.CreateExperiment(ctx, "x", map[string]string{"a//b": ""})), ErrInvalid},
		{"CreateExperiment(long tag)", get(s.CreateExperiment(ctx, "y", map[string]string{"k": strings.Repeat("v", MaxExperimentTagValueLength+1)})), ErrInvalid},
		{"DeleteExperiment(0)", s.DeleteExperiment(ctx, "0"), ErrInvalid},
		{"DeleteExperiment(99)", s.DeleteExperiment(ctx, "99"), ErrNotFound},
		{"RestoreExperiment(99)", s.RestoreExperiment(ctx, "99"), ErrNotFound},
		{"SetExperimentTag(99)", s.SetExperimentTag(ctx, "99", Tag{"a", "b"}), ErrNotFound},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.err, c.want)
		}
	}
}

// get drops the value of a (value, error) pair.
func get[T any](_ T, err error) error { return err }

func TestRunRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	exp, err := s.CreateExperiment(ctx, "e", nil)
	if err != nil {
		t.Fatal(err)
	}
	created := mustCreateRun(t, s, CreateRun{
		ExperimentID: exp,
		Name:         "fedavg",
		UserID:       "ada",
		StartTime:    ms(1),
		Tags:         map[string]string{TagArm: "fedavg", TagKind: KindFederated},
	})
	info := created.Info
	if ok, _ := regexp.MatchString(`^[0-9a-f]{12}4[0-9a-f]{3}[89ab][0-9a-f]{15}$`, info.RunID); !ok {
		t.Errorf("CreateRun RunID = %q, want a UUID4 as 32 hex characters", info.RunID)
	}
	wantInfo := RunInfo{
		RunID:          info.RunID,
		RunName:        "fedavg",
		ExperimentID:   exp,
		UserID:         "ada",
		Status:         StatusRunning,
		StartTime:      ms(1),
		ArtifactURI:    fileURI(filepath.Join(s.root, exp, info.RunID, "artifacts")),
		LifecycleStage: LifecycleActive,
	}
	wantTags := []Tag{{TagArm, "fedavg"}, {TagKind, KindFederated}, {TagRunName, "fedavg"}, {TagUser, "ada"}}
	if diff := cmp.Diff(Run{Info: wantInfo, Data: RunData{Tags: wantTags}}, created); diff != "" {
		t.Errorf("CreateRun mismatch (-want +got):\n%s", diff)
	}

	metrics := []Metric{
		{Key: "test_accuracy", Value: 0.5, Timestamp: 10, Step: 0},
		{Key: "test_accuracy", Value: 0.7, Timestamp: 5, Step: 1}, // higher step wins over later timestamp
		{Key: "test_accuracy", Value: 0.6, Timestamp: 20, Step: 0},
		{Key: "loss", Value: 2, Timestamp: 1, Step: 3},
		{Key: "loss", Value: 1, Timestamp: 1, Step: 3}, // same step and time: higher value wins, as MLflow
	}
	params := []Param{{"lr", "0.05"}, {"batch_size", "32"}}
	tags := []Tag{{"note", "one"}, {"note", "two"}} // the last of a key wins
	if err := s.LogBatch(ctx, info.RunID, metrics, params, tags); err != nil {
		t.Fatalf("LogBatch = %v", err)
	}
	if err := s.UpdateRun(ctx, info.RunID, StatusFinished, ms(99), "fedavg-2"); err != nil {
		t.Fatalf("UpdateRun = %v", err)
	}
	got, err := s.GetRun(ctx, info.RunID)
	if err != nil {
		t.Fatalf("GetRun = %v", err)
	}
	wantInfo.Status, wantInfo.EndTime, wantInfo.RunName = StatusFinished, ms(99), "fedavg-2"
	want := Run{
		Info: wantInfo,
		Data: RunData{
			Metrics: []Metric{{"loss", 2, 1, 3}, {"test_accuracy", 0.7, 5, 1}},
			Params:  []Param{{"batch_size", "32"}, {"lr", "0.05"}},
			Tags:    []Tag{{TagArm, "fedavg"}, {TagKind, KindFederated}, {TagRunName, "fedavg-2"}, {TagUser, "ada"}, {"note", "two"}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("GetRun after LogBatch and UpdateRun mismatch (-want +got):\n%s", diff)
	}
	hist, err := s.GetMetricHistory(ctx, info.RunID, "test_accuracy")
	if err != nil {
		t.Fatal(err)
	}
	wantHist := []Metric{{"test_accuracy", 0.5, 10, 0}, {"test_accuracy", 0.6, 20, 0}, {"test_accuracy", 0.7, 5, 1}}
	if diff := cmp.Diff(wantHist, hist); diff != "" {
		t.Errorf("GetMetricHistory mismatch (-want +got):\n%s", diff)
	}
	if hist, err := s.GetMetricHistory(ctx, info.RunID, "never"); err != nil || len(hist) != 0 {
		t.Errorf("GetMetricHistory(never logged) = %v, %v; want empty, nil", hist, err)
	}

	// The same point again is stored once; a tag renames the run.
	if err := s.LogMetric(ctx, info.RunID, metrics[0]); err != nil {
		t.Fatal(err)
	}
	if hist, _ := s.GetMetricHistory(ctx, info.RunID, "test_accuracy"); len(hist) != 3 {
		t.Errorf("history after logging a duplicate point has %d points, want 3", len(hist))
	}
	if err := s.SetTag(ctx, info.RunID, Tag{TagRunName, "renamed"}); err != nil {
		t.Fatal(err)
	}
	if r, _ := s.GetRun(ctx, info.RunID); r.Info.RunName != "renamed" {
		t.Errorf("RunName after SetTag(%s) = %q, want \"renamed\"", TagRunName, r.Info.RunName)
	}
	if err := s.DeleteTag(ctx, info.RunID, "note"); err != nil {
		t.Errorf("DeleteTag = %v", err)
	}
	if r, _ := s.GetRun(ctx, info.RunID); hasTag(r, "note") {
		t.Errorf("tag note still there after DeleteTag")
	}
	if err := s.DeleteTag(ctx, info.RunID, "note"); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteTag(missing) = %v, want ErrNotFound", err)
	}
	// A finished run still takes writes, as in MLflow.
	if err := s.LogParam(ctx, info.RunID, Param{"late", "yes"}); err != nil {
		t.Errorf("LogParam on FINISHED run = %v, want nil", err)
	}
}

func hasTag(r Run, key string) bool {
	_, ok := r.Data.Tag(key)
	return ok
}

func TestCreateRunDefaults(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	before := time.Now().Add(-time.Second)
	r := mustCreateRun(t, s, CreateRun{})
	if r.Info.ExperimentID != DefaultExperimentID {
		t.Errorf("CreateRun{} ExperimentID = %q, want %q", r.Info.ExperimentID, DefaultExperimentID)
	}
	if ok, _ := regexp.MatchString(`^[a-z]+-[a-z]+-\d{1,3}$`, r.Info.RunName); !ok {
		t.Errorf("generated RunName = %q, want adjective-animal-NNN", r.Info.RunName)
	}
	if v, _ := r.Data.Tag(TagRunName); v != r.Info.RunName {
		t.Errorf("tag %s = %q, want the run name %q", TagRunName, v, r.Info.RunName)
	}
	if r.Info.StartTime.Before(before) || !r.Info.EndTime.IsZero() {
		t.Errorf("CreateRun{} times = %v, %v; want now and zero", r.Info.StartTime, r.Info.EndTime)
	}
	got, err := s.GetRun(ctx, r.Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(r, got); diff != "" {
		t.Errorf("GetRun differs from CreateRun's result (-create +get):\n%s", diff)
	}
	// A name given as the tag is the name.
	r2 := mustCreateRun(t, s, CreateRun{Tags: map[string]string{TagRunName: "from-tag"}})
	if r2.Info.RunName != "from-tag" {
		t.Errorf("RunName from tag = %q, want \"from-tag\"", r2.Info.RunName)
	}
	if _, err := s.CreateRun(ctx, CreateRun{Name: "a", Tags: map[string]string{TagRunName: "b"}}); !errors.Is(err, ErrInvalid) {
		t.Errorf("CreateRun(name and tag disagree) = %v, want ErrInvalid", err)
	}
	if _, err := s.CreateRun(ctx, CreateRun{ExperimentID: "42"}); !errors.Is(err, ErrNotFound) {
		t.Errorf("CreateRun(missing experiment) = %v, want ErrNotFound", err)
	}
	if _, err := s.GetRun(ctx, "0123456789abcdef0123456789abcdef"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetRun(missing) = %v, want ErrNotFound", err)
	}
}

func TestNesting(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	exp, _ := s.CreateExperiment(ctx, "e", nil)
	job := mustCreateRun(t, s, CreateRun{ExperimentID: exp, Name: "job", StartTime: ms(0)})
	var arms []Run
	for i, name := range []string{"centralized", "fedavg", "fedprox"} {
		arms = append(arms, mustCreateRun(t, s, CreateRun{ExperimentID: exp, Name: name, ParentRunID: job.Info.RunID, StartTime: ms(int64(10 + i))}))
	}
	for _, site := range []string{"kit", "unibo"} {
		mustCreateRun(t, s, CreateRun{ExperimentID: exp, Name: site, ParentRunID: arms[1].Info.RunID, StartTime: ms(20), Tags: map[string]string{TagSite: site}})
	}
	if v, _ := arms[0].Data.Tag(TagParentRunID); v != job.Info.RunID {
		t.Errorf("arm tag %s = %q, want %q", TagParentRunID, v, job.Info.RunID)
	}

	names := func(runs []Run) []string {
		var n []string
		for _, r := range runs {
			n = append(n, r.Info.RunName)
		}
		return n
	}
	children, err := s.ChildRuns(ctx, job.Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"centralized", "fedavg", "fedprox"}, names(children)); diff != "" {
		t.Errorf("ChildRuns(job) mismatch (-want +got):\n%s", diff)
	}
	sites, err := s.ChildRuns(ctx, arms[1].Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"kit", "unibo"}, names(sites)); diff != "" {
		t.Errorf("ChildRuns(fedavg) mismatch (-want +got):\n%s", diff)
	}
	if leaf, err := s.ChildRuns(ctx, sites[0].Info.RunID); err != nil || len(leaf) != 0 {
		t.Errorf("ChildRuns(site) = %v, %v; want none", names(leaf), err)
	}
	// SearchRuns by parent: newest first.
	found, _, err := s.SearchRuns(ctx, RunQuery{ExperimentIDs: []string{exp}, ParentRunID: job.Info.RunID})
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"fedprox", "fedavg", "centralized"}, names(found)); diff != "" {
		t.Errorf("SearchRuns(parent=job) mismatch (-want +got):\n%s", diff)
	}
	// A deleted arm leaves ChildRuns.
	if err := s.DeleteRun(ctx, arms[2].Info.RunID); err != nil {
		t.Fatal(err)
	}
	if children, _ := s.ChildRuns(ctx, job.Info.RunID); len(children) != 2 {
		t.Errorf("ChildRuns after deleting an arm = %v, want 2 runs", names(children))
	}

	other, _ := s.CreateExperiment(ctx, "other", nil)
	for _, c := range []struct {
		req  CreateRun
		want error
	}{
		{CreateRun{ExperimentID: exp, ParentRunID: "0123456789abcdef0123456789abcdef"}, ErrNotFound},
		{CreateRun{ExperimentID: other, ParentRunID: job.Info.RunID}, ErrInvalid},
		{CreateRun{ExperimentID: exp, ParentRunID: job.Info.RunID, Tags: map[string]string{TagParentRunID: arms[0].Info.RunID}}, ErrInvalid},
	} {
		if _, err := s.CreateRun(ctx, c.req); !errors.Is(err, c.want) {
			t.Errorf("CreateRun(%+v) = %v, want %v", c.req, err, c.want)
		}
	}
	if _, err := s.ChildRuns(ctx, "0123456789abcdef0123456789abcdef"); !errors.Is(err, ErrNotFound) {
		t.Errorf("ChildRuns(missing) = %v, want ErrNotFound", err)
	}
}

func TestParamConflict(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	run := mustCreateRun(t, s, CreateRun{}).Info.RunID
	if err := s.LogParam(ctx, run, Param{"lr", "0.1"}); err != nil {
		t.Fatal(err)
	}
	if err := s.LogParam(ctx, run, Param{"lr", "0.1"}); err != nil {
		t.Errorf("LogParam(same value again) = %v, want nil", err)
	}
	if err := s.LogParam(ctx, run, Param{"lr", "0.2"}); !errors.Is(err, ErrParamConflict) {
		t.Errorf("LogParam(different value) = %v, want ErrParamConflict", err)
	}
	// A batch with a conflict writes nothing.
	err := s.LogBatch(ctx, run, []Metric{{Key: "m", Value: 1}}, []Param{{"new", "x"}, {"lr", "0.3"}}, []Tag{{"t", "v"}})
	if !errors.Is(err, ErrParamConflict) {
		t.Errorf("LogBatch(conflicting param) = %v, want ErrParamConflict", err)
	}
	got, _ := s.GetRun(ctx, run)
	if len(got.Data.Metrics) != 0 || len(got.Data.Params) != 1 || hasTag(got, "t") {
		t.Errorf("after a failed LogBatch the run holds %+v; want only param lr", got.Data)
	}
	if err := s.LogBatch(ctx, run, nil, []Param{{"a", "1"}, {"a", "2"}}, nil); !errors.Is(err, ErrParamConflict) {
		t.Errorf("LogBatch(same key twice, different values) = %v, want ErrParamConflict", err)
	}
	if err := s.LogBatch(ctx, run, nil, []Param{{"a", "1"}, {"a", "1"}}, nil); err != nil {
		t.Errorf("LogBatch(same param twice) = %v, want nil", err)
	}
}

func TestNonFiniteRoundTrip(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	run := mustCreateRun(t, s, CreateRun{}).Info.RunID
	values := []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 0, 1.0 / 3}
	var metrics, wantHist []Metric
	for i, v := range values {
		wantHist = append(wantHist, Metric{Key: "v", Value: v, Timestamp: 100, Step: int64(i)})
		metrics = append(metrics, wantHist[i], Metric{Key: fmt.Sprintf("only%d", i), Value: v, Timestamp: 100, Step: 7})
	}
	if err := s.LogBatch(ctx, run, metrics, nil, nil); err != nil {
		t.Fatalf("LogBatch(non-finite) = %v", err)
	}
	hist, err := s.GetMetricHistory(ctx, run, "v")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(wantHist, hist, equateNaN); diff != "" {
		t.Errorf("GetMetricHistory(non-finite) mismatch (-want +got):\n%s", diff)
	}
	r, _ := s.GetRun(ctx, run)
	for i, v := range values {
		key := fmt.Sprintf("only%d", i)
		m, ok := r.Data.Metric(key)
		if !ok || !(m.Value == v || math.IsNaN(m.Value) && math.IsNaN(v)) {
			t.Errorf("latest %s = %v (found %v), want %v", key, m.Value, ok, v)
		}
	}
	// NaN at a later step is the latest value; at the same point it is
	// kept apart from 0 and both stay in the history.
	if m, _ := r.Data.Metric("v"); m.Value != 1.0/3 {
		t.Errorf("latest v = %v, want %v", m.Value, 1.0/3)
	}
	nanRun := mustCreateRun(t, s, CreateRun{}).Info.RunID
	pts := []Metric{{"x", 0, 1, 1}, {"x", math.NaN(), 1, 1}, {"x", 5, 0, 0}}
	if err := s.LogBatch(ctx, nanRun, pts, nil, nil); err != nil {
		t.Fatal(err)
	}
	r, _ = s.GetRun(ctx, nanRun)
	if m, _ := r.Data.Metric("x"); !math.IsNaN(m.Value) {
		t.Errorf("latest x = %v, want NaN (NaN ranks above 0 at the same step and time)", m.Value)
	}
	if hist, _ := s.GetMetricHistory(ctx, nanRun, "x"); len(hist) != 3 {
		t.Errorf("history of x has %d points, want 3", len(hist))
	}
}

func TestLatestMetricAcrossBatches(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	run := mustCreateRun(t, s, CreateRun{}).Info.RunID
	for _, c := range []struct {
		m    Metric
		want Metric
	}{
		{Metric{"acc", 0.5, 100, 2}, Metric{"acc", 0.5, 100, 2}},
		{Metric{"acc", 0.9, 200, 1}, Metric{"acc", 0.5, 100, 2}}, // lower step: history only
		{Metric{"acc", 0.4, 50, 2}, Metric{"acc", 0.5, 100, 2}},  // same step, older
		{Metric{"acc", 0.4, 100, 2}, Metric{"acc", 0.5, 100, 2}}, // same step and time, lower value
		{Metric{"acc", math.Inf(1), 100, 2}, Metric{"acc", math.Inf(1), 100, 2}},
		{Metric{"acc", -1, 0, 3}, Metric{"acc", -1, 0, 3}},
	} {
		if err := s.LogMetric(ctx, run, c.m); err != nil {
			t.Fatal(err)
		}
		r, _ := s.GetRun(ctx, run)
		if got, _ := r.Data.Metric("acc"); got != c.want {
			t.Errorf("after LogMetric(%v) latest = %v, want %v", c.m, got, c.want)
		}
	}
}

func TestDeletedRun(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	run := mustCreateRun(t, s, CreateRun{Name: "gone"}).Info.RunID
	if err := s.SetTag(ctx, run, Tag{"k", "v"}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRun(ctx, run); err != nil {
		t.Fatalf("DeleteRun = %v", err)
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"LogMetric", s.LogMetric(ctx, run, Metric{Key: "m", Value: 1})},
		{"LogParam", s.LogParam(ctx, run, Param{"p", "1"})},
		{"SetTag", s.SetTag(ctx, run, Tag{"k", "w"})},
		{"DeleteTag", s.DeleteTag(ctx, run, "k")},
		{"UpdateRun", s.UpdateRun(ctx, run, StatusFinished, time.Now(), "")},
		{"LogArtifact", s.LogArtifact(ctx, run, "a.txt", strings.NewReader("x"))},
	} {
		if !errors.Is(c.err, ErrRunDeleted) {
			t.Errorf("%s on a deleted run = %v, want ErrRunDeleted", c.name, c.err)
		}
	}
	r, err := s.GetRun(ctx, run)
	if err != nil || r.Info.LifecycleStage != LifecycleDeleted {
		t.Errorf("GetRun(deleted) = %v, %v; want the run, deleted", r.Info.LifecycleStage, err)
	}
	for _, c := range []struct {
		view ViewType
		want int
	}{{ViewActiveOnly, 0}, {ViewDeletedOnly, 1}, {ViewAll, 1}} {
		runs, _, err := s.SearchRuns(ctx, RunQuery{ViewType: c.view})
		if err != nil || len(runs) != c.want {
			t.Errorf("SearchRuns(%v) = %d runs, %v; want %d", c.view, len(runs), err, c.want)
		}
	}
	if err := s.RestoreRun(ctx, run); err != nil {
		t.Fatalf("RestoreRun = %v", err)
	}
	if err := s.LogMetric(ctx, run, Metric{Key: "m", Value: 1}); err != nil {
		t.Errorf("LogMetric after RestoreRun = %v, want nil", err)
	}
	missing := "0123456789abcdef0123456789abcdef"
	for _, c := range []struct {
		name string
		err  error
	}{
		{"DeleteRun", s.DeleteRun(ctx, missing)},
		{"RestoreRun", s.RestoreRun(ctx, missing)},
		{"LogMetric", s.LogMetric(ctx, missing, Metric{Key: "m"})},
		{"UpdateRun", s.UpdateRun(ctx, missing, StatusFailed, time.Time{}, "")},
		{"GetMetricHistory", get(s.GetMetricHistory(ctx, missing, "m"))},
	} {
		if !errors.Is(c.err, ErrNotFound) {
			t.Errorf("%s on a missing run = %v, want ErrNotFound", c.name, c.err)
		}
	}
}

func TestValidation(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	run := mustCreateRun(t, s, CreateRun{}).Info.RunID
	many := func(n int) []Metric {
		ms := make([]Metric, n)
		for i := range ms {
			ms[i] = Metric{Key: "m", Step: int64(i)}
		}
		return ms
	}
	for _, c := range []struct {
		name    string
		metrics []Metric
		params  []Param
		tags    []Tag
		want    error
	}{
		{"good keys", []Metric{{Key: "a/b.c-d e:f_g"}, {Key: "énergie"}, {Key: ".a"}, {Key: "b."}}, nil, nil, nil},
		{"empty key", []Metric{{Key: ""}}, nil, nil, ErrInvalid},
		{"long key", []Metric{{Key: strings.Repeat("k", MaxKeyLength+1)}}, nil, nil, ErrInvalid},
		{"max key", []Metric{{Key: strings.Repeat("k", MaxKeyLength)}}, nil, nil, nil},
		{"double slash", nil, []Param{{"a//b", "x"}}, nil, ErrInvalid},
		{"dot part", nil, []Param{{"a/./b", "x"}}, nil, ErrInvalid},
		{"leading slash", nil, nil, []Tag{{"/a", "x"}}, ErrInvalid},
		{"trailing slash", nil, nil, []Tag{{"a/", "x"}}, ErrInvalid},
		{"dot dot", nil, nil, []Tag{{"..", "x"}}, ErrInvalid},
		{"tab", nil, nil, []Tag{{"a\tb", "x"}}, ErrInvalid},
		{"bad utf8 key", nil, nil, []Tag{{"a\xffb", "x"}}, ErrInvalid},
		{"bad utf8 value", nil, nil, []Tag{{"a", "\xff"}}, ErrInvalid},
		{"long param", nil, []Param{{"p", strings.Repeat("v", MaxParamValueLength+1)}}, nil, ErrInvalid},
		{"max param runes", nil, []Param{{"q", strings.Repeat("é", MaxParamValueLength)}}, nil, nil},
		{"long tag", nil, nil, []Tag{{"t", strings.Repeat("v", MaxTagValueLength+1)}}, ErrInvalid},
		{"too many metrics", many(MaxMetricsPerBatch + 1), nil, nil, ErrInvalid},
		{"too many params", nil, make([]Param, MaxParamsTagsPerBatch+1), nil, ErrInvalid}, // checked before the empty keys
		{"too many tags", nil, nil, make([]Tag, MaxParamsTagsPerBatch+1), ErrInvalid},
		{"too many in all", many(MaxMetricsPerBatch), []Param{{"x", "y"}}, nil, ErrInvalid},
	} {
		err := s.LogBatch(ctx, run, c.metrics, c.params, c.tags)
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("LogBatch(%s) = %v, want %v", c.name, err, c.want)
		}
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"UpdateRun(bad status)", s.UpdateRun(ctx, run, "DONE", time.Time{}, "")},
		{"UpdateRun(long name)", s.UpdateRun(ctx, run, "", time.Time{}, strings.Repeat("n", MaxTagValueLength+1))},
		{"SearchRuns(MaxResults -1)", get3(s.SearchRuns(ctx, RunQuery{MaxResults: -1}))},
		{"SearchRuns(MaxResults too big)", get3(s.SearchRuns(ctx, RunQuery{MaxResults: MaxSearchResults + 1}))},
		{"SearchRuns(bad token)", get3(s.SearchRuns(ctx, RunQuery{PageToken: "!!"}))},
		{"SearchRuns(negative offset)", get3(s.SearchRuns(ctx, RunQuery{PageToken: "eyJvZmZzZXQiOiAtMX0="}))},
		{"SearchRuns(view 7)", get3(s.SearchRuns(ctx, RunQuery{ViewType: 7}))},
		{"SearchRuns(experiment x)", get3(s.SearchRuns(ctx, RunQuery{ExperimentIDs: []string{"x"}}))},
		{"CreateRun(experiment x)", get(s.CreateRun(ctx, CreateRun{ExperimentID: "x"}))},
		{"CreateRun(bad tag)", get(s.CreateRun(ctx, CreateRun{Tags: map[string]string{"": "v"}}))},
	} {
		if !errors.Is(c.err, ErrInvalid) {
			t.Errorf("%s = %v, want ErrInvalid", c.name, c.err)
		}
	}
}

func get3[A, B any](_ A, _ B, err error) error { return err }

func TestSearchRunsPaging(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	exp, _ := s.CreateExperiment(ctx, "paged", nil)
	const n = 25
	want := make([]string, n)
	for i := range n {
		r := mustCreateRun(t, s, CreateRun{ExperimentID: exp, StartTime: ms(int64(i))})
		want[n-1-i] = r.Info.RunID // newest first
		if err := s.LogMetric(ctx, r.Info.RunID, Metric{Key: "i", Value: float64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	mustCreateRun(t, s, CreateRun{}) // in the Default experiment: not selected

	var got []string
	q := RunQuery{ExperimentIDs: []string{exp}, MaxResults: 10}
	for page := 0; ; page++ {
		runs, next, err := s.SearchRuns(ctx, q)
		if err != nil {
			t.Fatalf("SearchRuns page %d = %v", page, err)
		}
		if wantLen := min(10, n-page*10); len(runs) != wantLen {
			t.Errorf("SearchRuns page %d has %d runs, want %d", page, len(runs), wantLen)
		}
		for _, r := range runs {
			got = append(got, r.Info.RunID)
			if m, ok := r.Data.Metric("i"); !ok || r.Info.StartTime != ms(int64(m.Value)) {
				t.Errorf("run %s carries metric i = %v, %v; want its own", r.Info.RunID, m, ok)
			}
		}
		if next == "" {
			break
		}
		if page > 3 {
			t.Fatalf("SearchRuns keeps returning a next page token")
		}
		q.PageToken = next
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("SearchRuns over all pages mismatch (-want +got):\n%s", diff)
	}
	// A page that ends exactly at the last run has no next token.
	runs, next, err := s.SearchRuns(ctx, RunQuery{ExperimentIDs: []string{exp}, MaxResults: n})
	if err != nil || len(runs) != n || next != "" {
		t.Errorf("SearchRuns(MaxResults %d) = %d runs, token %q, %v; want %d, \"\"", n, len(runs), next, err, n)
	}
	all, _, err := s.SearchRuns(ctx, RunQuery{})
	if err != nil || len(all) != n+1 {
		t.Errorf("SearchRuns(all experiments) = %d runs, %v; want %d", len(all), err, n+1)
	}
}

func TestReopen(t *testing.T) {
	ctx := context.Background()
	s, path := openStore(t)
	exp, _ := s.CreateExperiment(ctx, "persist", map[string]string{"k": "v"})
	parent := mustCreateRun(t, s, CreateRun{ExperimentID: exp, Name: "job"})
	child := mustCreateRun(t, s, CreateRun{ExperimentID: exp, Name: "arm", ParentRunID: parent.Info.RunID})
	if err := s.LogBatch(ctx, child.Info.RunID,
		[]Metric{{"acc", 0.5, 1, 0}, {"acc", math.NaN(), 2, 1}, {"acc", math.Inf(-1), 3, 2}},
		[]Param{{"lr", "0.1"}}, []Tag{{"t", "v"}}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateRun(ctx, parent.Info.RunID, StatusFinished, ms(5), ""); err != nil {
		t.Fatal(err)
	}
	if err := s.LogArtifact(ctx, child.Info.RunID, "plots/a.txt", strings.NewReader("hello")); err != nil {
		t.Fatal(err)
	}
	wantExps, _ := s.ListExperiments(ctx)
	wantParent, _ := s.GetRun(ctx, parent.Info.RunID)
	wantChild, _ := s.GetRun(ctx, child.Info.RunID)
	wantHist, _ := s.GetMetricHistory(ctx, child.Info.RunID, "acc")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openAt(t, path)
	exps, err := s2.ListExperiments(ctx)
	if diff := cmp.Diff(wantExps, exps); err != nil || diff != "" {
		t.Errorf("ListExperiments after reopen = %v, mismatch (-want +got):\n%s", err, diff)
	}
	for _, want := range []Run{wantParent, wantChild} {
		got, err := s2.GetRun(ctx, want.Info.RunID)
		if diff := cmp.Diff(want, got, equateNaN); err != nil || diff != "" {
			t.Errorf("GetRun(%s) after reopen = %v, mismatch (-want +got):\n%s", want.Info.RunName, err, diff)
		}
	}
	hist, _ := s2.GetMetricHistory(ctx, child.Info.RunID, "acc")
	if diff := cmp.Diff(wantHist, hist, equateNaN); diff != "" || len(hist) != 3 {
		t.Errorf("history after reopen mismatch (-want +got):\n%s", diff)
	}
	children, _ := s2.ChildRuns(ctx, parent.Info.RunID)
	if len(children) != 1 || children[0].Info.RunID != child.Info.RunID {
		t.Errorf("ChildRuns after reopen = %d runs, want the arm", len(children))
	}
	if err := s2.LogParam(ctx, child.Info.RunID, Param{"lr", "0.2"}); !errors.Is(err, ErrParamConflict) {
		t.Errorf("LogParam(conflict) after reopen = %v, want ErrParamConflict", err)
	}
	files, err := s2.ListArtifacts(ctx, child.Info.RunID, "plots")
	if diff := cmp.Diff([]FileInfo{{"plots/a.txt", false, 5}}, files); err != nil || diff != "" {
		t.Errorf("ListArtifacts after reopen = %v, mismatch (-want +got):\n%s", err, diff)
	}
	var version int
	if err := s2.r.QueryRowContext(ctx, "PRAGMA user_version").Scan(&version); err != nil || version != schemaVersion {
		t.Errorf("user_version after reopen = %d, %v; want %d", version, err, schemaVersion)
	}
}

func TestCloseTwice(t *testing.T) {
	s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "x.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("first Close() = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close() = %v", err)
	}
	if _, err := s.GetRun(context.Background(), "x"); err == nil {
		t.Errorf("GetRun after Close = nil error, want one")
	}
}

func TestCancelledContext(t *testing.T) {
	s, _ := openStore(t)
	run := mustCreateRun(t, s, CreateRun{}).Info.RunID
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.LogMetric(ctx, run, Metric{Key: "m"}); !errors.Is(err, context.Canceled) {
		t.Errorf("LogMetric(cancelled) = %v, want context.Canceled", err)
	}
	if _, err := s.GetRun(ctx, run); !errors.Is(err, context.Canceled) {
		t.Errorf("GetRun(cancelled) = %v, want context.Canceled", err)
	}
}

func TestOpenOddPath(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "a b?c#d%20.db")
	s := openAt(t, path)
	if _, err := s.CreateExperiment(ctx, "x", nil); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the database is not at the path given: Stat(%q) = %v", path, err)
	}
	s2 := openAt(t, path)
	if _, err := s2.GetExperimentByName(ctx, "x"); err != nil {
		t.Errorf("GetExperimentByName after reopening %q = %v", path, err)
	}
}
