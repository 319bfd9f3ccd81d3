package data

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// WriteFashionMNIST writes train and test as the four gzipped IDX files of
// Fashion-MNIST in dir (created if missing), so that [LoadFashionMNIST]
// with Path dir reads them back exactly: a site's own copy of its
// partition, as `cohort data split` makes for a walk-through on one
// machine. Both sets must be 1×28×28 images with values p/255.
func WriteFashionMNIST(dir string, train, test *Dataset) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("writing Fashion-MNIST to %s: %w", dir, err)
	}
	for i, ds := range []*Dataset{train, test} {
		if ds == nil || ds.Features != fmnistRows*fmnistCols || ds.Validate() != nil {
			return fmt.Errorf("writing Fashion-MNIST to %s: %w: set %d is not a valid 28×28 image set", dir, ErrInvalid, i)
		}
		pixels := make([]byte, len(ds.X))
		for k, v := range ds.X {
			p := math.Round(float64(v) * 255)
			if p < 0 || p > 255 {
				return fmt.Errorf("writing Fashion-MNIST to %s: %w: pixel value %v is outside [0, 1]", dir, ErrInvalid, v)
			}
			pixels[k] = byte(p)
		}
		img, lbl := fmnistFiles[2*i], fmnistFiles[2*i+1]
		if err := writeGzIDX(filepath.Join(dir, img+".gz"), MagicImages, []int{ds.N, fmnistRows, fmnistCols}, pixels); err != nil {
			return err
		}
		if err := writeGzIDX(filepath.Join(dir, lbl+".gz"), MagicLabels, []int{ds.N}, ds.Y); err != nil {
			return err
		}
	}
	return nil
}

func writeGzIDX(path string, magic uint32, dims []int, b []byte) error {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if err := WriteIDX(w, magic, dims, b); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
