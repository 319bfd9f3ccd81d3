package aggregators_test

import (
	"errors"
	"fmt"
	"math"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/model"
)

func vec(v ...float32) *model.Weights {
	return &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{len(v)}, Data: v}}}
}

// FedAvg weights each site's model by its sample count.
func ExampleFedAvg() {
	s, _ := aggregators.New("fedavg", nil)
	round, _ := s.Begin(vec(0, 0))
	// Two sites: 100 samples trained to [1 1], 300 samples to [5 9].
	_ = round.Add(vec(1, 1), 100)
	_ = round.Add(vec(5, 9), 300)
	next, metrics, _ := round.Result()
	fmt.Println(next.Tensors[0].Data, metrics["updates"], metrics["samples"])
	// Output: [4 7] 2 400
}

// A server learning rate below 1 moves the global model only part of the
// way to the sites' mean.
func ExampleFedAvg_serverLearningRate() {
	s, _ := aggregators.New("fedavg", map[string]float64{"server_lr": 0.5})
	round, _ := s.Begin(vec(2, 2))
	_ = round.Add(vec(4, 6), 10)
	next, _, _ := round.Result()
	fmt.Println(next.Tensors[0].Data)
	// Output: [3 4]
}

// A bad update is refused and leaves the aggregate as it was.
func ExampleRound_Add() {
	s, _ := aggregators.New("fedprox", map[string]float64{"mu": 0.01})
	round, _ := s.Begin(vec(0, 0))
	_ = round.Add(vec(1, 2), 50)
	err := round.Add(vec(1, float32(math.NaN())), 50)
	fmt.Println(errors.Is(err, aggregators.ErrBadUpdate), err)
	next, _, _ := round.Result()
	fmt.Println(next.Tensors[0].Data)
	// Output:
	// true bad update: non-finite value: tensor "w" holds NaN at index 1
	// [1 2]
}

func ExampleNew() {
	_, err := aggregators.New("fedsgd", nil)
	fmt.Println(err)
	// Output: unknown strategy "fedsgd": known strategies are fedavg, fedprox
}
