package aggregators_test

import (
	"fmt"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/model"
)

func ExampleFedAvg() {
	global := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{2}, Data: []float32{0, 0}}}}
	s, _ := aggregators.New("fedavg", nil)
	round, _ := s.Begin(global)
	// Two sites: 100 samples with weights [1 1], 300 samples with [5 9].
	_ = round.Add(&model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{2}, Data: []float32{1, 1}}}}, 100)
	_ = round.Add(&model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{2}, Data: []float32{5, 9}}}}, 300)
	next, metrics, _ := round.Result()
	fmt.Println(next.Tensors[0].Data, metrics["samples"])
	// Output: [4 7] 400
}
