package aggregators

import (
	"math/rand/v2"

	"github.com/cohortfl/cohort/model"
)

// randomWeights returns tensors of the given lengths, named a, b, …, of
// standard normal values drawn from r.
func randomWeights(r *rand.Rand, lens ...int) *model.Weights {
	w := &model.Weights{}
	for i, n := range lens {
		d := make([]float32, n)
		for j := range d {
			d[j] = float32(r.NormFloat64())
		}
		w.Tensors = append(w.Tensors, model.Tensor{Name: string(rune('a' + i)), Shape: []int{n}, Data: d})
	}
	return w
}

// perturbed returns a copy of w with noise of standard deviation 0.1 from
// r added: an update trained from w.
func perturbed(r *rand.Rand, w *model.Weights) *model.Weights {
	u := w.Clone()
	for i := range u.Tensors {
		for j := range u.Tensors[i].Data {
			u.Tensors[i].Data[j] += float32(0.1 * r.NormFloat64())
		}
	}
	return u
}
