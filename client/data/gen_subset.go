//go:build ignore

// gen_subset writes testdata/fmnist-subset: a stratified subset of
// Fashion-MNIST (600 training and 100 test images per class), drawn with a
// fixed seed from Debian's dataset-fashion-mnist. Run from client/data:
//
//	go run gen_subset.go
package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/binary"
	"log"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"

	"github.com/cohortfl/cohort/client/data"
)

func main() {
	train, test, err := data.LoadFashionMNIST(context.Background(), data.LoadOptions{Path: data.SystemFashionMNIST})
	if err != nil {
		log.Fatal(err)
	}
	out := filepath.Join("testdata", "fmnist-subset")
	if err := os.MkdirAll(out, 0o755); err != nil {
		log.Fatal(err)
	}
	r := rand.New(rand.NewPCG(2024, 11))
	write(out, "train", pick(train, 600, r))
	write(out, "t10k", pick(test, 100, r))
}

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
	sort.Ints(idx)
	return ds.Subset(idx)
}

func write(dir, prefix string, ds *data.Dataset) {
	var img, lab bytes.Buffer
	binary.Write(&img, binary.BigEndian, []uint32{0x0803, uint32(ds.N), 28, 28})
	for _, v := range ds.X {
		img.WriteByte(byte(v*255 + 0.5))
	}
	binary.Write(&lab, binary.BigEndian, []uint32{0x0801, uint32(ds.N)})
	lab.Write(ds.Y)
	gz(filepath.Join(dir, prefix+"-images-idx3-ubyte.gz"), img.Bytes())
	gz(filepath.Join(dir, prefix+"-labels-idx1-ubyte.gz"), lab.Bytes())
}

func gz(path string, b []byte) {
	var buf bytes.Buffer
	w, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	w.Write(b)
	w.Close()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		log.Fatal(err)
	}
}
