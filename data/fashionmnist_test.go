package data

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
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
func loadSubset(t testing.TB) (train, test *Dataset) {
	t.Helper()
	ds, err := subset()
	if err != nil {
		t.Fatal(err)
	}
	return ds[0], ds[1]
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

func noEnv(string) string { return "" }

func TestLoadShippedSubset(t *testing.T) {
	train, test := loadSubset(t)
	for _, tt := range []struct {
		ds       *Dataset
		name     string
		perClass int
	}{{train, "fashion-mnist/train", 600}, {test, "fashion-mnist/test", 100}} {
		if err := tt.ds.Validate(); err != nil {
			t.Errorf("%s: Validate() = %v", tt.name, err)
		}
		want := slices.Repeat([]int{tt.perClass}, 10)
		if got := tt.ds.LabelHistogram(); !cmp.Equal(got, want) {
			t.Errorf("%s: LabelHistogram() = %v, want %v", tt.name, got, want)
		}
		if tt.ds.Name != tt.name || tt.ds.N != 10*tt.perClass || tt.ds.Features != 784 || tt.ds.Classes != 10 || !cmp.Equal(tt.ds.Shape, []int{1, 28, 28}) {
			t.Errorf("%s: got %q N=%d features=%d classes=%d shape=%v", tt.name, tt.ds.Name, tt.ds.N, tt.ds.Features, tt.ds.Classes, tt.ds.Shape)
		}
		if lo, hi := slices.Min(tt.ds.X), slices.Max(tt.ds.X); lo != 0 || hi != 1 {
			t.Errorf("%s: pixels in [%v, %v], want [0, 1]", tt.name, lo, hi)
		}
		// Every pixel is some byte/255.
		for i, v := range tt.ds.X {
			if b := v * 255; b != float32(int(b+0.5)) {
				t.Fatalf("%s: pixel %d = %v, not a multiple of 1/255", tt.name, i, v)
			}
		}
	}
	if mean := meanPixel(train); mean < 0.25 || mean > 0.32 {
		t.Errorf("mean training pixel = %.3f, want Fashion-MNIST's ≈ 0.286", mean)
	}
}

func meanPixel(ds *Dataset) float64 {
	var s float64
	for _, v := range ds.X {
		s += float64(v)
	}
	return s / float64(len(ds.X))
}

var system = sync.OnceValues(func() ([2]*Dataset, error) {
	train, test, err := LoadFashionMNIST(context.Background(), LoadOptions{Getenv: noEnv, NoDownload: true})
	return [2]*Dataset{train, test}, err
})

// systemDataset loads Debian's full dataset once per test binary, or
// skips; callers must not modify it.
func systemDataset(t *testing.T) (train, test *Dataset) {
	t.Helper()
	if _, err := os.Stat(SystemFashionMNIST); err != nil {
		t.Skipf("%s not installed (apt-get install dataset-fashion-mnist)", SystemFashionMNIST)
	}
	if raceEnabled {
		t.Skip("converting 70,000 images under the race detector takes ~15 s; run without -race")
	}
	ds, err := system()
	if err != nil {
		t.Fatal(err)
	}
	return ds[0], ds[1]
}

func TestLoadSystemDataset(t *testing.T) {
	train, test := systemDataset(t)
	if train.N != 60000 || test.N != 10000 {
		t.Errorf("sizes = %d/%d, want 60000/10000", train.N, test.N)
	}
	for _, ds := range []*Dataset{train, test} {
		want := slices.Repeat([]int{ds.N / 10}, 10)
		if got := ds.LabelHistogram(); !cmp.Equal(got, want) {
			t.Errorf("%s: LabelHistogram() = %v, want %v", ds.Name, got, want)
		}
	}
}

// TestSubsetLineage checks that the shipped subset is what gen_subset.go
// draws from the full dataset: every image with its label, none twice.
func TestSubsetLineage(t *testing.T) {
	fullTrain, fullTest := systemDataset(t)
	train, test := loadSubset(t)
	for _, pair := range [][2]*Dataset{{fullTrain, train}, {fullTest, test}} {
		full, sub := pair[0], pair[1]
		index := make(map[string]int, full.N)
		for i := range full.N {
			index[sampleKey(full, i)] = i
		}
		seen := map[int]bool{}
		for i := range sub.N {
			j, ok := index[sampleKey(sub, i)]
			if !ok || seen[j] {
				t.Fatalf("%s: subset sample %d is not a distinct sample of the full set (found %v, repeated %v)", sub.Name, i, ok, seen[j])
			}
			seen[j] = true
		}
	}
}

func sampleKey(ds *Dataset, i int) string {
	b := make([]byte, 0, ds.Features+1)
	for _, v := range ds.X[i*ds.Features : (i+1)*ds.Features] {
		b = append(b, byte(v*255+0.5))
	}
	return string(append(b, ds.Y[i]))
}

// tinyN are the sizes of the tiny Fashion-MNIST look-alike the search and
// damage tests use: fast to write and read many times.
var tinyN = [2]int{20, 10}

// tinyFiles returns the look-alike's four files, uncompressed, keyed by
// canonical name, and the datasets they should load as.
func tinyFiles(t *testing.T) (map[string][]byte, [2]*Dataset) {
	t.Helper()
	files := map[string][]byte{}
	var want [2]*Dataset
	for s, prefix := range []string{"train", "t10k"} {
		n := tinyN[s]
		pixels := make([]byte, n*784)
		for i := range pixels {
			pixels[i] = byte(i*7 + s)
		}
		labels := make([]byte, n)
		for i := range labels {
			labels[i] = byte((i + s) % 10)
		}
		var img, lab bytes.Buffer
		if err := WriteIDX(&img, MagicImages, []int{n, 28, 28}, pixels); err != nil {
			t.Fatal(err)
		}
		if err := WriteIDX(&lab, MagicLabels, []int{n}, labels); err != nil {
			t.Fatal(err)
		}
		files[prefix+"-images-idx3-ubyte"] = img.Bytes()
		files[prefix+"-labels-idx1-ubyte"] = lab.Bytes()
		ds := &Dataset{Name: "fashion-mnist/" + map[int]string{0: "train", 1: "test"}[s], N: n, Features: 784,
			Shape: []int{1, 28, 28}, Classes: 10, X: make([]float32, len(pixels)), Y: labels}
		for i, p := range pixels {
			ds.X[i] = float32(p) / 255
		}
		want[s] = ds
	}
	return files, want
}

// sameTiny reports whether train and test are the look-alike, field by
// field (cmp on 23,520 floats is slow).
func sameTiny(t *testing.T, train, test *Dataset) bool {
	_, want := tinyFiles(t)
	for i, got := range []*Dataset{train, test} {
		w := want[i]
		if got.Name != w.Name || got.N != w.N || got.Features != w.Features || got.Classes != w.Classes ||
			!slices.Equal(got.Shape, w.Shape) || !slices.Equal(got.X, w.X) || !slices.Equal(got.Y, w.Y) {
			return false
		}
	}
	return true
}

// writeFiles writes the look-alike's four files into dir, gzip'd or
// plain, each under name(canonical name).
func writeFiles(t *testing.T, dir string, gzipped bool, name func(string) string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	files, _ := tinyFiles(t)
	for f, b := range files {
		if gzipped {
			b = gzipBytes(b)
		}
		if err := os.WriteFile(filepath.Join(dir, name(f)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func gzName(f string) string    { return f + ".gz" }
func plainName(f string) string { return f }

func TestSearchOrder(t *testing.T) {
	root := t.TempDir()
	dir := func(name string) string { return filepath.Join(root, name) }
	writeFiles(t, dir("gz"), true, gzName)
	writeFiles(t, dir("plain"), false, plainName)
	writeFiles(t, dir("gz-as-plain-names"), true, plainName) // detected by magic, not name
	writeFiles(t, dir("plain-as-gz-names"), false, gzName)
	writeFiles(t, dir("dotted"), true, func(f string) string { return strings.Replace(f, "-idx", ".idx", 1) })
	writeFiles(t, filepath.Join(dir("nested"), "fashion-mnist"), true, gzName)
	writeFiles(t, dir("partial"), true, gzName)
	os.Remove(filepath.Join(dir("partial"), "t10k-labels-idx1-ubyte.gz"))
	writeFiles(t, dir("broken"), true, gzName) // complete but corrupt: an error if ever read
	os.WriteFile(filepath.Join(dir("broken"), "train-images-idx3-ubyte.gz"), []byte("not idx"), 0o644)
	os.MkdirAll(dir("empty"), 0o755)
	os.WriteFile(dir("file"), []byte("x"), 0o644)
	env := func(d string) func(string) string {
		return func(k string) string {
			if k == EnvData {
				return d
			}
			return ""
		}
	}
	none := dir("none")
	wd, _ := os.Getwd()
	relGz, err := filepath.Rel(wd, dir("gz"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		opts    LoadOptions
		wantErr error  // nil: loads the subset
		msg     string // in the error
	}{
		{"path gz", LoadOptions{Path: dir("gz")}, nil, ""},
		{"path relative", LoadOptions{Path: relGz}, nil, ""},
		{"path plain", LoadOptions{Path: dir("plain")}, nil, ""},
		{"path gzip with plain names", LoadOptions{Path: dir("gz-as-plain-names")}, nil, ""},
		{"path plain with .gz names", LoadOptions{Path: dir("plain-as-gz-names")}, nil, ""},
		{"path dotted names", LoadOptions{Path: dir("dotted")}, nil, ""},
		{"path/fashion-mnist", LoadOptions{Path: dir("nested")}, nil, ""},
		{"path missing", LoadOptions{Path: dir("missing"), Getenv: env(dir("gz"))}, fs.ErrNotExist, `data.path "` + dir("missing") + `"`},
		{"path missing is not found", LoadOptions{Path: dir("missing")}, ErrNotFound, "leave it empty"},
		{"path missing names its setting", LoadOptions{Path: dir("missing"), Setting: "site.yaml data.fashion-mnist"}, ErrNotFound,
			`site.yaml data.fashion-mnist "` + dir("missing") + `": dataset not found`},
		{"path partial names its setting", LoadOptions{Path: dir("partial"), Setting: "--from"}, ErrNotFound, "or fix --from"},
		{"nowhere names the setting", LoadOptions{Getenv: noEnv, SystemDir: none, CacheDir: none, NoDownload: true, Setting: "site.yaml data.fashion-mnist"}, ErrNotFound,
			"or set site.yaml data.fashion-mnist or $COHORT_DATA"},
		{"path empty does not fall through", LoadOptions{Path: dir("empty"), Getenv: env(dir("gz"))}, ErrNotFound, "holds none of the files"},
		{"path partial", LoadOptions{Path: dir("partial")}, ErrNotFound, "lacks t10k-labels-idx1-ubyte"},
		{"path is a file", LoadOptions{Path: dir("file")}, nil, "is a file"},
		{"$COHORT_DATA", LoadOptions{Getenv: env(dir("gz")), SystemDir: none, CacheDir: none, NoDownload: true}, nil, ""},
		{"$COHORT_DATA/fashion-mnist", LoadOptions{Getenv: env(dir("nested")), SystemDir: none, CacheDir: none, NoDownload: true}, nil, ""},
		{"$COHORT_DATA before system", LoadOptions{Getenv: env(dir("gz")), SystemDir: dir("broken"), CacheDir: none, NoDownload: true}, nil, ""},
		{"system", LoadOptions{Getenv: env(dir("empty")), SystemDir: dir("plain"), CacheDir: none, NoDownload: true}, nil, ""},
		{"system before cache", LoadOptions{Getenv: noEnv, SystemDir: dir("gz"), CacheDir: dir("broken"), NoDownload: true}, nil, ""},
		{"cache", LoadOptions{Getenv: noEnv, SystemDir: dir("partial"), CacheDir: dir("gz"), NoDownload: true}, nil, ""},
		{"damaged files stop the search", LoadOptions{Getenv: env(dir("broken")), SystemDir: dir("gz"), CacheDir: none, NoDownload: true}, ErrMalformed, "not an IDX file"},
		{"damaged cache says how to refetch", LoadOptions{Getenv: noEnv, SystemDir: none, CacheDir: dir("broken"), NoDownload: true}, ErrMalformed, "delete " + dir("broken") + " to download it again"},
		{"nowhere", LoadOptions{Getenv: env(dir("empty")), SystemDir: dir("partial"), CacheDir: none, NoDownload: true}, ErrNotFound,
			dir("empty") + " (holds none of the files), " + filepath.Join(dir("empty"), "fashion-mnist") + " (no such folder), " +
				dir("partial") + " (lacks t10k-labels-idx1-ubyte), " + none + " (no such folder), and downloading is off; " +
				"install Debian's package (apt-get install dataset-fashion-mnist), or set data.path or $COHORT_DATA"},
		{"nowhere, unset env", LoadOptions{Getenv: noEnv, SystemDir: none, CacheDir: none, NoDownload: true}, ErrNotFound, "$COHORT_DATA (unset)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Logger = testLogger(t)
			train, test, err := LoadFashionMNIST(context.Background(), tt.opts)
			if tt.wantErr == nil && tt.msg == "" {
				if err != nil {
					t.Fatalf("LoadFashionMNIST = %v, want the subset", err)
				}
				if !sameTiny(t, train, test) {
					t.Errorf("LoadFashionMNIST loaded other data than the files hold")
				}
				return
			}
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("LoadFashionMNIST = %v, want %v mentioning %q", err, tt.wantErr, tt.msg)
			}
		})
	}
}

// TestLoadDamagedFiles loads the subset with one file replaced, gzip'd and
// plain: every problem is an error naming the file.
func TestLoadDamagedFiles(t *testing.T) {
	labels := func(n uint32, v byte) []byte {
		return idxBytes(MagicLabels, []uint32{n}, bytes.Repeat([]byte{v}, int(n)))
	}
	images := func(n, rows, cols uint32) []byte {
		return idxBytes(MagicImages, []uint32{n, rows, cols}, make([]byte, n*rows*cols))
	}
	full := images(10, 28, 28) // the look-alike's test set
	tests := []struct {
		name    string
		file    string
		content []byte
		wantErr error
		msg     string
	}{
		{"truncated images", "t10k-images-idx3-ubyte", full[:len(full)-100], ErrTruncated,
			"dimensions [10 28 28] declare 7840 data bytes (7856 with the header), the"},
		{"truncated images, actual size", "t10k-images-idx3-ubyte", full[:len(full)-100], ErrTruncated, "file has 7740 (7756 with the header)"},
		{"header cut", "t10k-images-idx3-ubyte", full[:10], ErrTruncated, "ends inside the dimensions: 10 of 16 header bytes"},
		{"labels cut", "train-labels-idx1-ubyte", labels(20, 1)[:15], ErrTruncated, "declare 20 data bytes (28 with the header), the"},
		{"labels for images", "t10k-images-idx3-ubyte", labels(10, 1), ErrMalformed, "(a labels file), want 0x00000803 (an images file)"},
		{"images for labels", "t10k-labels-idx1-ubyte", full, ErrMalformed, "(an images file), want 0x00000801 (a labels file)"},
		{"count mismatch", "t10k-labels-idx1-ubyte", labels(3, 1), ErrMalformed, "has 10 images but"},
		{"label 10", "t10k-labels-idx1-ubyte", labels(10, 10), ErrMalformed, "label 10 of sample 0 is not a class 0–9"},
		{"not 28×28", "t10k-images-idx3-ubyte", images(10, 27, 28), ErrMalformed, "images are 27×28, Fashion-MNIST's are 28×28"},
		{"no images", "t10k-images-idx3-ubyte", images(0, 28, 28), ErrMalformed, "holds no images"},
		{"trailing bytes", "t10k-labels-idx1-ubyte", append(labels(10, 1), 0), ErrMalformed, "1 bytes after"},
		{"empty file", "train-labels-idx1-ubyte", nil, ErrTruncated, "has 0 bytes"},
	}
	for _, tt := range tests {
		for _, gzipped := range []bool{false, true} {
			name := tt.name + map[bool]string{false: "/plain", true: "/gzip"}[gzipped]
			t.Run(name, func(t *testing.T) {
				dir := t.TempDir()
				writeFiles(t, dir, true, gzName)
				content := tt.content
				if gzipped {
					content = gzipBytes(content)
				}
				path := filepath.Join(dir, tt.file+".gz")
				if err := os.WriteFile(path, content, 0o644); err != nil {
					t.Fatal(err)
				}
				_, _, err := LoadFashionMNIST(context.Background(), LoadOptions{Path: dir})
				if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.msg) || !strings.Contains(err.Error(), filepath.Base(path)) {
					t.Errorf("LoadFashionMNIST = %v, want %v naming %s and mentioning %q", err, tt.wantErr, filepath.Base(path), tt.msg)
				}
				if !errors.Is(err, ErrMalformed) {
					t.Errorf("LoadFashionMNIST = %v, want it to match ErrMalformed, as every damaged file does", err)
				}
			})
		}
	}
}

func TestLoadCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := LoadFashionMNIST(ctx, LoadOptions{Path: subsetDir}); !errors.Is(err, context.Canceled) {
		t.Errorf("LoadFashionMNIST(canceled) = %v, want context.Canceled", err)
	}
}

func TestFindFashionMNISTSubset(t *testing.T) {
	got, err := FindFashionMNISTSubset("testdata")
	want, _ := filepath.Abs(subsetDir)
	if err != nil || got != want {
		t.Errorf("FindFashionMNISTSubset(testdata) = %q, %v, want %q", got, err, want)
	}
	if _, err := FindFashionMNISTSubset(t.TempDir()); !errors.Is(err, ErrNotFound) {
		t.Errorf("FindFashionMNISTSubset(elsewhere) = %v, want ErrNotFound", err)
	}
}

// fakeMirror serves the look-alike's .gz files as the official address
// does, under /fmnist/, counting requests.
type fakeMirror struct {
	*httptest.Server
	files    map[string][]byte
	requests atomic.Int32
}

func newFakeMirror(t *testing.T) *fakeMirror {
	m := &fakeMirror{files: map[string][]byte{}}
	files, _ := tinyFiles(t)
	for f, b := range files {
		m.files[f+".gz"] = gzipBytes(b)
	}
	m.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.requests.Add(1)
		b, ok := m.files[strings.TrimPrefix(r.URL.Path, "/fmnist/")]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write(b)
	}))
	t.Cleanup(m.Close)
	return m
}

// sums returns the MD5s of the mirror's files, as the README would
// publish them.
func (m *fakeMirror) sums() map[string]string {
	out := map[string]string{}
	for f, b := range m.files {
		s := md5.Sum(b)
		out[f] = hex.EncodeToString(s[:])
	}
	return out
}

func TestDownload(t *testing.T) {
	m := newFakeMirror(t)
	cache := filepath.Join(t.TempDir(), "cache", "fashion-mnist")
	opts := LoadOptions{Getenv: noEnv, SystemDir: t.TempDir(), CacheDir: cache, BaseURL: m.URL + "/fmnist", checksums: m.sums(), Logger: testLogger(t)}
	train, test, err := LoadFashionMNIST(context.Background(), opts)
	if err != nil {
		t.Fatalf("LoadFashionMNIST(download) = %v", err)
	}
	if !sameTiny(t, train, test) {
		t.Errorf("the downloaded data differ from what was served")
	}
	for f, b := range m.files {
		got, err := os.ReadFile(filepath.Join(cache, f))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("cache file %s: %v, want the served bytes", f, err)
		}
	}
	if ents, _ := os.ReadDir(cache); len(ents) != 4 {
		t.Errorf("cache holds %d entries, want the 4 files and no temporaries", len(ents))
	}
	if n := m.requests.Load(); n != 4 {
		t.Errorf("download made %d requests, want 4", n)
	}
	// A second load finds the cache and does not download.
	if _, _, err := LoadFashionMNIST(context.Background(), opts); err != nil || m.requests.Load() != 4 {
		t.Errorf("second load = %v after %d requests, want the cache and 4 requests", err, m.requests.Load())
	}
	// A partial cache is completed: files with the right MD5 are kept.
	os.Remove(filepath.Join(cache, "t10k-images-idx3-ubyte.gz"))
	if _, _, err := LoadFashionMNIST(context.Background(), opts); err != nil || m.requests.Load() != 5 {
		t.Errorf("load with a partial cache = %v after %d requests, want success after 5", err, m.requests.Load())
	}
}

func TestDownloadFailures(t *testing.T) {
	m := newFakeMirror(t)
	offline := httptest.NewServer(http.NotFoundHandler())
	offlineURL := offline.URL
	offline.Close() // nothing listens there now: as good as no network
	badSums := m.sums()
	badSums["t10k-labels-idx1-ubyte.gz"] = "00000000000000000000000000000000"
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		ctx     context.Context
		base    string
		sums    map[string]string
		wantErr error
		msg     string
	}{
		{"bad MD5", context.Background(), m.URL + "/fmnist/", badSums, ErrChecksum, "MD5 "},
		{"404", context.Background(), m.URL + "/elsewhere/", m.sums(), ErrNotFound, "HTTP 404 Not Found"},
		{"offline", context.Background(), offlineURL, m.sums(), ErrNotFound, "apt-get install dataset-fashion-mnist"},
		{"canceled", canceled, m.URL + "/fmnist/", m.sums(), context.Canceled, "then downloading failed: Get"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cache := filepath.Join(t.TempDir(), "cache")
			opts := LoadOptions{Getenv: noEnv, SystemDir: t.TempDir(), CacheDir: cache, BaseURL: tt.base, checksums: tt.sums, Logger: testLogger(t)}
			_, _, err := LoadFashionMNIST(tt.ctx, opts)
			if !errors.Is(err, tt.wantErr) || !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), tt.msg) ||
				!strings.Contains(err.Error(), cache+" (no such folder)") {
				t.Errorf("LoadFashionMNIST = %v, want %v and ErrNotFound, naming the places looked in and mentioning %q", err, tt.wantErr, tt.msg)
			}
			ents, _ := os.ReadDir(cache)
			for _, e := range ents {
				if got, _ := fileMD5(filepath.Join(cache, e.Name())); got != tt.sums[e.Name()] {
					t.Errorf("the cache kept %s, which is not a verified download", e.Name())
				}
			}
		})
	}
}

func BenchmarkLoadSubset(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := LoadFashionMNIST(context.Background(), LoadOptions{Path: subsetDir}); err != nil {
			b.Fatal(err)
		}
	}
}
