package data

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Errors returned by this package.
var (
	// ErrNotFound is returned when a dataset's files are in none of the
	// places the loader looks.
	ErrNotFound = errors.New("dataset not found")
	// ErrMalformed is returned for a file that is not valid IDX.
	ErrMalformed = errors.New("malformed IDX file")
)

// SystemFashionMNIST is where Debian's dataset-fashion-mnist package puts
// the files.
const SystemFashionMNIST = "/usr/share/datasets/fashion-mnist"

// LoadOptions configures [LoadFashionMNIST].
type LoadOptions struct {
	// Path is the job's data.path; when set, only it is searched.
	Path string
	// Getenv looks up $COHORT_DATA; nil uses os.Getenv.
	Getenv func(string) string
	// SystemDir overrides [SystemFashionMNIST] (for tests).
	SystemDir string
	// CacheDir is where downloads go (default: the user cache
	// dir/cohort/fashion-mnist).
	CacheDir string
	// NoDownload stops the loader from downloading when nothing is found.
	NoDownload bool
	// BaseURL overrides [FashionMNISTURL] (for tests and mirrors).
	BaseURL string
	// HTTPClient downloads (default: one with a 5-minute timeout).
	HTTPClient *http.Client
}

var fmnistFiles = [4]string{"train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}

// LoadFashionMNIST finds and reads Fashion-MNIST's training and test sets.
func LoadFashionMNIST(ctx context.Context, opts LoadOptions) (train, test *Dataset, err error) {
	getenv := opts.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	sys := opts.SystemDir
	if sys == "" {
		sys = SystemFashionMNIST
	}
	var dirs []string
	if opts.Path != "" {
		if _, err := os.Stat(opts.Path); err != nil {
			return nil, nil, fmt.Errorf("data.path %q: %w; fix the path or leave it empty to search the usual places", opts.Path, err)
		}
		dirs = []string{opts.Path, filepath.Join(opts.Path, "fashion-mnist")}
	} else {
		if d := getenv("COHORT_DATA"); d != "" {
			dirs = append(dirs, d, filepath.Join(d, "fashion-mnist"))
		}
		dirs = append(dirs, sys)
		cache := opts.CacheDir
		if cache == "" {
			if c, err := os.UserCacheDir(); err == nil {
				cache = filepath.Join(c, "cohort", "fashion-mnist")
			}
		}
		if cache != "" {
			dirs = append(dirs, cache)
			if !opts.NoDownload {
				defer func() {
					if err != nil && errors.Is(err, ErrNotFound) {
						train, test, err = download(ctx, opts, cache, err)
					}
				}()
			}
		}
	}
	for _, d := range dirs {
		paths, ok := findFiles(d)
		if !ok {
			continue
		}
		train, err := readPair("fashion-mnist/train", paths[0], paths[1])
		if err != nil {
			return nil, nil, err
		}
		test, err := readPair("fashion-mnist/test", paths[2], paths[3])
		if err != nil {
			return nil, nil, err
		}
		return train, test, nil
	}
	return nil, nil, fmt.Errorf("%w: Fashion-MNIST's four IDX files (plain or .gz) are in none of %s; "+
		"install Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist), or point data.path or $COHORT_DATA at a folder holding %s",
		ErrNotFound, strings.Join(dirs, ", "), strings.Join(fmnistFiles[:], ", "))
}

// download fetches the dataset into cache and loads it; on failure the
// error says where the loader looked and why the download failed.
func download(ctx context.Context, opts LoadOptions, cache string, notFound error) (*Dataset, *Dataset, error) {
	client := opts.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: 5 * time.Minute}
	}
	base := opts.BaseURL
	if base == "" {
		base = FashionMNISTURL
	}
	if err := downloadFashionMNIST(ctx, client, base, cache); err != nil {
		return nil, nil, fmt.Errorf("%w; downloading it failed too: %v", notFound, err)
	}
	paths, ok := findFiles(cache)
	if !ok {
		return nil, nil, fmt.Errorf("%w; the download to %s left files missing", notFound, cache)
	}
	train, err := readPair("fashion-mnist/train", paths[0], paths[1])
	if err != nil {
		return nil, nil, err
	}
	test, err := readPair("fashion-mnist/test", paths[2], paths[3])
	if err != nil {
		return nil, nil, err
	}
	return train, test, nil
}

func findFiles(dir string) ([4]string, bool) {
	var out [4]string
	for i, name := range fmnistFiles {
		found := false
		for _, cand := range []string{name + ".gz", name, strings.Replace(name, "-idx", ".idx", 1)} {
			p := filepath.Join(dir, cand)
			if st, err := os.Stat(p); err == nil && !st.IsDir() {
				out[i], found = p, true
				break
			}
		}
		if !found {
			return out, false
		}
	}
	return out, true
}

func readPair(name, imagesPath, labelsPath string) (*Dataset, error) {
	imgs, dims, err := readIDXFile(imagesPath, 0x0803)
	if err != nil {
		return nil, err
	}
	labels, _, err := readIDXFile(labelsPath, 0x0801)
	if err != nil {
		return nil, err
	}
	n := dims[0]
	if len(labels) != n {
		return nil, fmt.Errorf("%w: %s has %d images but %s has %d labels", ErrMalformed, imagesPath, n, labelsPath, len(labels))
	}
	feat := 1
	for _, d := range dims[1:] {
		feat *= d
	}
	ds := &Dataset{Name: name, N: n, Features: feat, Shape: append([]int{1}, dims[1:]...), Classes: 10,
		X: make([]float32, len(imgs)), Y: make([]uint8, n)}
	for i, p := range imgs {
		ds.X[i] = float32(p) / 255
	}
	for i, l := range labels {
		if l >= 10 {
			return nil, fmt.Errorf("%w: %s: label %d of sample %d is not a class 0-9", ErrMalformed, labelsPath, l, i)
		}
		ds.Y[i] = l
	}
	return ds, nil
}

func readIDXFile(path string, magic uint32) ([]byte, []int, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("reading dataset: %w", err)
	}
	defer f.Close()
	b, dims, err := ReadIDX(f, magic)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, dims, nil
}

// ReadIDX reads an IDX file of unsigned bytes (plain or gzip, detected by
// its magic bytes) and checks its magic number: 0x0801 for labels, 0x0803
// for images. It returns the data and the dimensions.
func ReadIDX(r io.Reader, magic uint32) ([]byte, []int, error) {
	br := bufio.NewReader(r)
	if head, err := br.Peek(2); err == nil && head[0] == 0x1f && head[1] == 0x8b {
		gz, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: gzip: %v", ErrMalformed, err)
		}
		defer gz.Close()
		br = bufio.NewReader(gz)
	}
	var m uint32
	if err := binary.Read(br, binary.BigEndian, &m); err != nil {
		return nil, nil, fmt.Errorf("%w: truncated before the magic number", ErrMalformed)
	}
	if m != magic {
		return nil, nil, fmt.Errorf("%w: magic number %#08x, want %#08x", ErrMalformed, m, magic)
	}
	nd := int(magic & 0xff)
	dims := make([]int, nd)
	total := int64(1)
	for i := range dims {
		var d uint32
		if err := binary.Read(br, binary.BigEndian, &d); err != nil {
			return nil, nil, fmt.Errorf("%w: truncated in the dimensions", ErrMalformed)
		}
		dims[i] = int(d)
		total *= int64(d)
		if total > 1<<32 {
			return nil, nil, fmt.Errorf("%w: dimensions %v are too large", ErrMalformed, dims[:i+1])
		}
	}
	var buf bytes.Buffer
	n, err := io.CopyN(&buf, br, total)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if n != total {
		return nil, nil, fmt.Errorf("%w: truncated: dimensions %v need %d bytes, got %d", ErrMalformed, dims, total, n)
	}
	return buf.Bytes(), dims, nil
}
