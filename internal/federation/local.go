package federation

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/prepare"
)

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
	if spec.Sites.Virtual > 0 {
		return loadVirtual(ctx, spec, baseDir)
	}
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
		sd := prepare.SyntheticData(spec)
		ds := &Datasets{Sites: make(map[string]SiteData, len(spec.Sites.Names))}
		var trains, tests []*data.Dataset
		for _, name := range spec.Sites.Names {
			tr, te, err := client.SyntheticSiteData(sd, name)
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
