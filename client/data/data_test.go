package data

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const subsetDir = "testdata/fmnist-subset"

var subset = sync.OnceValues(func() ([2]*Dataset, error) {
	train, test, err := LoadFashionMNIST(context.Background(), LoadOptions{Path: subsetDir})
	return [2]*Dataset{train, test}, err
})

// loadSubset loads the shipped subset once per test binary; callers must
// not modify it.
func loadSubset(t *testing.T) (*Dataset, *Dataset) {
	t.Helper()
	ds, err := subset()
	if err != nil {
		t.Fatal(err)
	}
	return ds[0], ds[1]
}

func TestLoadShippedSubset(t *testing.T) {
	train, test := loadSubset(t)
	if train.N != 6000 || test.N != 1000 {
		t.Fatalf("subset sizes = %d/%d, want 6000/1000", train.N, test.N)
	}
	for c, n := range train.LabelHistogram() {
		if n != 600 {
			t.Errorf("train class %d has %d samples, want 600", c, n)
		}
	}
	if !slices.Equal(train.Shape, []int{1, 28, 28}) || train.Features != 784 {
		t.Errorf("shape %v features %d, want [1 28 28] 784", train.Shape, train.Features)
	}
	lo, hi := slices.Min(train.X), slices.Max(train.X)
	if lo != 0 || hi != 1 {
		t.Errorf("pixels in [%v, %v], want [0, 1]", lo, hi)
	}
}

func TestLoadSystemDataset(t *testing.T) {
	if _, err := os.Stat(SystemFashionMNIST); err != nil {
		t.Skipf("%s not installed (apt-get install dataset-fashion-mnist)", SystemFashionMNIST)
	}
	if raceEnabled {
		t.Skip("loading 70,000 images under the race detector takes ~15 s; run without -race")
	}
	train, test, err := LoadFashionMNIST(context.Background(), LoadOptions{Getenv: func(string) string { return "" }, NoDownload: true})
	if err != nil {
		t.Fatal(err)
	}
	if train.N != 60000 || test.N != 10000 {
		t.Errorf("sizes = %d/%d, want 60000/10000", train.N, test.N)
	}
}

func TestSearchOrder(t *testing.T) {
	env := t.TempDir()
	copyDir(t, subsetDir, filepath.Join(env, "fashion-mnist"))
	empty := t.TempDir()
	tests := []struct {
		name    string
		opts    LoadOptions
		wantErr string
	}{
		{"explicit path missing", LoadOptions{Path: "/no/such/folder"}, `data.path "/no/such/folder"`},
		{"COHORT_DATA/fashion-mnist", LoadOptions{Getenv: func(string) string { return env }, SystemDir: empty, CacheDir: empty, NoDownload: true}, ""},
		{"nothing anywhere", LoadOptions{Getenv: func(string) string { return "" }, SystemDir: empty, CacheDir: empty, NoDownload: true}, "apt-get install dataset-fashion-mnist"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := LoadFashionMNIST(context.Background(), tt.opts)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("LoadFashionMNIST = %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("LoadFashionMNIST = %v, want an error mentioning %q", err, tt.wantErr)
			}
		})
	}
}

// TestDownload serves the subset's files as the official address would,
// with the official MD5s swapped for theirs.
func TestDownload(t *testing.T) {
	files := map[string][]byte{}
	for _, n := range fmnistFiles {
		b, err := os.ReadFile(filepath.Join(subsetDir, n+".gz"))
		if err != nil {
			t.Fatal(err)
		}
		files[n+".gz"] = b
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[strings.TrimPrefix(r.URL.Path, "/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	defer srv.Close()
	saved := fashionMNISTMD5
	defer func() { fashionMNISTMD5 = saved }()
	fashionMNISTMD5 = map[string]string{}
	for n, b := range files {
		sum := md5.Sum(b)
		fashionMNISTMD5[n] = hex.EncodeToString(sum[:])
	}
	empty := t.TempDir()
	cache := filepath.Join(t.TempDir(), "cache")
	opts := LoadOptions{Getenv: func(string) string { return "" }, SystemDir: empty, CacheDir: cache, BaseURL: srv.URL + "/"}
	train, _, err := LoadFashionMNIST(context.Background(), opts)
	if err != nil || train.N != 6000 {
		t.Fatalf("download: %v", err)
	}
	// A corrupt file is refused and nothing half-written is left.
	fashionMNISTMD5["t10k-labels-idx1-ubyte.gz"] = "00000000000000000000000000000000"
	cache2 := filepath.Join(t.TempDir(), "cache")
	opts.CacheDir = cache2
	_, _, err = LoadFashionMNIST(context.Background(), opts)
	if err == nil || !strings.Contains(err.Error(), "MD5") {
		t.Fatalf("bad MD5: %v, want an MD5 error", err)
	}
	if _, err := os.Stat(filepath.Join(cache2, "t10k-labels-idx1-ubyte.gz")); !os.IsNotExist(err) {
		t.Errorf("the corrupt file was kept in the cache: %v", err)
	}
}

func idxBytes(magic uint32, dims []uint32, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, magic)
	binary.Write(&b, binary.BigEndian, dims)
	b.Write(data)
	return b.Bytes()
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

func TestReadIDXMalformed(t *testing.T) {
	good := idxBytes(0x0803, []uint32{2, 2, 2}, make([]byte, 8))
	tests := []struct {
		name string
		in   []byte
		want string
	}{
		{"wrong magic", idxBytes(0x0801, []uint32{8}, make([]byte, 8)), "magic number"},
		{"short header", good[:6], "truncated"},
		{"short data", good[:len(good)-3], "truncated: dimensions [2 2 2] need 8 bytes, got 5"},
		{"huge dims", idxBytes(0x0803, []uint32{1 << 31, 1 << 31, 4}, nil), "too large"},
		{"bad gzip", []byte{0x1f, 0x8b, 1, 2, 3}, "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ReadIDX(bytes.NewReader(tt.in), 0x0803)
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("ReadIDX = %v, want ErrMalformed mentioning %q", err, tt.want)
			}
		})
	}
	for _, in := range [][]byte{good, gz(good)} {
		b, dims, err := ReadIDX(bytes.NewReader(in), 0x0803)
		if err != nil || len(b) != 8 || !slices.Equal(dims, []int{2, 2, 2}) {
			t.Errorf("ReadIDX(valid) = %d bytes %v %v", len(b), dims, err)
		}
	}
}

func TestLoadMismatchedFiles(t *testing.T) {
	dir := t.TempDir()
	copyDir(t, subsetDir, dir)
	// Labels for 3 images where there are 1,000.
	os.WriteFile(filepath.Join(dir, "t10k-labels-idx1-ubyte.gz"), gz(idxBytes(0x0801, []uint32{3}, []byte{1, 2, 3})), 0o644)
	_, _, err := LoadFashionMNIST(context.Background(), LoadOptions{Path: dir})
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "1000 images but") {
		t.Errorf("mismatched counts: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "t10k-labels-idx1-ubyte.gz"), gz(idxBytes(0x0801, []uint32{1000}, bytes.Repeat([]byte{10}, 1000))), 0o644)
	_, _, err = LoadFashionMNIST(context.Background(), LoadOptions{Path: dir})
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "label 10") {
		t.Errorf("label out of range: %v", err)
	}
}

func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	os.MkdirAll(dst, 0o755)
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, _ := os.ReadFile(filepath.Join(src, e.Name()))
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func FuzzReadIDX(f *testing.F) {
	f.Add(idxBytes(0x0803, []uint32{2, 2, 2}, make([]byte, 8)))
	f.Add(gz(idxBytes(0x0803, []uint32{1, 1, 1}, []byte{7})))
	f.Add(idxBytes(0x0803, []uint32{2, 2, 2}, make([]byte, 3)))
	f.Add([]byte{0, 0, 8, 3})
	f.Fuzz(func(t *testing.T, in []byte) {
		b, dims, err := ReadIDX(bytes.NewReader(in), 0x0803)
		if err != nil {
			return
		}
		n := 1
		for _, d := range dims {
			n *= d
		}
		if n != len(b) {
			t.Fatalf("ReadIDX returned %d bytes for dims %v", len(b), dims)
		}
	})
}

func partitionAll(t *testing.T, ds *Dataset, p PartitionSpec, sites int, seed int64) []*Dataset {
	t.Helper()
	parts, err := Partition(ds, p, sites, seed)
	if err != nil {
		t.Fatalf("Partition(%+v): %v", p, err)
	}
	return parts
}

func TestPartitionsUseEverySampleOnce(t *testing.T) {
	train, _ := loadSubset(t)
	for _, p := range []PartitionSpec{{Kind: "iid"}, {Kind: "dirichlet", Alpha: 0.5}, {Kind: "shards", ShardsPerSite: 2}, {Kind: "labels", Labels: 3}} {
		parts := partitionAll(t, train, p, 5, 1)
		total := 0
		hist := make([]int, 10)
		for _, part := range parts {
			total += part.N
			for c, n := range part.LabelHistogram() {
				hist[c] += n
			}
		}
		if total != train.N || !cmp.Equal(hist, train.LabelHistogram()) {
			t.Errorf("%s: %d samples with classes %v, want every one of %d once", p.Kind, total, hist, train.N)
		}
		again := partitionAll(t, train, p, 5, 1)
		other := partitionAll(t, train, p, 5, 2)
		if parts[0].Digest() != again[0].Digest() {
			t.Errorf("%s: the same seed gave different partitions", p.Kind)
		}
		if parts[0].Digest() == other[0].Digest() {
			t.Errorf("%s: a different seed gave the same partition", p.Kind)
		}
	}
}

// maxShare is the mean over parts of the largest class's share.
func maxShare(parts []*Dataset) float64 {
	var s float64
	for _, p := range parts {
		s += float64(slices.Max(p.LabelHistogram())) / float64(p.N)
	}
	return s / float64(len(parts))
}

func TestPartitionSkew(t *testing.T) {
	train, _ := loadSubset(t)
	if s := maxShare(partitionAll(t, train, PartitionSpec{Kind: "dirichlet", Alpha: 0.1}, 4, 1)); s < 0.3 {
		t.Errorf("dirichlet α=0.1: mean largest-class share %.2f, want > 0.3 (IID is 0.1)", s)
	}
	if s := maxShare(partitionAll(t, train, PartitionSpec{Kind: "dirichlet", Alpha: 100}, 4, 1)); s > 0.2 {
		t.Errorf("dirichlet α=100: mean largest-class share %.2f, want < 0.2", s)
	}
	iid := partitionAll(t, train, PartitionSpec{Kind: "iid"}, 4, 1)
	for _, p := range iid {
		if p.N != 1500 {
			t.Errorf("iid part of %d samples, want 1500", p.N)
		}
	}
	for i, p := range partitionAll(t, train, PartitionSpec{Kind: "labels", Labels: 2}, 5, 1) {
		classes := 0
		for _, n := range p.LabelHistogram() {
			if n > 0 {
				classes++
			}
		}
		if classes != 2 {
			t.Errorf("labels k=2: site %d holds %d classes", i, classes)
		}
	}
}

func TestPartitionErrors(t *testing.T) {
	train, _ := loadSubset(t)
	for _, tt := range []struct {
		p     PartitionSpec
		sites int
		want  string
	}{
		{PartitionSpec{Kind: "iid"}, 0, "1 ≤ sites"},
		{PartitionSpec{Kind: "iid"}, 7000, "1 ≤ sites"},
		{PartitionSpec{Kind: "dirichlet", Alpha: 0}, 4, "alpha"},
		{PartitionSpec{Kind: "labels", Labels: 11}, 4, "between 1 and 10"},
		{PartitionSpec{Kind: "zipf"}, 4, "unknown partition kind"},
	} {
		if _, err := Partition(train, tt.p, tt.sites, 1); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Partition(%+v, %d) = %v, want %q", tt.p, tt.sites, err, tt.want)
		}
	}
}

func TestSplitConcatDigest(t *testing.T) {
	train, _ := loadSubset(t)
	tr, te := train.Split(0.1, 3)
	if te.N != 600 || tr.N != 5400 {
		t.Fatalf("Split sizes %d/%d, want 5400/600", tr.N, te.N)
	}
	for c, n := range te.LabelHistogram() {
		if n != 60 {
			t.Errorf("test split class %d: %d, want 60 (stratified)", c, n)
		}
	}
	all := Concat(tr, nil, te)
	if all.N != train.N || !cmp.Equal(all.LabelHistogram(), train.LabelHistogram()) {
		t.Errorf("Concat lost samples")
	}
	d := train.Digest()
	c := train.Subset([]int{0, 1, 2})
	c2 := train.Subset([]int{0, 1, 2})
	c2.Y[1] = (c2.Y[1] + 1) % 10
	if c.Digest() == c2.Digest() || d == c.Digest() {
		t.Error("Digest does not change with the data")
	}
}

func TestSynthetic(t *testing.T) {
	a, err := Synthetic(SyntheticConfig{Alpha: 1, Beta: 1, Devices: 5}, 1)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Synthetic(SyntheticConfig{Alpha: 1, Beta: 1, Devices: 5}, 1)
	sizes := map[int]bool{}
	for i, d := range a {
		if d.Features != 60 || d.Classes != 10 || len(d.X) != d.N*60 {
			t.Fatalf("device %d: %d features %d classes", i, d.Features, d.Classes)
		}
		if d.Digest() != b[i].Digest() {
			t.Errorf("device %d differs for the same seed", i)
		}
		sizes[d.N] = true
	}
	if len(sizes) < 3 {
		t.Errorf("device sizes %v: the power law should vary them", sizes)
	}
	fixed, _ := Synthetic(SyntheticConfig{Devices: 2, SamplesPerDevice: 100, IID: true}, 1)
	if fixed[0].N != 100 || fixed[1].N != 100 {
		t.Errorf("SamplesPerDevice ignored: %d, %d", fixed[0].N, fixed[1].N)
	}
	if _, err := Synthetic(SyntheticConfig{Devices: 0}, 1); err == nil {
		t.Error("Synthetic with 0 devices = nil error")
	}
}
