package prepare

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/train"
)

// Models prepares a job's model when the coordinator holds the job's data
// (`cohort run`): initial weights from the built-in trainer (or the exec
// trainer, run in this process, or a model.init.weights file read here),
// evaluation on Test. It implements server.ModelProvider.
type Models struct {
	// Trainers builds the job's trainer; the sites of the same process
	// share it.
	Trainers *train.Factory
	// Test is the coordinator's test set; nil or empty evaluates nothing.
	Test *data.Dataset
	// Shape is one sample's shape, Classes the number of classes.
	Shape   []int
	Classes int
}

var _ server.ModelProvider = (*Models)(nil)

// Prepare implements server.ModelProvider.
func (m *Models) Prepare(ctx context.Context, spec *job.Spec) (*server.Prepared, error) {
	ms := modelSpec(spec, m.Shape, m.Classes)
	tr, err := m.Trainers.Trainer(trainConfig(spec, m.Shape, m.Classes))
	if err != nil {
		return nil, err
	}
	// A persistent exec trainer serves the coordinator's init and evaluate
	// tasks of a job in one worker.
	task := train.TaskInfo{Worker: "coordinator/" + spec.Name}
	var w *model.Weights
	if spec.Model.Kind == job.ModelTransfer {
		// The sites' transfer trainers take any model; the coordinator's
		// makes one of model.params parameters, and evaluates none: a
		// transfer model has no accuracy.
		t, err := train.NewTransfer(spec.Model.Params)
		if err != nil {
			return nil, err
		}
		if w, err = t.Init(spec.Seed); err != nil {
			return nil, fmt.Errorf("initial weights: %w", err)
		}
		return &server.Prepared{Spec: ms, Initial: w}, nil
	}
	if in := spec.Model.Init; in != nil && in.Weights != "" {
		// All sites are in this process: a weights file is read here, an
		// init site's trainer is this one.
		path := in.Weights
		if !filepath.IsAbs(path) && m.Trainers.Dir != "" {
			path = filepath.Join(m.Trainers.Dir, path)
		}
		if w, err = readInitWeights(path); err != nil {
			return nil, err
		}
	} else if ic, ok := tr.(interface {
		InitContext(context.Context, int64) (*model.Weights, error)
	}); ok {
		w, err = ic.InitContext(train.WithTask(ctx, task), spec.Seed)
	} else {
		w, err = tr.Init(spec.Seed)
	}
	if err != nil {
		return nil, fmt.Errorf("initial weights: %w", err)
	}
	p := &server.Prepared{Spec: ms, Initial: w}
	if m.Test != nil && m.Test.N > 0 {
		p.Evaluator = evaluator{tr: tr, test: m.Test, task: task, watts: spec.Energy.CPUWattsPerCore}
	}
	return p, nil
}

// modelSpec is what the sites build their trainer from.
func modelSpec(spec *job.Spec, shape []int, classes int) *pb.ModelSpec {
	return &pb.ModelSpec{
		Kind:       spec.Model.Kind,
		Hidden:     int32s(spec.Model.Hidden),
		Conv:       int32s(spec.Model.Conv),
		InputShape: int32s(shape),
		Classes:    int32(classes),
		Command:    spec.Model.Command,
		Env:        spec.Model.Env,
		ExecMode:   spec.Model.Exec.Mode,

		SyntheticData: SyntheticData(spec),
	}
}

// trainConfig is the coordinator's trainer config of a job: the one the
// sites build from [modelSpec]'s spec.
func trainConfig(spec *job.Spec, shape []int, classes int) train.Config {
	return train.Config{
		Kind:       spec.Model.Kind,
		Hidden:     ints(spec.Model.Hidden),
		Conv:       ints(spec.Model.Conv),
		InputShape: ints(shape),
		Classes:    classes,
		Command:    spec.Model.Command,
		Env:        spec.Model.Env,
		ExecMode:   spec.Model.Exec.Mode,
	}
}

// ints copies xs into a non-nil slice, as the sites' config from the wire
// has it, so that both configs print, and cache, alike.
func ints(xs []int) []int { return append(make([]int, 0, len(xs)), xs...) }

func int32s(xs []int) []int32 {
	out := make([]int32, len(xs))
	for i, x := range xs {
		out[i] = int32(x)
	}
	return out
}

// SyntheticData is what a job's sites generate their Synthetic(α,β) data
// from, or nil for another dataset. The coordinator sends it with the
// model spec of every task; `cohort run` generates its sites' data from it.
func SyntheticData(spec *job.Spec) *pb.SyntheticData {
	if spec.Data.Dataset != job.DatasetSynthetic {
		return nil
	}
	s := spec.Data.Synthetic
	return &pb.SyntheticData{
		Seed: spec.Seed, Alpha: s.Alpha, Beta: s.Beta, Dim: int32(s.Dim), Classes: int32(s.Classes),
		SamplesPerSite: int32(s.SamplesPerSite), TestFraction: spec.Data.TestFraction,
	}
}

// syntheticConfig is the generator config of a synthetic job's data.
func syntheticConfig(spec *job.Spec) data.SyntheticConfig {
	s := spec.Data.Synthetic
	return data.SyntheticConfig{Alpha: s.Alpha, Beta: s.Beta, Dim: s.Dim, Classes: s.Classes, SamplesPerDevice: s.SamplesPerSite}
}

// readInitWeights reads a model.init.weights file and checks it.
func readInitWeights(path string) (*model.Weights, error) {
	w, _, err := model.ReadSafetensorsFile(path)
	if err != nil {
		return nil, fmt.Errorf("model.init.weights: %w; give a safetensors file of the model's initial weights", err)
	}
	if err := w.CheckFinite(); err != nil {
		return nil, fmt.Errorf("model.init.weights %s: %w; give weights without NaN or Inf", path, err)
	}
	return w, nil
}

type evaluator struct {
	tr    train.Trainer
	test  *data.Dataset
	task  train.TaskInfo
	watts float64 // the job's energy.cpu_watts_per_core
}

// Evaluate evaluates w on the test set. An exec trainer evaluates in a
// process of its own, whose CPU time the coordinator's meter does not see:
// it is reported as the evaluation's estimated energy (a measured round
// counts the devices instead).
func (e evaluator) Evaluate(ctx context.Context, w *model.Weights) (server.Evaluation, error) {
	r, err := e.tr.Evaluate(train.WithTask(ctx, e.task), w, e.test)
	if err != nil {
		return server.Evaluation{}, err
	}
	ev := server.Evaluation{Loss: r.Loss, Accuracy: r.Accuracy, NumSamples: r.NumSamples}
	if r.CPUSeconds > 0 {
		ev.EnergyJoules, ev.EnergyMethod = r.CPUSeconds*e.watts, "estimated"
	}
	return ev, nil
}
