package data

// Dataset is an in-memory labelled dataset: N samples of Features float32
// values each (row-major in X, scaled to [0,1] for images) and their labels
// in Y (0 ≤ Y[i] < Classes). Shape is the shape of one sample, e.g.
// [1 28 28] for Fashion-MNIST; its product equals Features.
type Dataset struct {
	Name     string
	X        []float32
	Y        []uint8
	N        int
	Features int
	Shape    []int
	Classes  int
}
