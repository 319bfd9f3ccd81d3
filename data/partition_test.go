package data

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// toyDataset has n samples of one feature holding the sample's index,
// labels cycling through classes: a part's X says which samples it got.
func toyDataset(n, classes int) *Dataset {
	ds := &Dataset{Name: "toy", N: n, Features: 1, Shape: []int{1}, Classes: classes, X: make([]float32, n), Y: make([]uint8, n)}
	for i := range n {
		ds.X[i] = float32(i)
		ds.Y[i] = uint8(i % classes)
	}
	return ds
}

// sampleIDs returns which toy samples each part holds.
func sampleIDs(parts []*Dataset) [][]int {
	out := make([][]int, len(parts))
	for s, p := range parts {
		for _, v := range p.X {
			out[s] = append(out[s], int(v))
		}
	}
	return out
}

func mustPartition(t *testing.T, ds *Dataset, p PartitionSpec, sites int, seed int64) []*Dataset {
	t.Helper()
	parts, err := Partition(ds, p, sites, seed)
	if err != nil {
		t.Fatalf("Partition(%v, %d sites, seed %d) = %v", p, sites, seed, err)
	}
	return parts
}

var allKinds = []PartitionSpec{
	{Kind: PartitionIID},
	{Kind: ""},
	{Kind: PartitionDirichlet, Alpha: 0.1},
	{Kind: PartitionDirichlet, Alpha: 0.5},
	{Kind: PartitionDirichlet, Alpha: 100},
	{Kind: PartitionLabels, Labels: 2},
	{Kind: PartitionLabels, Labels: 3},
	{Kind: PartitionLabels, Labels: 10},
	{Kind: PartitionShards},
	{Kind: PartitionShards, ShardsPerSite: 3},
}

func TestPartitionUsesEverySampleOnce(t *testing.T) {
	ds := toyDataset(3000, 10)
	for _, p := range allKinds {
		for _, sites := range []int{1, 5, 7, 20} {
			if p.Kind == PartitionLabels && sites*p.Labels < 10 {
				continue
			}
			parts := mustPartition(t, ds, p, sites, 1)
			if len(parts) != sites {
				t.Fatalf("Partition(%v, %d) = %d parts, want %d", p, sites, len(parts), sites)
			}
			var all []int
			for s, ids := range sampleIDs(parts) {
				if !slices.IsSorted(ids) {
					t.Errorf("Partition(%v, %d): site %d's samples are not in the dataset's order", p, sites, s)
				}
				for i, id := range ids {
					if parts[s].Y[i] != ds.Y[id] {
						t.Fatalf("Partition(%v, %d): site %d sample %d has label %d, want %d", p, sites, s, id, parts[s].Y[i], ds.Y[id])
					}
				}
				all = append(all, ids...)
			}
			slices.Sort(all)
			want := make([]int, ds.N)
			for i := range want {
				want[i] = i
			}
			if !slices.Equal(all, want) {
				t.Errorf("Partition(%v, %d) uses %d samples, not each of the %d exactly once", p, sites, len(all), ds.N)
			}
			if p.Kind == PartitionDirichlet {
				for s, part := range parts {
					if part.N < MinSamplesPerSite {
						t.Errorf("Partition(%v, %d): site %d has %d samples, want ≥ %d", p, sites, s, part.N, MinSamplesPerSite)
					}
				}
			}
		}
	}
}

func TestPartitionDeterminism(t *testing.T) {
	train := toyDataset(3000, 10)
	for _, p := range allKinds {
		a := mustPartition(t, train, p, 5, 42)
		b := mustPartition(t, train, p, 5, 42)
		c := mustPartition(t, train, p, 5, 43)
		if !cmp.Equal(digests(a), digests(b)) {
			t.Errorf("Partition(%v, seed 42) twice gave different parts", p)
		}
		if cmp.Equal(digests(a), digests(c)) {
			t.Errorf("Partition(%v) gave the same parts for seeds 42 and 43", p)
		}
	}
}

func digests(parts []*Dataset) []string {
	out := make([]string, len(parts))
	for i, p := range parts {
		out[i] = p.Digest()
	}
	return out
}

// TestPartitionGolden pins the splits of a fixed seed: a change here
// means jobs that name a seed no longer get the data they got before
// (a new Go release, a platform, or an edit to the algorithms).
func TestPartitionGolden(t *testing.T) {
	ds := toyDataset(40, 4)
	got := map[string][][]int{}
	for _, p := range []PartitionSpec{{Kind: PartitionIID}, {Kind: PartitionDirichlet, Alpha: 0.5}, {Kind: PartitionLabels, Labels: 2}, {Kind: PartitionShards}} {
		got[p.String()] = sampleIDs(mustPartition(t, ds, p, 3, 7))
	}
	if diff := cmp.Diff(goldenPartitions, got); diff != "" {
		t.Errorf("Partition(toy 40, 3 sites, seed 7) changed (-want +got):\n%s", diff)
		t.Logf("%#v", got)
	}
}

var goldenPartitions = map[string][][]int{
	"iid": {
		{0, 3, 5, 12, 13, 16, 18, 21, 23, 25, 34, 35, 38},
		{1, 2, 6, 11, 17, 19, 20, 26, 28, 29, 30, 32, 39},
		{4, 7, 8, 9, 10, 14, 15, 22, 24, 27, 31, 33, 36, 37},
	},
	"dirichlet(α=0.5)": {
		{0, 1, 12, 13, 16, 17, 25, 26, 28, 29, 31, 32, 33, 37},
		{2, 4, 6, 10, 14, 18, 19, 20, 22, 24, 27, 30, 34, 36, 38, 39},
		{3, 5, 7, 8, 9, 11, 15, 21, 23, 35},
	},
	"labels(k=2)": {
		{2, 6, 11, 14, 19, 26, 27, 31, 34, 39},
		{0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29, 32, 33, 36, 37},
		{3, 7, 10, 15, 18, 22, 23, 30, 35, 38},
	},
	"shards(2 per site)": {
		{1, 2, 5, 6, 9, 13, 14, 18, 21, 25, 26, 29, 34},
		{0, 3, 4, 7, 11, 12, 15, 16, 23, 27, 28, 32, 35},
		{8, 10, 17, 19, 20, 22, 24, 30, 31, 33, 36, 37, 38, 39},
	},
}

// meanMaxShare is the mean over parts of the largest class's share.
func meanMaxShare(parts []*Dataset) float64 {
	var s float64
	for _, p := range parts {
		s += float64(slices.Max(p.LabelHistogram())) / float64(p.N)
	}
	return s / float64(len(parts))
}

func TestDirichletSkew(t *testing.T) {
	train := toyDataset(6000, 10)
	tests := []struct {
		alpha    float64
		lo, hi   float64 // bounds on the mean largest-class share; IID is 0.1
		minSites int
	}{
		{0.01, 0.7, 1, 10},
		{0.1, 0.5, 1, 10},
		{1, 0.2, 0.6, 10},
		{100, 0.1, 0.15, 10},
		{1000, 0.1, 0.12, 10},
	}
	for _, tt := range tests {
		var shares []float64
		for seed := range int64(5) {
			parts := mustPartition(t, train, PartitionSpec{Kind: PartitionDirichlet, Alpha: tt.alpha}, tt.minSites, seed)
			shares = append(shares, meanMaxShare(parts))
		}
		mean := 0.0
		for _, s := range shares {
			mean += s / float64(len(shares))
		}
		if mean < tt.lo || mean > tt.hi {
			t.Errorf("dirichlet(α=%g) over %d sites: mean largest-class share %.3f (per seed %.2f), want in [%g, %g]",
				tt.alpha, tt.minSites, mean, shares, tt.lo, tt.hi)
		}
	}
}

func TestDirichletMinimum(t *testing.T) {
	// α = 0.3 over 20 sites often leaves a site short of 10 samples out of
	// 600: the redraws must find a draw that does not.
	ds := toyDataset(600, 10)
	parts, err := Partition(ds, PartitionSpec{Kind: PartitionDirichlet, Alpha: 0.3}, 20, 3)
	if err != nil {
		t.Fatal(err)
	}
	for s, p := range parts {
		if p.N < MinSamplesPerSite {
			t.Errorf("site %d has %d samples, want ≥ %d", s, p.N, MinSamplesPerSite)
		}
	}
	// 20 samples over 4 sites: the minimum becomes N/sites = 5.
	small := toyDataset(20, 2)
	for _, p := range mustPartition(t, small, PartitionSpec{Kind: PartitionDirichlet, Alpha: 10}, 4, 1) {
		if p.N < 5 {
			t.Errorf("site has %d of 20 samples over 4 sites, want ≥ 5", p.N)
		}
	}
}

func TestDirichletTinyAlpha(t *testing.T) {
	// U^(1/α) underflows for α = 0.001: the log-space draw must still give
	// proportions, not NaN, and they put each class on a single site.
	ds := toyDataset(1000, 10)
	parts := mustPartition(t, ds, PartitionSpec{Kind: PartitionDirichlet, Alpha: 0.001}, 2, 1)
	for c := range 10 {
		a, b := parts[0].LabelHistogram()[c], parts[1].LabelHistogram()[c]
		if min(a, b) > 1 {
			t.Errorf("dirichlet(α=0.001): class %d split %d/%d, want (nearly) all on one site", c, a, b)
		}
	}
}

func TestLabelsPartition(t *testing.T) {
	ds := toyDataset(6000, 10)
	for _, tt := range []struct{ k, sites int }{{1, 10}, {2, 5}, {2, 7}, {3, 4}, {5, 20}, {10, 3}} {
		parts := mustPartition(t, ds, PartitionSpec{Kind: PartitionLabels, Labels: tt.k}, tt.sites, 9)
		used := make([]int, 10) // sites holding each class
		for s, p := range parts {
			held := 0
			for c, n := range p.LabelHistogram() {
				if n > 0 {
					held++
					used[c]++
				}
			}
			if held != tt.k {
				t.Errorf("labels(k=%d) over %d sites: site %d holds %d classes, want %d", tt.k, tt.sites, s, held, tt.k)
			}
		}
		if lo, hi := slices.Min(used), slices.Max(used); lo < 1 || hi-lo > 1 {
			t.Errorf("labels(k=%d) over %d sites: classes held by %v sites, want every class by about as many", tt.k, tt.sites, used)
		}
	}
}

func TestShardsPartition(t *testing.T) {
	train := toyDataset(6000, 10)
	// 20 sites × 2 shards of 150 over classes of 600: every shard is one
	// class, so each site holds at most 2.
	for s, p := range mustPartition(t, train, PartitionSpec{Kind: PartitionShards}, 20, 5) {
		held := 0
		for _, n := range p.LabelHistogram() {
			if n > 0 {
				held++
			}
		}
		if p.N != 300 || held > 2 {
			t.Errorf("shards: site %d holds %d samples of %d classes, want 300 of ≤ 2", s, p.N, held)
		}
	}
}

func TestIIDPartitionSizes(t *testing.T) {
	ds := toyDataset(1003, 10)
	var sizes []int
	for _, p := range mustPartition(t, ds, PartitionSpec{Kind: PartitionIID}, 4, 1) {
		sizes = append(sizes, p.N)
	}
	slices.Sort(sizes)
	if want := []int{250, 251, 251, 251}; !slices.Equal(sizes, want) {
		t.Errorf("iid sizes of 1003 over 4 = %v, want %v", sizes, want)
	}
	if s := meanMaxShare(mustPartition(t, toyDataset(6000, 10), PartitionSpec{Kind: PartitionIID}, 10, 1)); s > 0.15 {
		t.Errorf("iid: mean largest-class share %.3f, want ≈ 0.1", s)
	}
}

func TestPartitionErrors(t *testing.T) {
	ds := toyDataset(100, 10)
	bad := toyDataset(10, 10)
	bad.Y[3] = 12
	fewClasses := toyDataset(100, 10)
	for i := range fewClasses.Y {
		fewClasses.Y[i] %= 3 // only 3 of 10 classes present
	}
	tests := []struct {
		name  string
		ds    *Dataset
		p     PartitionSpec
		sites int
		msg   string
	}{
		{"no sites", ds, PartitionSpec{Kind: PartitionIID}, 0, "need 1 ≤ sites ≤ samples"},
		{"more sites than samples", ds, PartitionSpec{Kind: PartitionIID}, 101, "need 1 ≤ sites ≤ samples"},
		{"alpha 0", ds, PartitionSpec{Kind: PartitionDirichlet}, 4, "alpha 0 must be a positive number"},
		{"alpha negative", ds, PartitionSpec{Kind: PartitionDirichlet, Alpha: -1}, 4, "alpha -1"},
		{"alpha NaN", ds, PartitionSpec{Kind: PartitionDirichlet, Alpha: math.NaN()}, 4, "alpha NaN"},
		{"alpha Inf", ds, PartitionSpec{Kind: PartitionDirichlet, Alpha: math.Inf(1)}, 4, "alpha +Inf"},
		{"dirichlet too skewed", ds, PartitionSpec{Kind: PartitionDirichlet, Alpha: 0.001}, 10, "no draw in 1000 gave every site at least 10 samples"},
		{"k 0", ds, PartitionSpec{Kind: PartitionLabels}, 4, "labels = 0 classes per site"},
		{"k > classes", ds, PartitionSpec{Kind: PartitionLabels, Labels: 11}, 4, "between 1 and the 10 classes present"},
		{"k > classes present", fewClasses, PartitionSpec{Kind: PartitionLabels, Labels: 4}, 4, "between 1 and the 3 classes present"},
		{"classes left unused", ds, PartitionSpec{Kind: PartitionLabels, Labels: 2}, 4, "4 sites × 2 classes cover only 8 of the 10 classes; use labels ≥ 3"},
		{"labels leaves a site empty", toyDataset(12, 10), PartitionSpec{Kind: PartitionLabels, Labels: 1}, 12, "would hold 0 classes"},
		{"labels leaves a site short", toyDataset(24, 10), PartitionSpec{Kind: PartitionLabels, Labels: 2}, 12, "fewer samples than the sites sharing it"},
		{"too many shards", ds, PartitionSpec{Kind: PartitionShards, ShardsPerSite: 30}, 4, "30·4 shards at most the samples"},
		{"negative shards", ds, PartitionSpec{Kind: PartitionShards, ShardsPerSite: -1}, 4, "must be ≥ 1"},
		{"shards overflowing int", ds, PartitionSpec{Kind: PartitionShards, ShardsPerSite: math.MaxInt/2 + 1}, 2, "shards at most the samples"},
		{"shards on one site", ds, PartitionSpec{Kind: PartitionShards, ShardsPerSite: 101}, 1, "101·1 shards at most the samples"},
		{"unknown kind", ds, PartitionSpec{Kind: "zipf"}, 4, `unknown kind "zipf"; use iid, dirichlet, labels or shards`},
		{"inconsistent dataset", bad, PartitionSpec{Kind: PartitionIID}, 2, "label 12 of sample 3"},
	}
	for _, tt := range tests {
		parts, err := Partition(tt.ds, tt.p, tt.sites, 1)
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%s: Partition(%v, %d) = %d parts, %v, want ErrInvalid mentioning %q", tt.name, tt.p, tt.sites, len(parts), err, tt.msg)
		}
	}
}

func TestPartitionSpecString(t *testing.T) {
	for _, tt := range []struct {
		p    PartitionSpec
		want string
	}{
		{PartitionSpec{}, "iid"},
		{PartitionSpec{Kind: PartitionDirichlet, Alpha: 0.5}, "dirichlet(α=0.5)"},
		{PartitionSpec{Kind: PartitionLabels, Labels: 2}, "labels(k=2)"},
		{PartitionSpec{Kind: PartitionShards}, "shards(2 per site)"},
		{PartitionSpec{Kind: "x y"}, `"x y"`},
	} {
		if got := tt.p.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.p, got, tt.want)
		}
	}
}

func TestFormatHistograms(t *testing.T) {
	a := &Dataset{Classes: 3, N: 4, Y: []uint8{0, 0, 2, 2}}
	b := &Dataset{Classes: 3, N: 12, Y: []uint8{1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 2}}
	var buf bytes.Buffer
	if err := FormatHistograms(&buf, []*Dataset{a, b}); err != nil {
		t.Fatal(err)
	}
	want := "" +
		"  site  samples  0   1  2\n" +
		"     1        4  2   0  2\n" +
		"     2       12  1  10  1\n" +
		"   all       16  3  10  3\n"
	if got := trimLines(buf.String()); got != want {
		t.Errorf("FormatHistograms =\n%s\nwant\n%s", got, want)
	}
	if err := FormatHistograms(failingWriter{}, []*Dataset{a}); err == nil {
		t.Error("FormatHistograms(failing writer) = nil, want an error")
	}
}

func trimLines(s string) string {
	lines := strings.Split(s, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

func ExampleFormatHistograms() {
	// 40 samples of one feature, labels 0, 1, 2, 3, 0, 1, …
	ds := &Dataset{Name: "toy", N: 40, Features: 1, Classes: 4, X: make([]float32, 40), Y: make([]uint8, 40)}
	for i := range ds.Y {
		ds.Y[i] = uint8(i % 4)
	}
	parts, err := Partition(ds, PartitionSpec{Kind: PartitionShards}, 2, 1)
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := FormatHistograms(os.Stdout, parts); err != nil {
		fmt.Println(err)
	}
	// Output:
	// site  samples   0   1   2   3
	//      1       20  10   0  10   0
	//      2       20   0  10   0  10
	//    all       40  10  10  10  10
}

func BenchmarkPartitionDirichlet(b *testing.B) {
	train, _ := loadSubset(b)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Partition(train, PartitionSpec{Kind: PartitionDirichlet, Alpha: 0.5}, 10, 1); err != nil {
			b.Fatal(err)
		}
	}
}

func TestDirichletDraws(t *testing.T) {
	for _, tt := range []struct{ classes, sites, want int }{
		{10, 1, 1000},
		{10, 100, 1000},
		{10, 1000, 1000},
		{10, 6000, 166},
		{10, 60000, 16},
		{256, 60000, 10},
		{0, 5, 1000},
	} {
		if got := dirichletDraws(tt.classes, tt.sites); got != tt.want {
			t.Errorf("dirichletDraws(%d classes, %d sites) = %d, want %d", tt.classes, tt.sites, got, tt.want)
		}
	}
}

// TestPartitionFashionMNIST partitions the shipped subset as jobs do.
func TestPartitionFashionMNIST(t *testing.T) {
	train, _ := loadSubset(t)
	classesHeld := func(p *Dataset) int {
		n := 0
		for _, c := range p.LabelHistogram() {
			if c > 0 {
				n++
			}
		}
		return n
	}
	tests := []struct {
		p              PartitionSpec
		sites          int
		maxClasses     int     // per site
		lo, hi         float64 // mean largest-class share
		wantSizesEqual bool
	}{
		{PartitionSpec{Kind: PartitionIID}, 4, 10, 0.1, 0.13, true},
		{PartitionSpec{Kind: PartitionDirichlet, Alpha: 0.1}, 10, 10, 0.5, 1, false},
		{PartitionSpec{Kind: PartitionDirichlet, Alpha: 100}, 10, 10, 0.1, 0.2, false},
		{PartitionSpec{Kind: PartitionLabels, Labels: 2}, 5, 2, 0.5, 0.5, true},
		{PartitionSpec{Kind: PartitionShards}, 10, 2, 0.5, 1, true},
		// 14 shards of 428 over classes of 600: a shard may straddle two.
		{PartitionSpec{Kind: PartitionShards}, 7, 4, 0.4, 1, false},
	}
	for _, tt := range tests {
		parts := mustPartition(t, train, tt.p, tt.sites, 1)
		hist := make([]int, 10)
		sizes := map[int]bool{}
		for s, p := range parts {
			if held := classesHeld(p); held > tt.maxClasses {
				t.Errorf("Partition(subset, %v, %d sites): site %d holds %d classes, want ≤ %d", tt.p, tt.sites, s, held, tt.maxClasses)
			}
			for c, n := range p.LabelHistogram() {
				hist[c] += n
			}
			sizes[p.N] = true
		}
		if !cmp.Equal(hist, train.LabelHistogram()) {
			t.Errorf("Partition(subset, %v, %d sites) classes = %v, want %v", tt.p, tt.sites, hist, train.LabelHistogram())
		}
		if s := meanMaxShare(parts); s < tt.lo || s > tt.hi {
			t.Errorf("Partition(subset, %v, %d sites): mean largest-class share %.3f, want in [%g, %g]", tt.p, tt.sites, s, tt.lo, tt.hi)
		}
		if tt.wantSizesEqual && len(sizes) != 1 {
			t.Errorf("Partition(subset, %v, %d sites): sizes %v, want all equal", tt.p, tt.sites, sizes)
		}
	}
}
