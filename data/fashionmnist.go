package data

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
)

// Where Fashion-MNIST is looked for, besides the job's data.path.
const (
	// SystemFashionMNIST is where Debian's dataset-fashion-mnist package
	// puts the four .gz files.
	SystemFashionMNIST = "/usr/share/datasets/fashion-mnist"
	// EnvData names the environment variable of a data folder: the loader
	// looks in $COHORT_DATA and $COHORT_DATA/fashion-mnist.
	EnvData = "COHORT_DATA"
	// FashionMNISTSubsetDir is the shipped stratified subset (6,000
	// training and 1,000 test images, the same IDX format), relative to
	// the repository root; see [FindFashionMNISTSubset].
	FashionMNISTSubsetDir = "data/testdata/fmnist-subset"
)

// Fashion-MNIST's sizes.
const (
	fmnistRows    = 28
	fmnistCols    = 28
	fmnistClasses = 10
)

// fmnistFiles are the dataset's four files, without .gz: training images
// and labels, test images and labels.
var fmnistFiles = [4]string{"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}

// LoadOptions configures [LoadFashionMNIST]. The zero value searches
// $COHORT_DATA, [SystemFashionMNIST] and the user cache, then downloads.
type LoadOptions struct {
	// Path is the job's data.path: a folder holding the four files, or
	// holding a fashion-mnist folder that does. When set, only it is
	// searched, and it must exist.
	Path string
	// Setting names where Path was set, in errors ("site.yaml
	// data.fashion-mnist", "--from"); empty is "data.path".
	Setting string
	// Getenv looks up [EnvData]; nil uses os.Getenv.
	Getenv func(string) string
	// SystemDir replaces [SystemFashionMNIST] (tests, other layouts).
	SystemDir string
	// CacheDir is searched after the system folder and receives the
	// download; empty means os.UserCacheDir()/cohort/fashion-mnist.
	CacheDir string
	// NoDownload stops the loader from downloading when the files are
	// nowhere: it fails with [ErrNotFound] instead.
	NoDownload bool
	// BaseURL replaces [FashionMNISTURL] (a mirror, tests).
	BaseURL string
	// HTTPClient downloads; nil uses one with a 10-minute timeout.
	HTTPClient *http.Client
	// Logger receives where the data came from and download progress; nil
	// discards.
	Logger *slog.Logger

	// checksums replaces the published MD5s (tests).
	checksums map[string]string
}

// place is one folder the loader searches and why it is searched.
type place struct {
	dir, why string
}

// LoadFashionMNIST finds and reads Fashion-MNIST's training (60,000) and
// test (10,000) sets: 28×28 images as 784 float32 pixels in [0,1], labels
// 0–9. It looks in opts.Path alone when it is set; otherwise in
// $COHORT_DATA, $COHORT_DATA/fashion-mnist, [SystemFashionMNIST] and the
// cache folder, then downloads the four files from [FashionMNISTURL] into
// the cache, checking their published MD5s. In each folder a file may be
// plain or gzip-compressed, named with or without .gz. Files that are
// found but damaged are an error, not a reason to look further. Nothing
// found is [ErrNotFound], with every place looked in and the fix.
func LoadFashionMNIST(ctx context.Context, opts LoadOptions) (train, test *Dataset, err error) {
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	setting := opts.Setting
	if setting == "" {
		setting = "data.path"
	}
	if opts.Path != "" {
		return loadExplicit(ctx, opts.Path, setting, log)
	}

	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	var places []place
	var looked []string
	if d := getenv(EnvData); d != "" {
		places = append(places, place{d, "$" + EnvData}, place{filepath.Join(d, "fashion-mnist"), "$" + EnvData})
	} else {
		looked = append(looked, "$"+EnvData+" (unset)")
	}
	sys := opts.SystemDir
	if sys == "" {
		sys = SystemFashionMNIST
	}
	places = append(places, place{sys, "system"})
	cache := opts.CacheDir
	if cache == "" {
		if c, err := os.UserCacheDir(); err == nil {
			cache = filepath.Join(c, "cohort", "fashion-mnist")
		} else {
			looked = append(looked, fmt.Sprintf("the user cache (%v)", err))
		}
	}
	if cache != "" {
		places = append(places, place{cache, "cache"})
	}

	for _, p := range places {
		files, why := findFiles(p.dir)
		if why != "" {
			log.Debug("fashion_mnist_not_here", "dir", p.dir, "source", p.why, "reason", why)
			looked = append(looked, fmt.Sprintf("%s (%s)", p.dir, why))
			continue
		}
		train, test, err := loadFiles(ctx, files, log)
		if err != nil && p.why == "cache" {
			err = fmt.Errorf("%w (delete %s to download it again)", err, p.dir)
		}
		return train, test, err
	}

	fix := fmt.Sprintf("install Debian's package (apt-get install dataset-fashion-mnist), or set %s or $%s to a folder holding %s (plain or .gz)",
		setting, EnvData, strings.Join(gzNames(), ", "))
	if opts.NoDownload || cache == "" {
		return nil, nil, fmt.Errorf("loading Fashion-MNIST: %w: looked in %s, and downloading is off; %s",
			ErrNotFound, strings.Join(looked, ", "), fix)
	}
	base := opts.BaseURL
	if base == "" {
		base = FashionMNISTURL
	}
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: downloadTimeout}
	}
	sums := opts.checksums
	if sums == nil {
		sums = fashionMNISTMD5
	}
	if err := downloadFashionMNIST(ctx, client, base, cache, sums, log); err != nil {
		return nil, nil, fmt.Errorf("loading Fashion-MNIST: %w: looked in %s; then downloading failed: %w; %s",
			ErrNotFound, strings.Join(looked, ", "), err, fix)
	}
	files, why := findFiles(cache)
	if why != "" {
		return nil, nil, fmt.Errorf("loading Fashion-MNIST: the download into %s left it incomplete (%s)", cache, why)
	}
	return loadFiles(ctx, files, log)
}

// loadExplicit loads from an explicit folder (the job's data.path, or the
// one setting names), which must exist and hold the files (directly or in
// a fashion-mnist folder): an explicit path never falls through to other
// places.
func loadExplicit(ctx context.Context, path, setting string, log *slog.Logger) (*Dataset, *Dataset, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("loading Fashion-MNIST: %s %q: %w: %w; fix %s, or leave it empty to search $%s, %s and the user cache",
			setting, path, ErrNotFound, err, setting, EnvData, SystemFashionMNIST)
	}
	if !st.IsDir() {
		return nil, nil, fmt.Errorf("loading Fashion-MNIST: %s %q is a file; point it at the folder holding %s",
			setting, path, strings.Join(gzNames(), ", "))
	}
	files, why := findFiles(path)
	if why != "" {
		sub := filepath.Join(path, "fashion-mnist")
		files2, why2 := findFiles(sub)
		if why2 != "" {
			return nil, nil, fmt.Errorf("loading Fashion-MNIST: %w: %s %q %s (and %s: %s); put %s there (plain or .gz), or fix %s",
				ErrNotFound, setting, path, why, sub, why2, strings.Join(gzNames(), ", "), setting)
		}
		files = files2
	}
	return loadFiles(ctx, files, log)
}

// findFiles looks for the four files in dir; why says what is missing
// when they are not all there.
func findFiles(dir string) (files [4]string, why string) {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return files, "no such folder"
	case err != nil:
		return files, err.Error()
	case !st.IsDir():
		return files, "not a folder"
	}
	var missing []string
	for i, name := range fmnistFiles {
		alt := strings.Replace(name, "-idx", ".idx", 1) // as some archives extract them
		for _, cand := range []string{name + ".gz", name, alt, alt + ".gz"} {
			p := filepath.Join(dir, cand)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				files[i] = p
				break
			}
		}
		if files[i] == "" {
			missing = append(missing, name)
		}
	}
	switch len(missing) {
	case 0:
		return files, ""
	case len(fmnistFiles):
		return files, "holds none of the files"
	default:
		return files, "lacks " + strings.Join(missing, ", ")
	}
}

// gzNames returns the four file names as the official address serves them.
func gzNames() []string {
	out := make([]string, len(fmnistFiles))
	for i, n := range fmnistFiles {
		out[i] = n + ".gz"
	}
	return out
}

// loadFiles reads the training and test pairs found by findFiles.
func loadFiles(ctx context.Context, files [4]string, log *slog.Logger) (*Dataset, *Dataset, error) {
	train, err := readSplit(ctx, "fashion-mnist/train", files[0], files[1])
	if err != nil {
		return nil, nil, fmt.Errorf("loading Fashion-MNIST: %w", err)
	}
	test, err := readSplit(ctx, "fashion-mnist/test", files[2], files[3])
	if err != nil {
		return nil, nil, fmt.Errorf("loading Fashion-MNIST: %w", err)
	}
	log.Info("fashion_mnist_loaded", "dir", filepath.Dir(files[0]), "train", train.N, "test", test.N)
	return train, test, nil
}

// readSplit reads one images file and its labels, checking that they are
// Fashion-MNIST's: 28×28 images, as many labels as images, labels 0–9.
func readSplit(ctx context.Context, name, imagesPath, labelsPath string) (*Dataset, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	pixels, dims, err := readIDXFile(imagesPath, MagicImages)
	if err != nil {
		return nil, err
	}
	if dims[1] != fmnistRows || dims[2] != fmnistCols {
		return nil, fmt.Errorf("reading %s: %w: images are %d×%d, Fashion-MNIST's are %d×%d",
			imagesPath, ErrMalformed, dims[1], dims[2], fmnistRows, fmnistCols)
	}
	if dims[0] == 0 {
		return nil, fmt.Errorf("reading %s: %w: it holds no images", imagesPath, ErrMalformed)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	labels, ldims, err := readIDXFile(labelsPath, MagicLabels)
	if err != nil {
		return nil, err
	}
	n := dims[0]
	if ldims[0] != n {
		return nil, fmt.Errorf("%w: %s has %d images but %s has %d labels; the two files must come from the same split",
			ErrMalformed, imagesPath, n, labelsPath, ldims[0])
	}
	for i, l := range labels {
		if l >= fmnistClasses {
			return nil, fmt.Errorf("reading %s: %w: label %d of sample %d is not a class 0–%d", labelsPath, ErrMalformed, l, i, fmnistClasses-1)
		}
	}
	var scale [256]float32
	for i := range scale {
		scale[i] = float32(i) / 255
	}
	ds := &Dataset{Name: name, N: n, Features: fmnistRows * fmnistCols, Shape: []int{1, fmnistRows, fmnistCols},
		Classes: fmnistClasses, X: make([]float32, len(pixels)), Y: labels}
	for i, p := range pixels {
		ds.X[i] = scale[p]
	}
	return ds, nil
}

// FindFashionMNISTSubset returns the absolute path of the shipped subset
// ([FashionMNISTSubsetDir]), looking under dir and each of its parents, so
// tests and demos find it from any folder of the repository.
func FindFashionMNISTSubset(dir string) (string, error) {
	d, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("finding the Fashion-MNIST subset: %w", err)
	}
	for {
		p := filepath.Join(d, FashionMNISTSubsetDir)
		if _, why := findFiles(p); why == "" {
			return p, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("finding the Fashion-MNIST subset: %w: no %s under %s or its parents; run from inside the Cohort repository",
				ErrNotFound, FashionMNISTSubsetDir, dir)
		}
		d = parent
	}
}
