package prepare

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	"github.com/cohortfl/cohort/train"
)

func execSpec(t *testing.T, extra string) *job.Spec {
	t.Helper()
	s, err := job.Parse([]byte(`name: x
data: {dataset: fashion-mnist}
model: {kind: exec, command: [python3, train.py]` + extra + `}
sites: {names: [a, b]}
rounds: 1
arms: [{name: fedavg, strategy: fedavg}]
eval: {site: b}
`))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCoordinatorModelsExec: a deployed coordinator prepares exec jobs
// without running them: init on a site or from uploaded weights, refused
// without model.init.
func TestCoordinatorModelsExec(t *testing.T) {
	dir := WeightsDir{Dir: t.TempDir()}
	w := &model.Weights{Tensors: []model.Tensor{{Name: "fc.bias", Shape: []int{2}, Data: []float32{1, 2}}}}
	b, err := model.MarshalSafetensors(w, nil)
	if err != nil {
		t.Fatal(err)
	}
	const digest = "0000000000000000000000000000000000000000000000000000000000000001"
	up, err := dir.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := up.Commit(digest); err != nil {
		t.Fatal(err)
	}
	m := &CoordinatorModels{Trainers: &train.Factory{ExecRefused: "no"}, Weights: dir}
	ctx := context.Background()

	p, err := m.Prepare(ctx, execSpec(t, ", init: {site: a}"))
	if err != nil {
		t.Fatal(err)
	}
	if p.InitSite != "a" || p.Initial != nil || p.EvalSite != "b" || p.Evaluator != nil {
		t.Errorf("Prepare(init site a, eval site b) = init %q/%v, eval %q/%v", p.InitSite, p.Initial != nil, p.EvalSite, p.Evaluator)
	}
	p, err = m.Prepare(ctx, execSpec(t, ", init: {weights: \"sha256:"+digest+"\"}"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Initial == nil || p.Initial.Tensors[0].Data[1] != 2 {
		t.Errorf("Prepare(uploaded weights).Initial = %v, want the uploaded tensor", p.Initial)
	}

	for _, tt := range []struct{ extra, want string }{
		{"", "model.init: missing"},
		{", init: {weights: w.safetensors}", "submit the job with `cohort submit`"},
		{", init: {weights: \"sha256:" + strings.Repeat("f", 64) + "\"}", "no uploaded weights"},
	} {
		err := m.CheckSpec(ctx, execSpec(t, tt.extra))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckSpec(%q) = %v, want it to contain %q", tt.extra, err, tt.want)
		}
	}
}

// TestLocalInitWeights: `cohort run` reads model.init.weights relative to
// the job file's folder (the trainers' Dir) and starts from them.
func TestLocalInitWeights(t *testing.T) {
	dir := t.TempDir()
	w := &model.Weights{Tensors: []model.Tensor{{Name: "fc.bias", Shape: []int{2}, Data: []float32{3, 4}}}}
	b, err := model.MarshalSafetensors(w, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "init.safetensors"), b, 0o600); err != nil {
		t.Fatal(err)
	}
	m := &Models{Trainers: &train.Factory{Dir: dir}, Shape: []int{1, 28, 28}, Classes: 10}
	p, err := m.Prepare(context.Background(), execSpec(t, ", init: {weights: init.safetensors}"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Initial == nil || p.Initial.Tensors[0].Data[0] != 3 {
		t.Errorf("Prepare(init.weights).Initial = %v, want the file's weights", p.Initial)
	}
	if _, err := m.Prepare(context.Background(), execSpec(t, ", init: {weights: missing.safetensors}")); err == nil || !strings.Contains(err.Error(), "model.init.weights") {
		t.Errorf("Prepare(missing weights file) = %v, want an error naming model.init.weights", err)
	}
}

const transferJob = `
name: transfer-tiny
seed: 11
tracking: {experiment: transfer}
data: {dataset: synthetic, synthetic: {samples_per_site: 40}}
model: {kind: transfer, params: 1000}
sites: {count: 3}
rounds: 2
arms:
  - {name: fedavg, strategy: fedavg}
deadline: {round: 1m}
`

// TestTransferPrepared checks the coordinator's transfer model: params
// float32s from the seed, no evaluator, on a deployed coordinator too.
func TestTransferPrepared(t *testing.T) {
	spec, err := job.Parse([]byte(transferJob))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	prep, err := (&CoordinatorModels{Trainers: &train.Factory{}}).Prepare(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if n := prep.Initial.NumParams(); n != 1000 || prep.Evaluator != nil || prep.Spec.GetKind() != job.ModelTransfer {
		t.Errorf("prepared %d params, evaluator %v, kind %q; want 1000, none, transfer", n, prep.Evaluator, prep.Spec.GetKind())
	}
	again, err := (&Models{Trainers: &train.Factory{}, Shape: []int{60}, Classes: 10}).Prepare(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	if !weightsEqual(prep.Initial, again.Initial) {
		t.Error("cohort run's and a deployed coordinator's initial transfer models differ")
	}
}

func weightsEqual(a, b *model.Weights) bool {
	if len(a.Tensors) != len(b.Tensors) {
		return false
	}
	for i := range a.Tensors {
		if !slices.Equal(a.Tensors[i].Data, b.Tensors[i].Data) {
			return false
		}
	}
	return true
}

// TestCoordinatorModelsCheckSpec: a deployed coordinator refuses at submit
// what it cannot run, naming the key or setting and the fix, and accepts
// the rest; a dataset coordinator.yaml does not list is no error (the job
// runs with no coordinator test set), and a folder fixed after a refusal
// is read at the next submission.
func TestCoordinatorModelsCheckSpec(t *testing.T) {
	subset, err := filepath.Abs("../../data/testdata/fmnist-subset")
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "fmnist")
	const rest = "rounds: 1\narms: [{name: fedavg, strategy: fedavg}]\n"
	spec := func(t *testing.T, body string) *job.Spec {
		t.Helper()
		s, err := job.Parse([]byte("name: x\n" + body + rest))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	const (
		fmnist  = "data: {dataset: fashion-mnist}\n"
		mlp     = "model: {kind: mlp, hidden: [8]}\n"
		named   = "sites: {names: [kit, unibo]}\n"
		counted = "sites: {count: 2}\n"
	)
	for _, tt := range []struct {
		name  string
		paths map[string]string
		body  string
		want  []string // substrings of the error; none: accepted
	}{
		{"named sites", nil, fmnist + mlp + named, nil},
		{"sites by count", nil, fmnist + mlp + counted,
			[]string{"sites: given by count alone (2 sites, named site-1 … site-2)", "sites: {names: [kit, unibo, ...]}"}},
		{"sites by count, synthetic", nil, "data: {dataset: synthetic}\nmodel: {kind: logreg}\n" + counted, []string{"sites: given by count alone"}},
		{"virtual clients' workers", nil, "data: {dataset: synthetic}\nmodel: {kind: logreg}\nsites: {virtual: 1000000, per_round: 100, workers: 2}\n", nil},
		{"adversaries", nil, fmnist + mlp + "sites: {names: [kit, unibo], adversaries: [{site: kit, attacks: [sign_flip]}]}\n", []string{"sites.adversaries", "site kit"}},
		{"test set here", map[string]string{job.DatasetFashionMNIST: subset}, fmnist + mlp + named, nil},
		{"test set folder missing", map[string]string{job.DatasetFashionMNIST: missing}, fmnist + mlp + named,
			[]string{"coordinator.yaml data.fashion-mnist " + `"` + missing + `"`, "remove data.fashion-mnist from coordinator.yaml"}},
		{"folder missing, eval on a site", map[string]string{job.DatasetFashionMNIST: missing}, fmnist + mlp + named + "eval: {site: kit}\n", nil},
		{"folder missing, transfer model", map[string]string{job.DatasetFashionMNIST: missing}, fmnist + "model: {kind: transfer, params: 10}\n" + named, nil},
		{"folder missing, other dataset", map[string]string{job.DatasetFashionMNIST: missing}, "data: {dataset: synthetic}\nmodel: {kind: logreg}\n" + named, nil},
		{"data.path", nil, "data: {dataset: fashion-mnist, path: /srv/fmnist}\n" + mlp + named, []string{`data.path: "/srv/fmnist" is read by ` + "`cohort run`" + ` only`, "site.yaml data:", "remove data.path"}},
		{"exec without init", nil, fmnist + "model: {kind: exec, command: [python3, t.py]}\n" + named + "eval: {site: kit}\n", []string{"model.init: missing"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			m := &CoordinatorModels{Trainers: &train.Factory{}, Paths: tt.paths}
			err := m.CheckSpec(t.Context(), spec(t, tt.body))
			if len(tt.want) == 0 {
				if err != nil {
					t.Errorf("CheckSpec = %v, want accepted", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckSpec = nil, want an error containing %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("CheckSpec = %v, want it to contain %q", err, w)
				}
			}
		})
	}

	// The refusal is not kept: with the files in place the job passes,
	// and Prepare evaluates on them.
	m := &CoordinatorModels{Trainers: &train.Factory{}, Paths: map[string]string{job.DatasetFashionMNIST: missing}}
	s := spec(t, fmnist+mlp+named)
	if err := m.CheckSpec(t.Context(), s); err == nil {
		t.Fatal("CheckSpec with the test-set folder missing = nil, want a refusal")
	}
	if _, err := m.Prepare(t.Context(), s); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("Prepare with the test-set folder missing = %v, want an error naming %s", err, missing)
	}
	if err := os.CopyFS(missing, os.DirFS(subset)); err != nil {
		t.Fatal(err)
	}
	if err := m.CheckSpec(t.Context(), s); err != nil {
		t.Fatalf("CheckSpec after the files were put in place = %v, want accepted", err)
	}
	p, err := m.Prepare(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	if p.Evaluator == nil {
		t.Error("Prepare with the coordinator's test set: no evaluator, want one over it")
	}
}

// TestVirtualSyntheticTestSet: a deployed coordinator evaluates a
// simulation of virtual clients on synthetic data on the pool's test
// split, as `cohort run` does, not on the test splits of sites named like
// its workers (which hold no data of their own).
func TestVirtualSyntheticTestSet(t *testing.T) {
	spec, err := job.Parse([]byte(`name: v
seed: 9
data: {dataset: synthetic, synthetic: {samples_per_site: 500}}
model: {kind: logreg}
sites: {virtual: 1000, per_round: 10, workers: 2}
rounds: 1
arms: [{name: fedavg, strategy: fedavg}]
`))
	if err != nil {
		t.Fatal(err)
	}
	m := &CoordinatorModels{Trainers: &train.Factory{}}
	got, err := m.syntheticTest(spec)
	if err != nil {
		t.Fatal(err)
	}
	_, want, err := data.SyntheticVirtualPool(syntheticConfig(spec), spec.Seed, spec.Data.TestFraction)
	if err != nil {
		t.Fatal(err)
	}
	if got == nil || got.N != want.N || !slices.Equal(got.X, want.X) || !slices.Equal(got.Y, want.Y) {
		t.Fatalf("the coordinator's test set of a virtual synthetic job is not the pool's test split (%v)", got)
	}
	if got.N != 50 {
		t.Errorf("test split of a 500-sample pool: %d samples, want 50 (the default test fraction 0.1)", got.N)
	}
}

// TestWeightsDirUploads: an upload is kept under its digest by Commit and
// leaves no temporary file, whatever ends it: Commit, Commit of weights
// already kept (which stay as they were), Abort. An upload a crash cut
// short a day ago is removed by the next one; one in progress is not.
func TestWeightsDirUploads(t *testing.T) {
	dir := WeightsDir{Dir: filepath.Join(t.TempDir(), "weights")}
	const digest = "00000000000000000000000000000000000000000000000000000000000000aa"
	upload := func(b string, commit bool) {
		t.Helper()
		up, err := dir.Create()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := up.Write([]byte(b)); err != nil {
			t.Fatal(err)
		}
		if !commit {
			up.Abort()
			return
		}
		if err := up.Commit(digest); err != nil { // and no Abort: nothing left to drop
			t.Fatal(err)
		}
	}
	temps := func() []string {
		left, _ := filepath.Glob(filepath.Join(dir.Dir, ".upload-*"))
		return left
	}
	upload("first", true)
	upload("second", true) // the same digest: kept as it was
	upload("aborted", false)
	if got, err := os.ReadFile(filepath.Join(dir.Dir, digest+".safetensors")); err != nil || string(got) != "first" {
		t.Errorf("kept %q (%v), want the first upload's bytes", got, err)
	}
	if left := temps(); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
	stale, fresh := filepath.Join(dir.Dir, ".upload-crashed"), filepath.Join(dir.Dir, ".upload-running")
	for _, p := range []string{stale, fresh} {
		if err := os.WriteFile(p, []byte("part"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}
	upload("next", false)
	if left := temps(); len(left) != 1 || left[0] != fresh {
		t.Errorf("temporary files after the next upload: %v, want only the one in progress", left)
	}
	if up, err := dir.Create(); err != nil {
		t.Fatal(err)
	} else if err := up.Commit("not-hex"); err == nil {
		t.Error("Commit under a digest that is no SHA-256 succeeded")
	} else {
		up.Abort()
	}
	if left := temps(); len(left) != 1 {
		t.Errorf("temporary files after a refused Commit: %v", left)
	}
}
