package tracking

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseFilter(t *testing.T) {
	for _, c := range []struct {
		in   string
		want []Clause
		err  string
	}{
		{in: "", want: nil},
		{in: "   ", want: nil},
		{in: "metrics.acc > 0.5", want: []Clause{{Entity: EntityMetric, Key: "acc", Op: ">", Kind: ValueNumber, Number: 0.5}}},
		{in: "metrics.acc > 0.5 and params.algo = 'fedavg'", want: []Clause{
			{Entity: EntityMetric, Key: "acc", Op: ">", Kind: ValueNumber, Number: 0.5},
			{Entity: EntityParam, Key: "algo", Op: "=", Kind: ValueString, String: "fedavg"},
		}},
		{in: "metric.`my acc`>=-1e3 AND tag.\"a b\" != \"x'y\"", want: []Clause{
			{Entity: EntityMetric, Key: "my acc", Op: ">=", Kind: ValueNumber, Number: -1000},
			{Entity: EntityTag, Key: "a b", Op: "!=", Kind: ValueString, String: "x'y"},
		}},
		{in: "tags.mlflow.runName like 'r%'", want: []Clause{{Entity: EntityTag, Key: "mlflow.runName", Op: "LIKE", Kind: ValueString, String: "r%"}}},
		{in: "attributes.run_id IN ('a', \"b\")", want: []Clause{{Entity: EntityAttribute, Key: "run_id", Op: "IN", Kind: ValueList, List: []string{"a", "b"}}}},
		{in: "run_id not in ('a')", want: []Clause{{Entity: EntityAttribute, Key: "run_id", Op: "NOT IN", Kind: ValueList, List: []string{"a"}}}},
		{in: "status ILIKE 'fin%'", want: []Clause{{Entity: EntityAttribute, Key: "status", Op: "ILIKE", Kind: ValueString, String: "fin%"}}},
		{in: "params.p = 'it''s'", want: []Clause{{Entity: EntityParam, Key: "p", Op: "=", Kind: ValueString, String: "it's"}}},
		{in: "metrics.acc >", err: "expected a value"},
		{in: "metrics.acc 0.5", err: "expected a comparison"},
		{in: "metrics.a > 1 or metrics.b > 2", err: "OR is not supported"},
		{in: "metrics.a > 1 metrics.b > 2", err: "expected AND"},
		{in: "foo.bar = 'x'", err: "unknown entity"},
		{in: "params.p = 'open", err: "unterminated"},
		{in: "params.p = fedavg", err: "expected a number"},
		{in: "run_id IN 'a'", err: "parenthesised"},
		{in: "run_id IN ('a'", err: "unterminated"},
		{in: "metrics. > 1", err: "empty key"},
	} {
		got, err := ParseFilter(c.in)
		if c.err != "" {
			if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseFilter(%q) = %v, %v; want ErrInvalid mentioning %q", c.in, got, err, c.err)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseFilter(%q) = %v", c.in, err)
			continue
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("ParseFilter(%q) (-want +got):\n%s", c.in, diff)
		}
	}
}

func TestParseOrderBy(t *testing.T) {
	got, err := ParseOrderBy([]string{"metrics.acc DESC", "params.`a b`", "start_time asc", "tags.t"})
	if err != nil {
		t.Fatal(err)
	}
	want := []OrderBy{
		{Entity: EntityMetric, Key: "acc"}, {Entity: EntityParam, Key: "a b", Ascending: true},
		{Entity: EntityAttribute, Key: "start_time", Ascending: true}, {Entity: EntityTag, Key: "t", Ascending: true},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseOrderBy (-want +got):\n%s", diff)
	}
	for _, bad := range []string{"metrics.acc UP", "metrics.acc DESC x", "", "bogus.x"} {
		if _, err := ParseOrderBy([]string{bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseOrderBy(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

// FuzzParseFilter checks that the parser never panics, fails only with
// ErrInvalid, and that whatever it accepts translates to SQL or fails
// with ErrInvalid, and runs against a store without an SQL error.
func FuzzParseFilter(f *testing.F) {
	for _, seed := range []string{
		"", "metrics.acc > 0.5 and params.algo = 'fedavg'", "tags.`a b` LIKE '%x_'", "attributes.run_id IN ('a', 'b')",
		"run_id NOT IN ('a')", "metrics.\"x\" <= -1e9", "params.p = 'it''s'", "status ILIKE 'F%'", "datasets.name = 'd'",
		"attributes.start_time >= 0 AND attributes.end_time < 5", "metrics.a > 1 or", "((", "`", "tags.x = \"\\\"\"",
	} {
		f.Add(seed)
	}
	s, _ := openStore(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, filter string) {
		clauses, err := ParseFilter(filter)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseFilter(%q) = %v, want ErrInvalid", filter, err)
			}
			return
		}
		if _, _, err := runConditions(clauses, false); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("runConditions(%q) = %v, want ErrInvalid", filter, err)
		}
		if _, _, err := s.SearchRuns(ctx, RunQuery{Filter: filter, MaxResults: 1}); err != nil && !errors.Is(err, ErrInvalid) {
			t.Fatalf("SearchRuns(%q) = %v, want nil or ErrInvalid", filter, err)
		}
	})
}

func TestSearchExperimentsAndRename(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	a, err := s.CreateExperiment(ctx, "alpha", map[string]string{"team": "kit"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateExperiment(ctx, "beta", nil); err != nil {
		t.Fatal(err)
	}
	names := func(q ExperimentQuery) []string {
		t.Helper()
		exps, _, err := s.SearchExperiments(ctx, q)
		if err != nil {
			t.Fatalf("SearchExperiments(%+v) = %v", q, err)
		}
		var out []string
		for _, e := range exps {
			out = append(out, e.Name)
		}
		return out
	}
	for _, c := range []struct {
		q    ExperimentQuery
		want []string
	}{
		{ExperimentQuery{OrderBy: []string{"name"}}, []string{"Default", "alpha", "beta"}},
		{ExperimentQuery{Filter: "tags.team = 'kit'"}, []string{"alpha"}},
		{ExperimentQuery{Filter: "name ILIKE 'B%'"}, []string{"beta"}},
		{ExperimentQuery{Filter: "name != 'Default'", OrderBy: []string{"experiment_id DESC"}}, []string{"beta", "alpha"}},
	} {
		if diff := cmp.Diff(c.want, names(c.q)); diff != "" {
			t.Errorf("SearchExperiments(%+v) (-want +got):\n%s", c.q, diff)
		}
	}
	if err := s.RenameExperiment(ctx, a, "beta"); !errors.Is(err, ErrAlreadyExists) {
		t.Errorf("rename to a taken name = %v, want ErrAlreadyExists", err)
	}
	if err := s.RenameExperiment(ctx, a, "gamma"); err != nil {
		t.Fatal(err)
	}
	if e, err := s.GetExperiment(ctx, a); err != nil || e.Name != "gamma" {
		t.Errorf("after rename: %v, %v", e.Name, err)
	}
	if err := s.RenameExperiment(ctx, "42", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("rename missing = %v, want ErrNotFound", err)
	}
	if _, _, err := s.SearchExperiments(ctx, ExperimentQuery{Filter: "metrics.a > 1"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("experiment filter on metrics = %v, want ErrInvalid", err)
	}
}

func TestLogInputsAndProxiedArtifacts(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	run := mustCreateRun(t, s, CreateRun{ProxiedArtifacts: true})
	if want := "mlflow-artifacts:/0/" + run.Info.RunID + "/artifacts"; run.Info.ArtifactURI != want {
		t.Errorf("ArtifactURI = %q, want %q", run.Info.ArtifactURI, want)
	}
	if err := s.LogArtifact(ctx, run.Info.RunID, "a.txt", strings.NewReader("x")); err != nil {
		t.Fatal(err)
	}
	rc, err := s.OpenArtifact(ctx, run.Info.RunID, "a.txt")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(rc)
	rc.Close()
	if string(b) != "x" {
		t.Errorf("artifact = %q", b)
	}
	in := DatasetInput{
		Tags:    []InputTag{{Key: TagDatasetContext, Value: "training"}},
		Dataset: Dataset{Name: "d", Digest: "1234", SourceType: "local", Source: "{}", Profile: `{"num_samples": 3}`},
	}
	for range 2 {
		if err := s.LogInputs(ctx, run.Info.RunID, []DatasetInput{in}); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.GetRun(ctx, run.Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]DatasetInput{in}, got.Inputs); diff != "" {
		t.Errorf("Inputs (-want +got):\n%s", diff)
	}
	bad := in
	bad.Dataset.Digest = strings.Repeat("x", MaxDatasetDigestLength+1)
	if err := s.LogInputs(ctx, run.Info.RunID, []DatasetInput{bad}); !errors.Is(err, ErrInvalid) {
		t.Errorf("long digest = %v, want ErrInvalid", err)
	}
	if err := s.DeleteRun(ctx, run.Info.RunID); err != nil {
		t.Fatal(err)
	}
	if err := s.LogInputs(ctx, run.Info.RunID, []DatasetInput{in}); !errors.Is(err, ErrRunDeleted) {
		t.Errorf("inputs into deleted run = %v, want ErrRunDeleted", err)
	}
}
