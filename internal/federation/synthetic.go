package federation

import (
	"fmt"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// syntheticData is what a job's sites generate their Synthetic(α,β) data
// from, or nil for another dataset. The coordinator sends it with the
// model spec of every task.
func syntheticData(spec *job.Spec) *pb.SyntheticData {
	if spec.Data.Dataset != job.DatasetSynthetic {
		return nil
	}
	s := spec.Data.Synthetic
	return &pb.SyntheticData{
		Seed: spec.Seed, Alpha: s.Alpha, Beta: s.Beta, Dim: int32(s.Dim), Classes: int32(s.Classes),
		SamplesPerSite: int32(s.SamplesPerSite), TestFraction: spec.Data.TestFraction,
	}
}

// SyntheticSiteData generates one site's Synthetic(α,β) data from sd and
// the site's name: its partition ([data.SyntheticSite]) and, when
// sd.TestFraction > 0, its local test split, both seeded by
// [data.SiteSeed]. `cohort run` makes every site's data with it, and a
// deployed site its own, so the same job seed and site name give the same
// samples in both.
func SyntheticSiteData(sd *pb.SyntheticData, site string) (train, test *data.Dataset, err error) {
	cfg := data.SyntheticConfig{
		Alpha: sd.GetAlpha(), Beta: sd.GetBeta(), Dim: int(sd.GetDim()), Classes: int(sd.GetClasses()),
		SamplesPerDevice: int(sd.GetSamplesPerSite()),
	}
	ds, err := data.SyntheticSite(cfg, sd.GetSeed(), site)
	if err != nil {
		return nil, nil, fmt.Errorf("generating site %s's synthetic data: %w", site, err)
	}
	if f := sd.GetTestFraction(); f > 0 {
		train, test = ds.Split(f, data.SiteSeed(sd.GetSeed(), site))
		return train, test, nil
	}
	return ds, nil, nil
}

// syntheticTestSet is the coordinator's test set of a synthetic job, as
// `cohort run` makes it: every site's local test split together; nil when
// the job holds out none (data.test_fraction: 0).
func syntheticTestSet(sd *pb.SyntheticData, sites []string) (*data.Dataset, error) {
	if sd.GetTestFraction() <= 0 {
		return nil, nil
	}
	tests := make([]*data.Dataset, 0, len(sites))
	for _, s := range sites {
		_, te, err := SyntheticSiteData(sd, s)
		if err != nil {
			return nil, err
		}
		tests = append(tests, te)
	}
	return data.Concat(tests...), nil
}
