//go:build ignore

// gen_subset writes testdata/fmnist-subset: a stratified subset of
// Fashion-MNIST, 600 training and 100 test images of each class, drawn
// with a fixed seed from Debian's dataset-fashion-mnist
// (apt-get install dataset-fashion-mnist) in the same gzip'd IDX format.
// Run from data:
//
//	go run gen_subset.go [-from /usr/share/datasets/fashion-mnist] [-out testdata/fmnist-subset]
//
// The output is byte-for-byte the same on every run.
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"github.com/cohortfl/cohort/data"
)

func main() {
	from := flag.String("from", data.SystemFashionMNIST, "folder holding the full Fashion-MNIST")
	out := flag.String("out", filepath.Join("testdata", "fmnist-subset"), "folder to write the subset into")
	flag.Parse()
	if err := run(*from, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gen_subset:", err)
		os.Exit(1)
	}
}

func run(from, out string) error {
	train, test, err := data.LoadFashionMNIST(context.Background(), data.LoadOptions{Path: from, NoDownload: true})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	r := rand.New(rand.NewPCG(2024, 11)) // one stream for both splits, train first
	if err := write(out, "train", pick(train, 600, r)); err != nil {
		return err
	}
	return write(out, "t10k", pick(test, 100, r))
}

// pick draws perClass samples of every class, keeping the dataset's order.
func pick(ds *data.Dataset, perClass int, r *rand.Rand) *data.Dataset {
	byClass := make([][]int, ds.Classes)
	for i, y := range ds.Y {
		byClass[y] = append(byClass[y], i)
	}
	var idx []int
	for _, c := range byClass {
		r.Shuffle(len(c), func(i, j int) { c[i], c[j] = c[j], c[i] })
		idx = append(idx, c[:perClass]...)
	}
	slices.Sort(idx)
	return ds.Subset(idx)
}

func write(dir, prefix string, ds *data.Dataset) error {
	pixels := make([]byte, len(ds.X))
	for i, v := range ds.X {
		pixels[i] = byte(v*255 + 0.5) // exact: the loader stored p/255
	}
	if err := writeGz(filepath.Join(dir, prefix+"-images-idx3-ubyte.gz"), data.MagicImages, []int{ds.N, 28, 28}, pixels); err != nil {
		return err
	}
	return writeGz(filepath.Join(dir, prefix+"-labels-idx1-ubyte.gz"), data.MagicLabels, []int{ds.N}, ds.Y)
}

func writeGz(path string, magic uint32, dims []int, b []byte) error {
	var buf bytes.Buffer
	w, err := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	if err != nil {
		return err
	}
	if err := data.WriteIDX(w, magic, dims, b); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	return os.WriteFile(path, buf.Bytes(), 0o644)
}
