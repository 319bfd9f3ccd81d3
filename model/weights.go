package model

// Tensor is one named float32 tensor. Data holds the elements in row-major
// order; len(Data) equals the product of Shape (1 for a scalar, Shape nil).
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

// Weights is an ordered list of named tensors: a model's parameters. The
// order is part of the identity of a model: two Weights are compatible when
// they hold the same names, in the same order, with the same shapes.
type Weights struct {
	Tensors []Tensor
}
