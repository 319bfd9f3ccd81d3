package data

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
)

// Partition kinds, as a job's data.partition.kind names them.
const (
	// PartitionIID shuffles the samples and deals near-equal shares.
	PartitionIID = "iid"
	// PartitionDirichlet splits each class across sites in proportions
	// drawn from Dirichlet(α) (Hsu et al., 2019).
	PartitionDirichlet = "dirichlet"
	// PartitionLabels gives each site the samples of Labels classes.
	PartitionLabels = "labels"
	// PartitionShards sorts by label, cuts ShardsPerSite·sites shards and
	// deals each site ShardsPerSite of them (McMahan et al., 2017).
	PartitionShards = "shards"
)

// PartitionSpec says how to split a dataset across sites.
type PartitionSpec struct {
	// Kind is [PartitionIID] (also for ""), [PartitionDirichlet],
	// [PartitionLabels] or [PartitionShards].
	Kind string
	// Alpha is the Dirichlet concentration, > 0: 0.1 gives most sites a
	// dominant class, 100 is close to IID.
	Alpha float64
	// Labels is the number of distinct classes each site holds, from 1 to
	// the number of classes.
	Labels int
	// ShardsPerSite is the number of label-sorted shards each site gets;
	// 0 means 2, as in McMahan et al.
	ShardsPerSite int
}

// String names the partition as a job would, e.g. "dirichlet(α=0.5)".
func (p PartitionSpec) String() string {
	switch p.Kind {
	case "", PartitionIID:
		return PartitionIID
	case PartitionDirichlet:
		return "dirichlet(α=" + strconv.FormatFloat(p.Alpha, 'g', -1, 64) + ")"
	case PartitionLabels:
		return "labels(k=" + strconv.Itoa(p.Labels) + ")"
	case PartitionShards:
		return "shards(" + strconv.Itoa(cmp.Or(p.ShardsPerSite, 2)) + " per site)"
	}
	return strconv.Quote(p.Kind)
}

// MinSamplesPerSite is the least number of samples a dirichlet partition
// gives each site (or N/sites, if smaller): draws that give a site fewer
// are redrawn, as Hsu et al.'s and NIID-Bench's implementations do.
const MinSamplesPerSite = 10

// Bounds on the redraws before a dirichlet partition gives up as too
// skewed for the number of sites: at most maxDirichletDraws, and no more
// than dirichletBudget Gamma draws in all (about a second), so thousands of
// sites fail in a second rather than a minute; but at least
// minDirichletDraws.
const (
	maxDirichletDraws = 1000
	minDirichletDraws = 10
	dirichletBudget   = 10_000_000
)

// dirichletDraws is how many draws of sites×classes proportions a
// dirichlet partition tries.
func dirichletDraws(classes, sites int) int {
	return max(minDirichletDraws, min(maxDirichletDraws, dirichletBudget/max(1, classes*sites)))
}

// Partition splits ds across sites as p says, with a generator seeded by
// seed: the same dataset, spec, sites and seed give the same parts, each
// holding its samples in ds's order. iid, dirichlet and shards use every
// sample exactly once; labels does too, and refuses a request that would
// leave a class unused. Impossible requests (more sites than samples, k
// above the classes present, α ≤ 0) are errors wrapping [ErrInvalid].
func Partition(ds *Dataset, p PartitionSpec, sites int, seed int64) ([]*Dataset, error) {
	if err := ds.Validate(); err != nil {
		return nil, fmt.Errorf("partitioning: %w", err)
	}
	fail := func(format string, args ...any) error {
		return fmt.Errorf("partitioning %d samples across %d sites as %v: %w: %s", ds.N, sites, p, ErrInvalid, fmt.Sprintf(format, args...))
	}
	if sites < 1 || sites > ds.N {
		return nil, fail("need 1 ≤ sites ≤ samples; use fewer sites or more data")
	}
	r := newRand(seed, streamPartition)
	var idx [][]int
	switch p.Kind {
	case "", PartitionIID:
		perm := r.Perm(ds.N)
		idx = make([][]int, sites)
		for s := range idx {
			idx[s] = perm[s*ds.N/sites : (s+1)*ds.N/sites]
		}
	case PartitionDirichlet:
		if !(p.Alpha > 0) || math.IsInf(p.Alpha, 0) {
			return nil, fail("alpha %v must be a positive number (0.1 is very skewed, 100 nearly IID)", p.Alpha)
		}
		var tries int
		if idx, tries = dirichletSplit(ds, p.Alpha, sites, r); idx == nil {
			return nil, fail("no draw in %d gave every site at least %d samples; raise alpha or use fewer sites",
				tries, min(MinSamplesPerSite, ds.N/sites))
		}
	case PartitionLabels:
		present := 0
		for _, n := range ds.LabelHistogram() {
			if n > 0 {
				present++
			}
		}
		switch {
		case p.Labels < 1 || p.Labels > present:
			return nil, fail("labels = %d classes per site must be between 1 and the %d classes present", p.Labels, present)
		case sites*p.Labels < present:
			return nil, fail("%d sites × %d classes cover only %d of the %d classes; use labels ≥ %d or more sites",
				sites, p.Labels, sites*p.Labels, present, (present+sites-1)/sites)
		}
		idx = labelSplit(ds, p.Labels, sites, r)
		for s, ix := range idx {
			seen := map[uint8]bool{}
			for _, i := range ix {
				seen[ds.Y[i]] = true
			}
			if len(seen) != p.Labels {
				return nil, fail("site %d would hold %d classes: some class has fewer samples than the sites sharing it; use fewer sites or a smaller data.partition.labels",
					s+1, len(seen))
			}
		}
	case PartitionShards:
		k := cmp.Or(p.ShardsPerSite, 2)
		if k < 1 || k > ds.N/sites { // k·sites ≤ N, without k·sites overflowing
			return nil, fail("%d shards per site must be ≥ 1, and %d·%d shards at most the samples", k, k, sites)
		}
		idx = shardSplit(ds, k, sites, r)
	default:
		return nil, fmt.Errorf("partitioning: %w: unknown kind %q; use iid, dirichlet, labels or shards", ErrInvalid, p.Kind)
	}
	parts := make([]*Dataset, sites)
	for s, ix := range idx {
		if len(ix) == 0 {
			return nil, fail("site %d would get no samples; use fewer sites", s+1)
		}
		slices.Sort(ix)
		parts[s] = ds.Subset(ix)
	}
	return parts, nil
}

// classIndex returns each class's sample indices, shuffled.
func classIndex(ds *Dataset, r *rand.Rand) [][]int {
	c := byClass(ds)
	for _, idx := range c {
		r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
	}
	return c
}

// dirichletSplit deals each class's samples to the sites in proportions
// drawn from Dirichlet(α), redrawing until every site has its minimum.
// It returns nil and the number of draws tried when none did.
func dirichletSplit(ds *Dataset, alpha float64, sites int, r *rand.Rand) ([][]int, int) {
	classes := classIndex(ds, r)
	need := min(MinSamplesPerSite, ds.N/sites)
	props := make([]float64, sites)
	tries := dirichletDraws(len(classes), sites)
	for try := range tries {
		idx := make([][]int, sites)
		for _, c := range classes {
			dirichletDraw(r, alpha, props)
			start, acc := 0, 0.0
			for s, q := range props {
				acc += q
				end := int(math.Round(acc * float64(len(c))))
				if s == sites-1 {
					end = len(c)
				}
				end = min(max(end, start), len(c))
				idx[s] = append(idx[s], c[start:end]...)
				start = end
			}
		}
		if slices.IndexFunc(idx, func(ix []int) bool { return len(ix) < need }) < 0 {
			return idx, try + 1
		}
	}
	return nil, tries
}

// labelSplit gives each site k distinct classes, dealt round-robin from a
// shuffled class order so every class has a holder and holders differ by
// at most one per class, then splits each class evenly among its holders.
func labelSplit(ds *Dataset, k, sites int, r *rand.Rand) [][]int {
	classes := classIndex(ds, r)
	var present []int
	for c, idx := range classes {
		if len(idx) > 0 {
			present = append(present, c)
		}
	}
	order := make([]int, len(present))
	for i, j := range r.Perm(len(present)) {
		order[i] = present[j]
	}
	holders := make([][]int, len(classes))
	for s := range sites {
		for j := range k { // k consecutive places of a cycle of len(order) ≥ k: distinct
			c := order[(s*k+j)%len(order)]
			holders[c] = append(holders[c], s)
		}
	}
	idx := make([][]int, sites)
	for c, hs := range holders {
		n := len(classes[c])
		for i, s := range hs {
			idx[s] = append(idx[s], classes[c][i*n/len(hs):(i+1)*n/len(hs)]...)
		}
	}
	return idx
}

// shardSplit sorts the samples by label (ties in random order), cuts
// k·sites near-equal shards and deals each site k random ones (McMahan et
// al., 2017).
func shardSplit(ds *Dataset, k, sites int, r *rand.Rand) [][]int {
	var order []int
	for _, c := range classIndex(ds, r) {
		order = append(order, c...)
	}
	n := k * sites
	idx := make([][]int, sites)
	for i, sh := range r.Perm(n) {
		idx[i/k] = append(idx[i/k], order[sh*ds.N/n:(sh+1)*ds.N/n]...)
	}
	return idx
}
