package federation

import (
	"context"
	"fmt"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/server/prepare"
)

// loadVirtual reads the data of a simulation with virtual clients
// (sites.virtual): every worker holds the whole training set, the pool
// its clients' partitions are drawn from, and no local test split (the
// coordinator evaluates the global model on the test set).
func loadVirtual(ctx context.Context, spec *job.Spec, baseDir string) (*Datasets, error) {
	var pool, test *data.Dataset
	switch spec.Data.Dataset {
	case job.DatasetFashionMNIST:
		var err error
		pool, test, err = data.LoadFashionMNIST(ctx, data.LoadOptions{Path: resolve(spec.Data.Path, baseDir)})
		if err != nil {
			return nil, err
		}
	case job.DatasetSynthetic:
		var err error
		pool, test, err = client.VirtualPoolData(prepare.SyntheticData(spec))
		if err != nil {
			return nil, fmt.Errorf("generating the virtual clients' synthetic pool: %w", err)
		}
	default:
		return nil, fmt.Errorf("dataset %q is not known to `cohort run`", spec.Data.Dataset)
	}
	ds := &Datasets{Sites: make(map[string]SiteData, len(spec.Sites.Names)), Pooled: pool, Test: test}
	for _, name := range spec.Sites.Names {
		ds.Sites[name] = SiteData{Train: pool}
	}
	return ds, nil
}
