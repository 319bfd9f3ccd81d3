package data

import (
	"fmt"
	"hash/fnv"
)

// SiteSeed derives a site's seed from a job's seed and the site's name:
// the seed of its Synthetic(α,β) partition ([SyntheticSite]) and of its
// local test split.
func SiteSeed(seed int64, site string) int64 {
	h := fnv.New64a()
	h.Write([]byte(site))
	return int64(splitmix64(uint64(seed) ^ splitmix64(h.Sum64())))
}

// splitmix64 is SplitMix64's output function.
func splitmix64(s uint64) uint64 {
	s += 0x9e3779b97f4a7c15
	s = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9
	s = (s ^ (s >> 27)) * 0x94d049bb133111eb
	return s ^ (s >> 31)
}

// SyntheticSite generates one site's partition of Synthetic(α,β): one
// device of [Synthetic], drawn from its own generator seeded by
// [SiteSeed](seed, site), so that each site makes its data alone, from the
// job's seed and its name, and every site that shares them makes the
// same samples. The paper's devices are independent draws of one
// distribution; a federation of sites made this way is distributed as
// [Synthetic]'s, though not in the paper code's order of draws.
// cfg.Devices is not used.
func SyntheticSite(cfg SyntheticConfig, seed int64, site string) (*Dataset, error) {
	cfg.Devices = 1
	ds, err := Synthetic(cfg, SiteSeed(seed, site))
	if err != nil {
		return nil, err
	}
	return ds[0], nil
}

// SyntheticSiteSplit generates site's Synthetic(α,β) partition
// ([SyntheticSite]) and, when testFraction > 0, splits off its local test
// split, seeded by [SiteSeed]. `cohort run` makes every site's data with
// it and a deployed site its own, so the same job seed and site name give
// the same samples in both.
func SyntheticSiteSplit(cfg SyntheticConfig, seed int64, site string, testFraction float64) (train, test *Dataset, err error) {
	ds, err := SyntheticSite(cfg, seed, site)
	if err != nil {
		return nil, nil, fmt.Errorf("generating site %s's synthetic data: %w", site, err)
	}
	if testFraction > 0 {
		train, test = ds.Split(testFraction, SiteSeed(seed, site))
		return train, test, nil
	}
	return ds, nil, nil
}

// SyntheticTestSet is the coordinator's test set of a synthetic job, as
// `cohort run` makes it: every site's local test split
// ([SyntheticSiteSplit]) together; nil when the job holds out none
// (testFraction ≤ 0).
func SyntheticTestSet(cfg SyntheticConfig, seed int64, sites []string, testFraction float64) (*Dataset, error) {
	if testFraction <= 0 {
		return nil, nil
	}
	tests := make([]*Dataset, 0, len(sites))
	for _, s := range sites {
		_, te, err := SyntheticSiteSplit(cfg, seed, s, testFraction)
		if err != nil {
			return nil, err
		}
		tests = append(tests, te)
	}
	return Concat(tests...), nil
}

// VirtualPool is the name from which every worker of a simulation with
// virtual clients generates the synthetic data its clients' partitions
// are drawn from, so that all workers hold the same pool.
const VirtualPool = "virtual-clients"

// VirtualPoolSamples is the size of the synthetic pool of virtual clients
// when the job fixes no synthetic.samples_per_site.
const VirtualPoolSamples = 60_000

// SyntheticVirtualPool generates the synthetic pool that a simulation's
// virtual clients' partitions are drawn from: one device of the job's
// Synthetic(α,β) named [VirtualPool], of cfg.SamplesPerDevice samples or
// [VirtualPoolSamples], and its test split. Every worker trains on the
// pool and the coordinator evaluates on its test split, in `cohort run`
// and in a deployment alike.
func SyntheticVirtualPool(cfg SyntheticConfig, seed int64, testFraction float64) (train, test *Dataset, err error) {
	if cfg.SamplesPerDevice == 0 {
		cfg.SamplesPerDevice = VirtualPoolSamples
	}
	return SyntheticSiteSplit(cfg, seed, VirtualPool, testFraction)
}
