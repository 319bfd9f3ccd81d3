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

// CheckSpec implements server.SpecChecker. A deployment refuses what it
// cannot run: sites given by count alone (`cohort run`'s simulated
// site-1 … site-N, for whom no agent would ever join; virtual clients'
// workers, named worker-1 … worker-N, are agents a deployment starts,
// with `cohort launch slurm` say), simulated
// adversaries, a data.path (which nothing in a deployment reads), an exec model without model.init or with weights not
// uploaded, and a job whose evaluation needs the coordinator's test set
// when the folder coordinator.yaml names for it does not hold the dataset.
// A dataset coordinator.yaml does not list is no error: the job runs with
// no coordinator test set (the job's no_test_set). A failed load is not
// kept, so the job can be submitted again once the files are in place.
func (m *CoordinatorModels) CheckSpec(ctx context.Context, spec *job.Spec) error {
	if spec.SimulatedSites() && spec.Sites.Virtual == 0 {
		return fmt.Errorf("sites: given by count alone (%d sites, named site-1 … site-%d), which only `cohort run` simulates; a deployment's sites are institutes that join under their certificates' names, so list them: sites: {names: [kit, unibo, ...]}", spec.Sites.Count, spec.Sites.Count)
	}
	if len(spec.Sites.Adversaries) > 0 {
		return fmt.Errorf("sites.adversaries: simulated attackers run in `cohort run` only; a deployment's sites are real institutes, so remove sites.adversaries (site %s) from the job", spec.Sites.Adversaries[0].Site)
	}
	if spec.Data.Path != "" {
		return fmt.Errorf("data.path: %q is read by `cohort run` only; in a deployment each site reads its data from site.yaml data:, and the coordinator its test set from coordinator.yaml data:, so remove data.path from the job", spec.Data.Path)
	}
	if needsTestSet(spec) {
		if _, err := m.testSet(ctx, spec.Data.Dataset); err != nil {
			return err
		}
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

// needsTestSet reports whether the coordinator evaluates a job's global
// models on its own copy of a dataset read from disk: Fashion-MNIST with a
// built-in model (an exec model's are evaluated by a site or federated, a
// transfer model's by none) and no eval.site.
func needsTestSet(spec *job.Spec) bool {
	return spec.Data.Dataset == job.DatasetFashionMNIST && spec.Eval.Site == "" &&
		spec.Model.Kind != job.ModelExec && spec.Model.Kind != job.ModelTransfer
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
		if needsTestSet(spec) {
			var err error
			if test, err = m.testSet(ctx, spec.Data.Dataset); err != nil {
				return nil, err
			}
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
	if err := m.CheckSpec(ctx, spec); err != nil {
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
	key := SyntheticData(spec).String() + "\x00" + strings.Join(spec.Sites.Names, "\x00") + fmt.Sprintf("\x00%d", spec.Sites.Virtual)
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.synthKey == key {
		return m.synthTest, nil
	}
	var test *data.Dataset
	var err error
	if spec.Sites.Virtual > 0 {
		// Virtual clients draw from one pool; its test split is the
		// coordinator's, as in `cohort run`.
		_, test, err = data.SyntheticVirtualPool(syntheticConfig(spec), spec.Seed, spec.Data.TestFraction)
	} else {
		test, err = data.SyntheticTestSet(syntheticConfig(spec), spec.Seed, spec.Sites.Names, spec.Data.TestFraction)
	}
	if err != nil {
		return nil, err
	}
	m.synthKey, m.synthTest = key, test
	return test, nil
}

// testSet returns the coordinator's test set of dataset, nil when
// coordinator.yaml lists no folder for it. A test set loaded is kept; a
// failed load is not, so a fix on disk takes effect at the next job.
func (m *CoordinatorModels) testSet(ctx context.Context, dataset string) (*data.Dataset, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if t, ok := m.tests[dataset]; ok {
		return t, nil
	}
	path, ok := m.Paths[dataset]
	if !ok {
		return nil, nil
	}
	_, test, err := data.LoadFashionMNIST(ctx, data.LoadOptions{Path: path, Setting: "coordinator.yaml data." + dataset, NoDownload: true, Logger: m.Logger})
	if err != nil {
		return nil, fmt.Errorf("the coordinator's test set: %w; or remove data.%s from coordinator.yaml to run jobs without a coordinator test set (their accuracy is then the sites' federated evaluation, or eval.site's)", err, dataset)
	}
	if m.tests == nil {
		m.tests = make(map[string]*data.Dataset)
	}
	m.tests[dataset] = test
	return test, nil
}
