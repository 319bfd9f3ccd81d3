package data

import (
	"context"
	"slices"
	"testing"
)

func TestWriteFashionMNISTRoundTrip(t *testing.T) {
	dir, err := FindFashionMNISTSubset(".")
	if err != nil {
		t.Fatal(err)
	}
	train, test, err := LoadFashionMNIST(context.Background(), LoadOptions{Path: dir, NoDownload: true})
	if err != nil {
		t.Fatal(err)
	}
	train = train.Subset([]int{0, 5, 17, 300})
	out := t.TempDir()
	if err := WriteFashionMNIST(out, train, test); err != nil {
		t.Fatal(err)
	}
	tr2, te2, err := LoadFashionMNIST(context.Background(), LoadOptions{Path: out, NoDownload: true})
	if err != nil {
		t.Fatal(err)
	}
	if tr2.Digest() != train.Digest() || te2.Digest() != test.Digest() {
		t.Errorf("read back digests %s/%s, want %s/%s", tr2.Digest(), te2.Digest(), train.Digest(), test.Digest())
	}
	if !slices.Equal(tr2.Y, train.Y) {
		t.Errorf("labels read back %v, want %v", tr2.Y, train.Y)
	}
	if err := WriteFashionMNIST(t.TempDir(), &Dataset{Name: "x", N: 1, Features: 2, Shape: []int{2}, Classes: 2, X: []float32{0, 1}, Y: []uint8{0}}, test); err == nil {
		t.Error("writing a 2-feature set as Fashion-MNIST: no error")
	}
}
