package federation

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"google.golang.org/protobuf/proto"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
)

// LocalData is a deployed site's data: each dataset the site holds, read
// from the folder its config names (or the loader's default search when it
// names none), once, and served to every task. It implements the site
// agent's DataSource.
type LocalData struct {
	// Paths maps a dataset name to the folder holding it.
	Paths map[string]string
	// Site is the site's name, from which (with the job's seed) it
	// generates synthetic data.
	Site string
	// Logger receives where the data came from; nil discards it.
	Logger *slog.Logger

	mu    sync.Mutex
	cache map[string][2]*data.Dataset
	// synth is the last synthetic data generated, under its parameters.
	synth    *pb.SyntheticData
	synthSet [2]*data.Dataset
}

// LoadTask implements client.TaskDataSource: a synthetic dataset is
// generated from the parameters the task's model spec carries and the
// site's name, as `cohort run` generates this site's ([SyntheticSiteData]);
// the last one generated is kept. Other datasets are [LocalData.Load]'s.
func (l *LocalData) LoadTask(ctx context.Context, t *pb.Task) (*data.Dataset, *data.Dataset, error) {
	if t.GetDataset() != job.DatasetSynthetic {
		return l.Load(ctx, t.GetDataset(), t.GetKind())
	}
	sd := t.GetModel().GetSyntheticData()
	switch {
	case sd == nil:
		return nil, nil, errors.New("the coordinator sent no parameters of the job's synthetic data; upgrade the coordinator to this site's version")
	case l.Site == "":
		return nil, nil, errors.New("this site has no name to generate its synthetic data from; set name in site.yaml")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.synth != nil && proto.Equal(l.synth, sd) {
		return l.synthSet[0], l.synthSet[1], nil
	}
	train, test, err := SyntheticSiteData(sd, l.Site)
	if err != nil {
		return nil, nil, err
	}
	if l.Logger != nil {
		l.Logger.Info("synthetic_data_generated", "site", l.Site, "seed", sd.GetSeed(), "train", train.N, "test", nTest(SiteData{Test: test}))
	}
	l.synth, l.synthSet = sd, [2]*data.Dataset{train, test}
	return train, test, nil
}

// Load returns the site's training and test data of dataset. Fashion-MNIST
// is the only dataset a deployed site reads from disk; synthetic data it
// generates for each task ([LocalData.LoadTask]).
func (l *LocalData) Load(ctx context.Context, dataset string, kind pb.TaskKind) (*data.Dataset, *data.Dataset, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if c, ok := l.cache[dataset]; ok {
		return c[0], c[1], nil
	}
	switch dataset {
	case job.DatasetFashionMNIST:
	case job.DatasetSynthetic:
		return nil, nil, errors.New("synthetic data is generated from the task's parameters; this data source was asked without the task")
	default:
		return nil, nil, fmt.Errorf("this site holds no dataset %q; list it under data: in site.yaml", dataset)
	}
	train, test, err := data.LoadFashionMNIST(ctx, data.LoadOptions{Path: l.Paths[dataset], NoDownload: true, Logger: l.Logger})
	if err != nil {
		return nil, nil, fmt.Errorf("%w (set data.%s in site.yaml to the folder holding the four IDX files)", err, dataset)
	}
	if l.cache == nil {
		l.cache = make(map[string][2]*data.Dataset)
	}
	l.cache[dataset] = [2]*data.Dataset{train, test}
	return train, test, nil
}

// CoordinatorModels prepares jobs' models on a deployed coordinator: the
// input shape and classes of each dataset, initial weights from the
// built-in trainer, and evaluation on the coordinator's own test set where
// its config names one. The coordinator runs no job commands: an exec
// model's initial weights come from an init task on a site
// (model.init.site) or from weights uploaded with the job
// (model.init.weights: sha256:HEX), and its global models are evaluated
// by a site (eval.site) or by the sites' federated evaluation alone. It
// implements server.ModelProvider and server.SpecChecker.
type CoordinatorModels struct {
	// Trainers builds the built-in models.
	Trainers *Trainers
	// Weights, if set, holds the initial weights uploaded with jobs; nil
	// refuses model.init.weights.
	Weights WeightsStore
	// Paths maps a dataset name to the folder of the coordinator's copy.
	Paths map[string]string
	// Logger receives where the data came from; nil discards it.
	Logger *slog.Logger

	mu    sync.Mutex
	tests map[string]*data.Dataset
	// synthKey and synthTest are the last synthetic test set made.
	synthKey  string
	synthTest *data.Dataset
}

var (
	_ server.ModelProvider = (*CoordinatorModels)(nil)
	_ server.SpecChecker   = (*CoordinatorModels)(nil)
)

// WeightsStore holds uploaded initial weights by the hex SHA-256 of their
// safetensors bytes.
type WeightsStore interface {
	// Has reports whether the weights with this digest are stored.
	Has(digest string) bool
	// Read returns the checked weights with this digest.
	Read(digest string) (*model.Weights, error)
}

// CheckSpec implements server.SpecChecker: an exec model needs
// model.init, and uploaded weights must be here.
func (m *CoordinatorModels) CheckSpec(spec *job.Spec) error {
	if len(spec.Sites.Adversaries) > 0 {
		return fmt.Errorf("sites.adversaries: simulated attackers run in `cohort run` only; a deployment's sites are real institutes, so remove sites.adversaries (site %s) from the job", spec.Sites.Adversaries[0].Site)
	}
	if spec.Model.Kind != job.ModelExec {
		return nil
	}
	in := spec.Model.Init
	switch {
	case in == nil:
		return errors.New("model.init: missing; a deployed coordinator runs no job commands, so an exec model's initial weights come from a site or a file: set model.init: {site: NAME} (an init task on that site) or model.init: {weights: FILE.safetensors} (uploaded by `cohort submit`)")
	case in.Weights != "":
		_, err := m.weightsDigest(in.Weights)
		return err
	}
	return nil
}

// weightsDigest returns the digest of uploaded weights a job names.
func (m *CoordinatorModels) weightsDigest(ref string) (string, error) {
	digest, ok := strings.CutPrefix(ref, job.WeightsRefPrefix)
	switch {
	case !ok:
		return "", fmt.Errorf("model.init.weights: %q is a file on the submitting machine; submit the job with `cohort submit`, which uploads it and names it sha256:HEX", ref)
	case m.Weights == nil:
		return "", errors.New("model.init.weights: this coordinator takes no uploaded weights; use model.init: {site: NAME}")
	case !m.Weights.Has(digest):
		return "", fmt.Errorf("model.init.weights: no uploaded weights %q on this coordinator; submit with `cohort submit`, which uploads the file first", ref)
	}
	return digest, nil
}

// Prepare implements server.ModelProvider.
func (m *CoordinatorModels) Prepare(ctx context.Context, spec *job.Spec) (*server.Prepared, error) {
	var shape []int
	var classes int
	var test *data.Dataset
	switch spec.Data.Dataset {
	case job.DatasetFashionMNIST:
		shape, classes = []int{1, 28, 28}, 10
		if spec.Model.Kind != job.ModelTransfer {
			test = m.testSet(ctx, spec.Data.Dataset)
		}
	case job.DatasetSynthetic:
		shape, classes = []int{spec.Data.Synthetic.Dim}, spec.Data.Synthetic.Classes
		if spec.Model.Kind != job.ModelTransfer && spec.Eval.Site == "" {
			// The test set `cohort run` makes: every site's test split.
			var err error
			if test, err = m.syntheticTest(spec); err != nil {
				return nil, err
			}
		}
	default:
		return nil, fmt.Errorf("dataset %q is not known to this coordinator", spec.Data.Dataset)
	}
	if spec.Model.Kind != job.ModelExec {
		p, err := (&models{trainers: m.Trainers, test: test, shape: shape, classes: classes}).Prepare(ctx, spec)
		if err == nil && spec.Eval.Site != "" {
			p.Evaluator, p.EvalSite = nil, spec.Eval.Site
		}
		return p, err
	}
	if err := m.CheckSpec(spec); err != nil {
		return nil, err
	}
	p := &server.Prepared{Spec: modelSpec(spec, shape, classes), EvalSite: spec.Eval.Site}
	if in := spec.Model.Init; in.Weights != "" {
		digest, err := m.weightsDigest(in.Weights)
		if err != nil {
			return nil, err
		}
		if p.Initial, err = m.Weights.Read(digest); err != nil {
			return nil, fmt.Errorf("model.init.weights: %w", err)
		}
	} else {
		p.InitSite = in.Site
	}
	return p, nil
}

// syntheticTest returns a synthetic job's test set as `cohort run` makes
// it; the last one made is kept, for the job's other arms and a job that
// runs again.
func (m *CoordinatorModels) syntheticTest(spec *job.Spec) (*data.Dataset, error) {
	sd := syntheticData(spec)
	key := sd.String() + "\x00" + strings.Join(spec.Sites.Names, "\x00")
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.synthKey == key {
		return m.synthTest, nil
	}
	test, err := syntheticTestSet(sd, spec.Sites.Names)
	if err != nil {
		return nil, err
	}
	m.synthKey, m.synthTest = key, test
	return test, nil
}

func (m *CoordinatorModels) testSet(ctx context.Context, dataset string) *data.Dataset {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.tests[dataset]; ok {
		return t
	}
	path, ok := m.Paths[dataset]
	var test *data.Dataset
	if ok {
		_, t, err := data.LoadFashionMNIST(ctx, data.LoadOptions{Path: path, NoDownload: true, Logger: m.Logger})
		if err != nil && m.Logger != nil {
			m.Logger.Warn("coordinator_test_set_unavailable", "dataset", dataset, "err", err)
		}
		test = t
	}
	if m.tests == nil {
		m.tests = make(map[string]*data.Dataset)
	}
	m.tests[dataset] = test
	return test
}
