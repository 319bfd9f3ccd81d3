// Package train holds the trainers a site runs its tasks with: a
// [Trainer] initialises, trains and evaluates a model given as
// model.Weights, named and laid out as PyTorch's state_dict, so that
// nothing framework-specific crosses the package boundary and an external
// PyTorch trainer exchanges the same files. The built-in models (logreg,
// mlp, the FedAvg cnn) compute their forward and backward passes on
// gonum's BLAS, with minibatch SGD (momentum, weight decay) and FedProx's
// proximal term μ/2·‖w − w_global‖²; they use every core and give the same
// bits for the same seed whatever the number of cores. [Exec] runs the
// institute's own command instead, once per task or as persistent workers
// keyed by [TaskInfo] (docs/trainer-protocol.md).
package train
