package federation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/train"
)

// Trainers builds train trainers from model specs, one per distinct
// spec, shared by every site of the process. It implements the site agent's
// TrainerFactory.
type Trainers struct {
	// Dir is the working directory of exec trainers, against which their
	// command's relative paths resolve (the job file's folder); empty
	// means the process's.
	Dir string
	// Logger receives exec trainers' process output; nil discards it.
	Logger *slog.Logger
	// ExecRefused, when not empty, refuses exec models (commands a job
	// asks to run) with this reason: a deployed site runs them only when
	// its config allows.
	ExecRefused string

	mu    sync.Mutex
	cache map[string]train.Trainer
}

// Trainer returns the trainer for spec.
func (t *Trainers) Trainer(spec *pb.ModelSpec) (train.Trainer, error) {
	cfg := trainConfig(spec)
	if cfg.Kind == job.ModelExec {
		if t.ExecRefused != "" {
			return nil, fmt.Errorf("the job's model runs the command %q: %s", cfg.Command, t.ExecRefused)
		}
		cfg.Dir, cfg.Logger = t.Dir, t.Logger
	}
	key := fmt.Sprint(cfg)
	t.mu.Lock()
	defer t.mu.Unlock()
	if tr, ok := t.cache[key]; ok {
		return tr, nil
	}
	tr, err := train.New(cfg)
	if err != nil {
		return nil, err
	}
	if t.cache == nil {
		t.cache = make(map[string]train.Trainer)
	}
	t.cache[key] = tr
	return tr, nil
}

// Close removes what the trainers left on disk (exec trainers' scratch
// files). No trainer may be in use.
func (t *Trainers) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var errs []error
	for _, tr := range t.cache {
		if c, ok := tr.(io.Closer); ok {
			errs = append(errs, c.Close())
		}
	}
	return errors.Join(errs...)
}

func ints(xs []int32) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x)
	}
	return out
}

func int32s(xs []int) []int32 {
	out := make([]int32, len(xs))
	for i, x := range xs {
		out[i] = int32(x)
	}
	return out
}

func trainConfig(spec *pb.ModelSpec) train.Config {
	return train.Config{
		Kind:       spec.GetKind(),
		Hidden:     ints(spec.GetHidden()),
		Conv:       ints(spec.GetConv()),
		InputShape: ints(spec.GetInputShape()),
		Classes:    int(spec.GetClasses()),
		Command:    spec.GetCommand(),
		Env:        spec.GetEnv(),
		ExecMode:   spec.GetExecMode(),
	}
}

// Datasets is a job's data as `cohort run` splits it: one partition per
// site, each with its local test split, the pooled training data of the
// centralized arm and the coordinator's test set.
type Datasets struct {
	// Sites holds each site's train and local test data, by site name.
	Sites map[string]SiteData
	// Pooled is every site's training data together.
	Pooled *data.Dataset
	// Test is the coordinator's held-out test set.
	Test *data.Dataset
}

// SiteData is one site's data.
type SiteData struct {
	Train, Test *data.Dataset
}

// Load reads and partitions a job's dataset.
func Load(ctx context.Context, spec *job.Spec, baseDir string) (*Datasets, error) {
	var parts []*data.Dataset
	var test *data.Dataset
	switch spec.Data.Dataset {
	case job.DatasetFashionMNIST:
		path := resolve(spec.Data.Path, baseDir)
		trainSet, testSet, err := data.LoadFashionMNIST(ctx, data.LoadOptions{Path: path})
		if err != nil {
			return nil, err
		}
		test = testSet
		p := spec.Data.Partition
		parts, err = data.Partition(trainSet, data.PartitionSpec{Kind: p.Kind, Alpha: p.Alpha, Labels: p.Labels, ShardsPerSite: p.ShardsPerSite}, spec.Sites.Count, spec.Seed)
		if err != nil {
			return nil, fmt.Errorf("partitioning %s: %w", spec.Data.Dataset, err)
		}
	case job.DatasetSynthetic:
		// Each site's own data, generated from the job's seed and the
		// site's name as a deployed site generates it.
		sd := syntheticData(spec)
		ds := &Datasets{Sites: make(map[string]SiteData, len(spec.Sites.Names))}
		var trains, tests []*data.Dataset
		for _, name := range spec.Sites.Names {
			tr, te, err := SyntheticSiteData(sd, name)
			if err != nil {
				return nil, err
			}
			ds.Sites[name] = SiteData{Train: tr, Test: te}
			trains = append(trains, tr)
			if te != nil {
				tests = append(tests, te)
			}
		}
		ds.Pooled = data.Concat(trains...)
		if len(tests) > 0 {
			ds.Test = data.Concat(tests...)
		}
		return ds, nil
	default:
		return nil, fmt.Errorf("dataset %q is not known to `cohort run`", spec.Data.Dataset)
	}
	ds := &Datasets{Sites: make(map[string]SiteData, len(parts))}
	var trains, tests []*data.Dataset
	for i, p := range parts {
		tr, te := p, (*data.Dataset)(nil)
		if spec.Data.TestFraction > 0 {
			tr, te = p.Split(spec.Data.TestFraction, spec.Seed+int64(i))
			tests = append(tests, te)
		}
		trains = append(trains, tr)
		ds.Sites[spec.Sites.Names[i]] = SiteData{Train: tr, Test: te}
	}
	ds.Pooled = data.Concat(trains...)
	ds.Test = test
	if ds.Test == nil && len(tests) > 0 {
		ds.Test = data.Concat(tests...)
	}
	return ds, nil
}

// resolve finds a relative data path against the working directory first,
// as a site would, then against baseDir (the job file's folder).
func resolve(path, baseDir string) string {
	if path == "" || filepath.IsAbs(path) || baseDir == "" {
		return path
	}
	if fileExists(path) {
		return path
	}
	if alt := filepath.Join(baseDir, path); fileExists(alt) {
		return alt
	}
	return path
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// siteSource serves one site's data to its agent.
type siteSource struct {
	dataset     string // the job's, for the lineage the site declares
	train, test *data.Dataset
}

func (s siteSource) Load(ctx context.Context, dataset string, kind pb.TaskKind) (*data.Dataset, *data.Dataset, error) {
	if s.train == nil {
		return nil, nil, fmt.Errorf("this site holds no data for %q", dataset)
	}
	return s.train, s.test, nil
}

// models prepares a job's model for the coordinator: initial weights from
// the trainer, evaluation on the coordinator's test set.
type models struct {
	trainers *Trainers
	test     *data.Dataset
	shape    []int
	classes  int
}

var _ server.ModelProvider = (*models)(nil)

func (m *models) Prepare(ctx context.Context, spec *job.Spec) (*server.Prepared, error) {
	ms := modelSpec(spec, m.shape, m.classes)
	tr, err := m.trainers.Trainer(ms)
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
		if !filepath.IsAbs(path) && m.trainers.Dir != "" {
			path = filepath.Join(m.trainers.Dir, path)
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
	if m.test != nil && m.test.N > 0 {
		p.Evaluator = evaluator{tr: tr, test: m.test, task: task, watts: spec.Energy.CPUWattsPerCore}
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

		SyntheticData: syntheticData(spec),
	}
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
