package aggregators

import (
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/cohortfl/cohort/model"
)

func weights(vals ...float32) *model.Weights {
	return &model.Weights{Tensors: []model.Tensor{
		{Name: "w", Shape: []int{len(vals) - 1}, Data: vals[:len(vals)-1]},
		{Name: "b", Shape: []int{1}, Data: vals[len(vals)-1:]},
	}}
}

func TestFedAvgWeightedAverage(t *testing.T) {
	tests := []struct {
		name    string
		lr      float64
		global  *model.Weights
		updates []*model.Weights
		n       []int64
		want    []float32
	}{
		{"equal weights", 1, weights(0, 0, 0), []*model.Weights{weights(1, 2, 3), weights(3, 4, 5)}, []int64{1, 1}, []float32{2, 3, 4}},
		// (100·1 + 300·5) / 400 = 4
		{"by samples", 1, weights(0, 0), []*model.Weights{weights(1, 1), weights(5, 5)}, []int64{100, 300}, []float32{4, 4}},
		{"one update is itself", 1, weights(9, 9), []*model.Weights{weights(0.1, -7)}, []int64{13}, []float32{0.1, -7}},
		// server_lr 0.5: halfway from the global 2 to the average 4.
		{"server lr", 0.5, weights(2, 2), []*model.Weights{weights(4, 4)}, []int64{1}, []float32{3, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New("fedavg", map[string]float64{"server_lr": tt.lr})
			if err != nil {
				t.Fatal(err)
			}
			r, err := s.Begin(tt.global)
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range tt.updates {
				if err := r.Add(u, tt.n[i]); err != nil {
					t.Fatal(err)
				}
			}
			next, metrics, err := r.Result()
			if err != nil {
				t.Fatal(err)
			}
			got := append(append([]float32{}, next.Tensors[0].Data...), next.Tensors[1].Data...)
			for i := range tt.want {
				if math.Abs(float64(got[i]-tt.want[i])) > 1e-6 {
					t.Fatalf("Result = %v, want %v", got, tt.want)
				}
			}
			if metrics["updates"] != float64(len(tt.updates)) {
				t.Errorf("metrics[updates] = %v, want %d", metrics["updates"], len(tt.updates))
			}
		})
	}
}

func TestAddRejectsBadUpdatesAndKeepsAggregate(t *testing.T) {
	nan := weights(1, float32(math.NaN()))
	inf := weights(float32(math.Inf(1)), 1)
	shape := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{2}, Data: []float32{1, 1}}, {Name: "b", Shape: []int{1}, Data: []float32{1}}}}
	name := &model.Weights{Tensors: []model.Tensor{{Name: "v", Shape: []int{1}, Data: []float32{1}}, {Name: "b", Shape: []int{1}, Data: []float32{1}}}}
	s, _ := New("fedprox", map[string]float64{"mu": 0.01})
	r, _ := s.Begin(weights(0, 0))
	if err := r.Add(weights(2, 2), 10); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		name string
		w    *model.Weights
		n    int64
	}{{"nan", nan, 10}, {"inf", inf, 10}, {"shape", shape, 10}, {"name", name, 10}, {"zero samples", weights(9, 9), 0}, {"nil", nil, 1}} {
		if err := r.Add(bad.w, bad.n); !errors.Is(err, ErrBadUpdate) {
			t.Errorf("Add(%s) = %v, want ErrBadUpdate", bad.name, err)
		}
	}
	next, _, _ := r.Result()
	if next.Tensors[0].Data[0] != 2 || next.Tensors[1].Data[0] != 2 {
		t.Errorf("after rejected updates the result is %v, want the one good update [2 2]", next.Tensors)
	}
}

func TestStreamingMatchesNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const p, sites = 1000, 17
	global := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{p}, Data: make([]float32, p)}}}
	round, _ := (&FedAvg{}).Begin(global)
	sums := make([]float64, p)
	var total float64
	for s := 0; s < sites; s++ {
		u := global.ZerosLike()
		for i := range u.Tensors[0].Data {
			u.Tensors[0].Data[i] = float32(r.NormFloat64())
		}
		n := int64(1 + r.IntN(1000))
		if err := round.Add(u, n); err != nil {
			t.Fatal(err)
		}
		for i, v := range u.Tensors[0].Data {
			sums[i] += float64(n) * float64(v)
		}
		total += float64(n)
	}
	next, _, _ := round.Result()
	for i, v := range next.Tensors[0].Data {
		if want := sums[i] / total; math.Abs(float64(v)-want) > 1e-6 {
			t.Fatalf("param %d = %v, naive average %v", i, v, want)
		}
	}
}

func TestNew(t *testing.T) {
	if _, err := New("fedsgd", nil); !errors.Is(err, ErrUnknownStrategy) {
		t.Errorf("New(fedsgd) = %v, want ErrUnknownStrategy", err)
	}
	if _, err := New("fedprox", map[string]float64{"mu": -1}); err == nil {
		t.Error("New(fedprox, mu=-1) = nil error")
	}
	s, err := New("fedprox", map[string]float64{"mu": 0.1})
	if err != nil || s.Name() != "fedprox" || s.(*FedProx).Mu != 0.1 {
		t.Errorf("New(fedprox) = %v, %v", s, err)
	}
	if _, err := (&FedAvg{}).Begin(nil); err == nil {
		t.Error("Begin(nil) = nil error")
	}
	r, _ := (&FedAvg{}).Begin(weights(1, 1))
	if _, _, err := r.Result(); !errors.Is(err, ErrNoUpdates) {
		t.Errorf("Result with no updates = %v, want ErrNoUpdates", err)
	}
}
