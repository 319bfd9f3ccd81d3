package client

import (
	"context"
	"errors"
	"math"
	"testing"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// meanTrainer is a fake trainer whose "trained" weights are all the mean
// of the client's features, so a worker's answer can be checked by hand.
type meanTrainer struct{ calls int }

func (m *meanTrainer) Init(int64) (*model.Weights, error) { return nil, errors.New("unused") }
func (m *meanTrainer) Evaluate(context.Context, *model.Weights, *data.Dataset) (train.EvalResult, error) {
	return train.EvalResult{}, errors.New("unused")
}
func (m *meanTrainer) Train(_ context.Context, w *model.Weights, ds *data.Dataset, _ train.TrainConfig) (*model.Weights, train.TrainResult, error) {
	m.calls++
	var s float64
	for _, x := range ds.X {
		s += float64(x)
	}
	out := w.ZerosLike()
	for _, t := range out.Tensors {
		for j := range t.Data {
			t.Data[j] = float32(s / float64(len(ds.X)))
		}
	}
	return out, train.TrainResult{NumSamples: int64(ds.N), Loss: 1, Steps: 1, Epochs: 1}, nil
}

func pool(n int) *data.Dataset {
	d := &data.Dataset{Name: "pool", N: n, Features: 1, Shape: []int{1}, Classes: 4, X: make([]float32, n), Y: make([]uint8, n)}
	for i := range n {
		d.X[i], d.Y[i] = float32(i), uint8(i%4)
	}
	return d
}

// TestTrainVirtualWeightedMean: a worker's update is its clients' mean
// weighted by their samples, and two workers' updates weighted by their
// totals give the one worker's: the split does not change FedAvg.
func TestTrainVirtualWeightedMean(t *testing.T) {
	ds := pool(2000)
	global := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{3}, Data: make([]float32, 3)}}}
	ids := []int64{3, 17, 1_000_000, 19_999_999}
	vc := func(ids []int64) *pb.VirtualClients {
		return &pb.VirtualClients{ClientIds: ids, Seed: 9, Alpha: 0.3}
	}
	ctx := context.Background()
	var progressed int
	all, res, err := trainVirtual(ctx, &meanTrainer{}, global, ds, train.TrainConfig{}, vc(ids), func(done, total int, _ float64) {
		progressed = done
		if total != len(ids) {
			t.Errorf("progress total = %d, want %d", total, len(ids))
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if progressed != len(ids) {
		t.Errorf("progress reached %d clients, want %d", progressed, len(ids))
	}
	// By hand: the mean of every client's features, over all their samples.
	p, _ := data.NewVirtualPartitioner(ds, data.VirtualSpec{Seed: 9, Alpha: 0.3})
	var sum, n float64
	for _, id := range ids {
		for _, i := range p.Client(id) {
			sum += float64(ds.X[i])
			n++
		}
	}
	if res.NumSamples != int64(n) {
		t.Errorf("NumSamples = %d, want %d", res.NumSamples, int64(n))
	}
	if got, want := float64(all.Tensors[0].Data[0]), sum/n; math.Abs(got-want) > 1e-3 {
		t.Errorf("mean weight = %v, want %v", got, want)
	}
	a, ra, err := trainVirtual(ctx, &meanTrainer{}, global, ds, train.TrainConfig{}, vc(ids[:1]), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, rb, err := trainVirtual(ctx, &meanTrainer{}, global, ds, train.TrainConfig{}, vc(ids[1:]), nil)
	if err != nil {
		t.Fatal(err)
	}
	na, nb := float64(ra.NumSamples), float64(rb.NumSamples)
	joined := (na*float64(a.Tensors[0].Data[1]) + nb*float64(b.Tensors[0].Data[1])) / (na + nb)
	if got := float64(all.Tensors[0].Data[1]); math.Abs(got-joined) > 1e-4 {
		t.Errorf("one worker's mean = %v, two workers' weighted = %v; want equal", got, joined)
	}
}

func TestTrainVirtualFails(t *testing.T) {
	ds := pool(100)
	global := &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{1}, Data: make([]float32, 1)}}}
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		vc   *pb.VirtualClients
		want error
	}{
		{"no clients", context.Background(), &pb.VirtualClients{}, nil},
		{"bad alpha", context.Background(), &pb.VirtualClients{ClientIds: []int64{1}, Alpha: -1}, data.ErrInvalid},
		{"too many samples", context.Background(), &pb.VirtualClients{ClientIds: []int64{1}, SamplesPerClient: 101}, data.ErrInvalid},
		{"canceled", canceled, &pb.VirtualClients{ClientIds: []int64{1}}, context.Canceled},
	}
	for _, tt := range tests {
		_, _, err := trainVirtual(tt.ctx, &meanTrainer{}, global, ds, train.TrainConfig{}, tt.vc, nil)
		if err == nil || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: trainVirtual() error = %v, want %v", tt.name, err, tt.want)
		}
	}
}
