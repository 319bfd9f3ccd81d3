package federation

import (
	"context"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
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
	if err := dir.Put(digest, b); err != nil {
		t.Fatal(err)
	}
	m := &CoordinatorModels{Trainers: &Trainers{ExecRefused: "no"}, Weights: dir}
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
		err := m.CheckSpec(execSpec(t, tt.extra))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("CheckSpec(%q) = %v, want it to contain %q", tt.extra, err, tt.want)
		}
	}
}
