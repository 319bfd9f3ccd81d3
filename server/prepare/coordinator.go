package prepare

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/train"
)

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
	Trainers *train.Factory
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
		p, err := (&Models{Trainers: m.Trainers, Test: test, Shape: shape, Classes: classes}).Prepare(ctx, spec)
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
	key := SyntheticData(spec).String() + "\x00" + strings.Join(spec.Sites.Names, "\x00")
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.synthKey == key {
		return m.synthTest, nil
	}
	test, err := data.SyntheticTestSet(syntheticConfig(spec), spec.Seed, spec.Sites.Names, spec.Data.TestFraction)
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
