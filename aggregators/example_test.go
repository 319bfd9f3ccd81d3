package aggregators_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
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
	// Output: unknown strategy "fedsgd": known strategies are fedadagrad, fedadam, fedavg, fedavgm, fedprox, fedyogi, krum, median, multi_krum, trimmed_mean
}

// The coordinate-wise median ignores sample counts and extreme values: a
// site that claims 2^40 samples and sends [-1000 1000] moves nothing.
func ExampleMedian() {
	s, _ := aggregators.New("median", nil)
	round, _ := s.Begin(vec(0, 0))
	_ = round.Add(vec(1, 2), 100)
	_ = round.Add(vec(2, 3), 100)
	_ = round.Add(vec(3, 2), 100)
	_ = round.Add(vec(-1000, 1000), 1<<40)
	next, metrics, _ := round.Result()
	// Even count: the mean of the two middle values, (1+2)/2 and (2+3)/2.
	fmt.Println(next.Tensors[0].Data, metrics["updates"])
	// Output: [1.5 2.5] 4
}

// Krum keeps the update closest to its neighbours; "selected_index" is its
// position in the order of Add.
func ExampleKrum() {
	s, _ := aggregators.New("krum", map[string]float64{"f": 1})
	round, _ := s.Begin(vec(0, 0))
	for _, u := range [][]float32{{1, 1}, {1.2, 1}, {0.9, 1.1}, {1.1, 0.8}, {-50, 80}} {
		_ = round.Add(vec(u...), 10)
	}
	next, metrics, _ := round.Result()
	fmt.Println(next.Tensors[0].Data, metrics["selected"], metrics["selected_index"])
	// Output: [1 1] 1 0
}

// ExampleClientParams: what the sites train with under a strategy, as the
// coordinator sends it with each task and records it with the arm's run.
func ExampleClientParams() {
	prox, err := aggregators.New("fedprox", map[string]float64{aggregators.ParamMu: 0.01})
	if err != nil {
		panic(err)
	}
	avg, err := aggregators.New("fedavg", nil)
	if err != nil {
		panic(err)
	}
	fmt.Println(aggregators.ClientParamNames())
	fmt.Println(aggregators.ClientParams(prox).Mu)
	fmt.Println(aggregators.ClientParams(avg).Params())
	// Output:
	// [mu]
	// 0.01
	// map[mu:0]
}

// A round of the FedAvg family folds an update read as a stream — its
// values as little-endian float32, tensor after tensor — as Add folds the
// decoded update; a coordinator folds the updates it kept on disk so.
func ExampleStreamAdder() {
	s, _ := aggregators.New("fedavg", nil)
	round, _ := s.Begin(vec(0, 0))
	_ = round.Add(vec(1, 1), 100)
	var b bytes.Buffer
	_ = model.WriteFloats(&b, []float32{5, 9})
	open := func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b.Bytes())), nil }
	if err := round.(aggregators.StreamAdder).AddStream(open, 300); err != nil {
		fmt.Println(err)
	}
	next, _, _ := round.Result()
	fmt.Println(next.Tensors[0].Data)
	// Output: [4 7]
}
