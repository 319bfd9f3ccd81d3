// Package train holds the trainers a site runs its tasks with: a
// [Trainer] initialises, trains and evaluates a model given as
// model.Weights, so that nothing framework-specific crosses the package
// boundary. The dense models (logreg, mlp) and the CNN compute their
// forward and backward passes on gonum's BLAS, with SGD (momentum, weight
// decay) and FedProx's proximal term μ/2·‖w − w_global‖².
package train
