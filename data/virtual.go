package data

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// Sizes of a virtual client's partition when [VirtualSpec.SamplesPerClient]
// is 0: lognormal with median VirtualMedianSamples and σ = 0.5 (in log
// space), cut to [VirtualMinSamples, VirtualMaxSamples].
const (
	VirtualMedianSamples = 32
	VirtualMinSamples    = 8
	VirtualMaxSamples    = 512
)

// streamVirtual is the seed stream of virtual clients' partitions.
const streamVirtual uint64 = 0x7669727475616c // "virtual"

// VirtualSpec says how the partitions of virtual clients are drawn.
type VirtualSpec struct {
	// Seed is the job's seed; with a client's id it fixes that client's
	// partition.
	Seed int64
	// Alpha is the Dirichlet concentration of each client's class mix,
	// > 0; 0 draws the client's samples uniformly from the whole dataset.
	Alpha float64
	// SamplesPerClient fixes every client's sample count (at most the
	// dataset's size); 0 draws it from a lognormal distribution (see
	// [VirtualMedianSamples]).
	SamplesPerClient int
}

// VirtualPartitioner draws the data partitions of virtual clients of one
// dataset lazily: [VirtualPartitioner.Client] computes a client's sample
// indices from the spec's seed and the client's id alone, in time and
// memory linear in the client's samples, and keeps nothing of it. Only the
// dataset's per-class index lists are held, built once. A
// VirtualPartitioner is safe for concurrent use.
type VirtualPartitioner struct {
	ds   *Dataset
	spec VirtualSpec
	// byClass holds the sample indices of each class that has samples;
	// classes are their labels.
	byClass [][]int
	classes []int
}

// NewVirtualPartitioner returns the partitioner of ds's virtual clients.
// It fails (with [ErrInvalid]) on an empty dataset, a negative alpha or
// sample count, or a sample count above the dataset's size.
func NewVirtualPartitioner(ds *Dataset, spec VirtualSpec) (*VirtualPartitioner, error) {
	switch {
	case ds == nil || ds.N == 0:
		return nil, fmt.Errorf("%w: virtual clients need a dataset with samples to draw from", ErrInvalid)
	case !(spec.Alpha >= 0) || math.IsInf(spec.Alpha, 0):
		return nil, fmt.Errorf("%w: virtual clients' dirichlet alpha %g must be above 0 (or 0 for iid)", ErrInvalid, spec.Alpha)
	case spec.SamplesPerClient < 0 || spec.SamplesPerClient > ds.N:
		return nil, fmt.Errorf("%w: %d samples per virtual client must be between 0 and the dataset's %d", ErrInvalid, spec.SamplesPerClient, ds.N)
	}
	p := &VirtualPartitioner{ds: ds, spec: spec}
	for c, idx := range byClass(ds) {
		if len(idx) > 0 {
			p.byClass = append(p.byClass, idx)
			p.classes = append(p.classes, c)
		}
	}
	return p, nil
}

// Client returns the indices into the dataset of client id's samples,
// ascending and distinct. The same spec, dataset and id give the same
// indices on every call and machine; different ids draw independently.
//
// The client's size n is fixed or lognormal; with alpha > 0 its class
// proportions are drawn from Dirichlet(alpha) over the dataset's classes,
// its n samples' classes from those proportions, and each class's share
// of samples without replacement from that class's samples (at most all of
// them); with alpha 0 its n samples are drawn without replacement from the
// whole dataset.
func (p *VirtualPartitioner) Client(id int64) []int {
	r := rand.New(rand.NewPCG(uint64(p.spec.Seed), splitmix64(uint64(id))^streamVirtual))
	n := p.spec.SamplesPerClient
	if n == 0 {
		z := r.NormFloat64()
		n = int(math.Round(VirtualMedianSamples * math.Exp(0.5*z)))
		n = min(max(n, VirtualMinSamples), VirtualMaxSamples, p.ds.N)
	}
	if p.spec.Alpha == 0 || len(p.byClass) == 1 {
		out := floyd(r, p.ds.N, n, make([]int, 0, n))
		slices.Sort(out)
		return out
	}
	props := make([]float64, len(p.byClass))
	dirichletDraw(r, p.spec.Alpha, props)
	for i := 1; i < len(props); i++ {
		props[i] += props[i-1]
	}
	counts := make([]int, len(p.byClass))
	for range n {
		u := r.Float64() * props[len(props)-1]
		c, _ := slices.BinarySearch(props, u)
		counts[min(c, len(counts)-1)]++
	}
	out := make([]int, 0, n)
	for c, k := range counts {
		pool := p.byClass[c]
		start := len(out)
		out = floyd(r, len(pool), min(k, len(pool)), out)
		for i := start; i < len(out); i++ {
			out[i] = pool[out[i]]
		}
	}
	slices.Sort(out)
	return out
}

// ClientData returns client id's samples as a dataset of their own (a
// copy, which the caller drops once the client has trained).
func (p *VirtualPartitioner) ClientData(id int64) *Dataset {
	return p.ds.Subset(p.Client(id))
}

// floyd appends k distinct integers from [0, n) to out, drawn uniformly by
// Floyd's algorithm in O(k) time and memory.
func floyd(r *rand.Rand, n, k int, out []int) []int {
	if k <= 0 {
		return out
	}
	seen := make(map[int]struct{}, k)
	for j := n - k; j < n; j++ {
		t := r.IntN(j + 1)
		if _, dup := seen[t]; dup {
			t = j
		}
		seen[t] = struct{}{}
		out = append(out, t)
	}
	return out
}
