package data

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
)

// newRand returns the package's seeded generator: PCG, the same sequence on
// every platform and Go version.
func newRand(seed int64, stream uint64) *rand.Rand {
	return rand.New(rand.NewPCG(uint64(seed), 0x9e3779b97f4a7c15^stream))
}

// Subset returns the samples at idx, in that order, as a new Dataset.
func (d *Dataset) Subset(idx []int) *Dataset {
	out := &Dataset{Name: d.Name, N: len(idx), Features: d.Features, Shape: slices.Clone(d.Shape), Classes: d.Classes,
		X: make([]float32, len(idx)*d.Features), Y: make([]uint8, len(idx))}
	for i, j := range idx {
		copy(out.X[i*d.Features:(i+1)*d.Features], d.X[j*d.Features:(j+1)*d.Features])
		out.Y[i] = d.Y[j]
	}
	return out
}

// LabelHistogram returns the number of samples of each class.
func (d *Dataset) LabelHistogram() []int {
	h := make([]int, d.Classes)
	for _, y := range d.Y {
		if int(y) < len(h) {
			h[y]++
		}
	}
	return h
}

// Digest returns the hex SHA-256 of the samples and labels: which exact
// data trained a model.
func (d *Dataset) Digest() string {
	h := sha256.New()
	var b [4]byte
	for _, v := range d.X {
		binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
		h.Write(b[:])
	}
	h.Write(d.Y)
	return hex.EncodeToString(h.Sum(nil))
}

// Split holds out a stratified fraction of d as a test split.
func (d *Dataset) Split(frac float64, seed int64) (train, test *Dataset) {
	r := newRand(seed, 1)
	byClass := make([][]int, d.Classes)
	for i, y := range d.Y {
		byClass[y] = append(byClass[y], i)
	}
	var tr, te []int
	for _, idx := range byClass {
		r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		k := int(math.Round(frac * float64(len(idx))))
		te = append(te, idx[:k]...)
		tr = append(tr, idx[k:]...)
	}
	sort.Ints(tr)
	sort.Ints(te)
	return d.Subset(tr), d.Subset(te)
}

// Concat returns the datasets' samples together; nil parts are skipped.
func Concat(parts ...*Dataset) *Dataset {
	var out *Dataset
	for _, p := range parts {
		if p == nil {
			continue
		}
		if out == nil {
			out = &Dataset{Name: p.Name, Features: p.Features, Shape: slices.Clone(p.Shape), Classes: p.Classes}
		}
		out.X = append(out.X, p.X...)
		out.Y = append(out.Y, p.Y...)
		out.N += p.N
	}
	return out
}

// PartitionSpec says how to split a dataset across sites.
type PartitionSpec struct {
	// Kind is iid, dirichlet, labels or shards.
	Kind string
	// Alpha is the Dirichlet concentration (dirichlet).
	Alpha float64
	// Labels is the number of classes per site (labels).
	Labels int
	// ShardsPerSite is the number of label-sorted shards per site (shards;
	// default 2).
	ShardsPerSite int
}

// minPerSite is the least number of samples a dirichlet partition gives a
// site; draws that give fewer are redrawn, as the common implementations do.
const minPerSite = 10

// Partition splits ds across sites. The same seed gives the same split.
func Partition(ds *Dataset, p PartitionSpec, sites int, seed int64) ([]*Dataset, error) {
	if sites < 1 || sites > ds.N {
		return nil, fmt.Errorf("partitioning %d samples across %d sites: need 1 ≤ sites ≤ samples", ds.N, sites)
	}
	r := newRand(seed, 2)
	var idx [][]int
	switch p.Kind {
	case "iid", "":
		perm := r.Perm(ds.N)
		idx = make([][]int, sites)
		for i, j := range perm {
			idx[i%sites] = append(idx[i%sites], j)
		}
	case "dirichlet":
		if !(p.Alpha > 0) {
			return nil, fmt.Errorf("dirichlet partition: alpha %v must be > 0", p.Alpha)
		}
		var err error
		if idx, err = dirichlet(ds, p.Alpha, sites, r); err != nil {
			return nil, err
		}
	case "labels":
		if p.Labels < 1 || p.Labels > ds.Classes {
			return nil, fmt.Errorf("labels partition: %d classes per site must be between 1 and %d", p.Labels, ds.Classes)
		}
		idx = byLabels(ds, p.Labels, sites, r)
	case "shards":
		k := p.ShardsPerSite
		if k == 0 {
			k = 2
		}
		if k*sites > ds.N {
			return nil, fmt.Errorf("shards partition: %d shards of %d samples is impossible", k*sites, ds.N)
		}
		idx = shards(ds, k, sites, r)
	default:
		return nil, fmt.Errorf("unknown partition kind %q: use iid, dirichlet, labels or shards", p.Kind)
	}
	parts := make([]*Dataset, sites)
	for i, ix := range idx {
		sort.Ints(ix)
		parts[i] = ds.Subset(ix)
	}
	return parts, nil
}

func classIndex(ds *Dataset, r *rand.Rand) [][]int {
	byClass := make([][]int, ds.Classes)
	for i, y := range ds.Y {
		byClass[y] = append(byClass[y], i)
	}
	for _, c := range byClass {
		r.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
	}
	return byClass
}

func dirichlet(ds *Dataset, alpha float64, sites int, r *rand.Rand) ([][]int, error) {
	byClass := classIndex(ds, r)
	need := min(minPerSite, ds.N/sites)
	for try := 0; try < 1000; try++ {
		idx := make([][]int, sites)
		for _, c := range byClass {
			props := make([]float64, sites)
			var sum float64
			for s := range props {
				props[s] = gamma(r, alpha)
				sum += props[s]
			}
			start := 0
			acc := 0.0
			for s := range props {
				acc += props[s] / sum
				end := int(math.Round(acc * float64(len(c))))
				if s == sites-1 {
					end = len(c)
				}
				idx[s] = append(idx[s], c[start:end]...)
				start = end
			}
		}
		ok := true
		for _, ix := range idx {
			if len(ix) < need {
				ok = false
				break
			}
		}
		if ok {
			return idx, nil
		}
	}
	return nil, fmt.Errorf("dirichlet partition: no draw in 1000 gave every one of %d sites %d samples; raise alpha or use fewer sites", sites, need)
}

// gamma draws from Gamma(a, 1) (Marsaglia and Tsang, with the a < 1 boost).
func gamma(r *rand.Rand, a float64) float64 {
	if a < 1 {
		return gamma(r, a+1) * math.Pow(r.Float64(), 1/a)
	}
	d := a - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// byLabels gives each site k classes, dealing classes round-robin so every
// class is used, then splits each class evenly among the sites holding it.
func byLabels(ds *Dataset, k, sites int, r *rand.Rand) [][]int {
	byClass := classIndex(ds, r)
	order := r.Perm(ds.Classes)
	holders := make([][]int, ds.Classes)
	next := 0
	for s := 0; s < sites; s++ {
		seen := map[int]bool{}
		for len(seen) < k {
			c := order[next%ds.Classes]
			next++
			if !seen[c] {
				seen[c] = true
				holders[c] = append(holders[c], s)
			}
		}
	}
	idx := make([][]int, sites)
	for c, hs := range holders {
		if len(hs) == 0 {
			continue
		}
		for i, j := range byClass[c] {
			s := hs[i%len(hs)]
			idx[s] = append(idx[s], j)
		}
	}
	return idx
}

// shards sorts by label, cuts k·sites shards and deals k to each site
// (McMahan et al., 2017).
func shards(ds *Dataset, k, sites int, r *rand.Rand) [][]int {
	order := r.Perm(ds.N)
	sort.SliceStable(order, func(i, j int) bool { return ds.Y[order[i]] < ds.Y[order[j]] })
	n := k * sites
	perm := r.Perm(n)
	idx := make([][]int, sites)
	for i, sh := range perm {
		lo, hi := sh*ds.N/n, (sh+1)*ds.N/n
		idx[i/k] = append(idx[i/k], order[lo:hi]...)
	}
	return idx
}

// FormatHistograms writes each part's label histogram, one line a site.
func FormatHistograms(w io.Writer, names []string, parts []*Dataset) {
	for i, p := range parts {
		name := fmt.Sprintf("site %d", i+1)
		if i < len(names) {
			name = names[i]
		}
		fmt.Fprintf(w, "  %-12s %6d samples  labels %v\n", name, p.N, p.LabelHistogram())
	}
}
