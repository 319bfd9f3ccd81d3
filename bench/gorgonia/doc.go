// Package gorgonia benchmarks Cohort's built-in trainers against gorgonia
// v0.9.18 (graph built once, TapeMachine, vanilla SGD) on the same MLP
// (784-200-10) and CNN (conv 32 and 64 channels, FC 512) and the same
// Fashion-MNIST images. It is a module of its own so that Cohort's main
// module does not depend on gorgonia; it imports Cohort through a replace
// directive. Run from this folder:
//
//	go test -run XXX -bench . -benchtime 3x
//
// Both sides report samples/s. The gorgonia graph has a fixed batch size,
// so its epochs leave out the last partial batch; its samples/s counts
// the samples it trained on.
package gorgonia
