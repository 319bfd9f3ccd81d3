package train

import (
	"context"
	"errors"
	"math"
	"runtime"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

// TestStep checks the update rule against values worked by hand: PyTorch's
// SGD (v ← m·v + g + wd·w, w ← w − lr·v) plus FedProx's μ(w − anchor).
func TestStep(t *testing.T) {
	one := func(v float32) *model.Weights {
		return &model.Weights{Tensors: []model.Tensor{{Name: "w", Shape: []int{1}, Data: []float32{v}}}}
	}
	tests := []struct {
		name  string
		cfg   TrainConfig
		steps int
		want  float32
	}{
		{"plain", TrainConfig{LR: 0.1}, 1, 1 - 0.1*0.5},
		{"weight decay", TrainConfig{LR: 0.1, WeightDecay: 0.1}, 1, 1 - 0.1*(0.5+0.1)},
		{"proximal", TrainConfig{LR: 0.1, Mu: 1}, 1, 1 - 0.1*(0.5+1*(1-0.25))},
		{"momentum", TrainConfig{LR: 0.1, Momentum: 0.9}, 2, 1 - 0.1*0.5 - 0.1*(0.9*0.5+0.5)},
		{"plain twice", TrainConfig{LR: 0.1}, 2, 1 - 2*0.1*0.5},
	}
	for _, tt := range tests {
		cur, grad, anchor := one(1), one(0.5), one(0.25)
		var vel *model.Weights
		if tt.cfg.Momentum > 0 {
			vel = one(0)
		}
		for range tt.steps {
			step(cur, grad, vel, anchor, tt.cfg)
		}
		if got := cur.Tensors[0].Data[0]; math.Abs(float64(got-tt.want)) > 1e-6 {
			t.Errorf("%s: step(1, grad 0.5, anchor 0.25) ×%d = %v, want %v", tt.name, tt.steps, got, tt.want)
		}
	}
}

func TestProgressAndPartialBatch(t *testing.T) {
	ds := blobs(10, 4, 2, 1)
	tr := mustNew(t, Config{Kind: "logreg", InputShape: []int{4}, Classes: 2})
	w, _ := tr.Init(1)
	type call struct{ Epoch, Batch, Batches int }
	var calls []call
	cfg := TrainConfig{Epochs: 2, BatchSize: 4, LR: 0.1, Progress: func(e, b, n int, loss float64) {
		if !(loss > 0) {
			t.Errorf("progress loss = %v, want > 0", loss)
		}
		calls = append(calls, call{e, b, n})
	}}
	_, res, err := tr.Train(context.Background(), w, ds, cfg)
	if err != nil {
		t.Fatal(err)
	}
	want := []call{{1, 1, 3}, {1, 2, 3}, {1, 3, 3}, {2, 1, 3}, {2, 2, 3}, {2, 3, 3}}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("progress calls (-want +got):\n%s", diff)
	}
	if res.Steps != 6 || res.Epochs != 2 || res.NumSamples != 10 || !(res.Loss > 0) || !(res.Seconds > 0) {
		t.Errorf("result = %+v, want 6 steps over 2 epochs of 10 samples", res)
	}
	// A batch larger than the data is one full batch.
	_, res, err = tr.Train(context.Background(), w, ds, TrainConfig{Epochs: 1, BatchSize: 1000, LR: 0.1})
	if err != nil || res.Steps != 1 {
		t.Errorf("Train(batch 1000 on 10 samples) = %d steps, %v; want 1 step", res.Steps, err)
	}
}

// TestDeterministicAcrossCores trains with one core and with four: the
// CNN's parallel slices and gonum's parallel GEMM must not change a bit.
func TestDeterministicAcrossCores(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: "cnn", Conv: []int{2, 3}, InputShape: []int{1, 8, 8}, Classes: 3},
		{Kind: "mlp", Hidden: []int{300}, InputShape: []int{300}, Classes: 3},
	} {
		t.Run(cfg.Kind, func(t *testing.T) {
			tr := mustNew(t, cfg)
			ds := images(40, cfg.InputShape, cfg.Classes, 5)
			w, _ := tr.Init(1)
			train := func(procs int) *model.Weights {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				out, _, err := tr.Train(context.Background(), w, ds, TrainConfig{Epochs: 2, BatchSize: 20, LR: 0.01, Momentum: 0.5, Seed: 3})
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			if one, four := train(1), train(4); !cmp.Equal(one, four) {
				t.Error("training on 1 and on 4 cores gave different weights")
			}
		})
	}
}

// TestConcurrentUse trains one trainer from several goroutines at once, as
// simulated sites do; each must get what it gets alone.
func TestConcurrentUse(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: "cnn", Conv: []int{2, 3}, InputShape: []int{1, 8, 8}, Classes: 3},
		{Kind: "mlp", Hidden: []int{8}, InputShape: []int{1, 8, 8}, Classes: 3},
	} {
		t.Run(cfg.Kind, func(t *testing.T) {
			tr := mustNew(t, cfg)
			w, _ := tr.Init(1)
			tcfg := TrainConfig{Epochs: 1, BatchSize: 8, LR: 0.01, Seed: 1}
			dss := []*data.Dataset{images(24, cfg.InputShape, 3, 1), images(24, cfg.InputShape, 3, 2), images(24, cfg.InputShape, 3, 3)}
			want := make([]*model.Weights, len(dss))
			for i, ds := range dss {
				want[i], _, _ = tr.Train(context.Background(), w, ds, tcfg)
			}
			got := make([]*model.Weights, len(dss))
			var wg sync.WaitGroup
			for i, ds := range dss {
				wg.Go(func() {
					got[i], _, _ = tr.Train(context.Background(), w, ds, tcfg)
					if _, err := tr.Evaluate(context.Background(), w, ds); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			for i := range dss {
				if !cmp.Equal(got[i], want[i]) {
					t.Errorf("site %d: concurrent training differs from training alone", i)
				}
			}
		})
	}
}

func TestEvaluateCancelled(t *testing.T) {
	ds := blobs(10, 4, 2, 1)
	tr := mustNew(t, Config{Kind: "logreg", InputShape: []int{4}, Classes: 2})
	w, _ := tr.Init(1)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := tr.Evaluate(ctx, w, ds); !errors.Is(err, context.Canceled) {
		t.Errorf("Evaluate(cancelled) = %v, want context.Canceled", err)
	}
	if _, _, err := tr.Train(ctx, w, ds, TrainConfig{Epochs: 1, BatchSize: 2, LR: 0.1}); !errors.Is(err, context.Canceled) {
		t.Errorf("Train(cancelled) = %v, want context.Canceled", err)
	}
}

// TestMatchesReference compares Evaluate with a direct transcription of
// PyTorch's definitions (Linear: x·Wᵀ + b; Conv2d: cross-correlation over
// weight [out, in, kh, kw] with padding 2; MaxPool2d(2); flatten
// channel-major): the weights mean the same thing to a PyTorch trainer.
func TestMatchesReference(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: "logreg", InputShape: []int{6}, Classes: 3},
		{Kind: "mlp", Hidden: []int{5, 4}, InputShape: []int{2, 3}, Classes: 3},
		{Kind: "mlp", Hidden: []int{33}, InputShape: []int{2, 3}, Classes: 3},
		{Kind: "cnn", Conv: []int{3, 2}, InputShape: []int{2, 7, 6}, Classes: 4},
	} {
		t.Run(cfg.Kind+fmtShape(cfg.Hidden), func(t *testing.T) {
			tr := mustNew(t, cfg)
			ds := images(9, cfg.InputShape, cfg.Classes, 8)
			w, _ := tr.Init(4)
			got, err := tr.Evaluate(context.Background(), w, ds)
			if err != nil {
				t.Fatal(err)
			}
			loss, acc := referenceEval(cfg, w, ds)
			if math.Abs(got.Loss-loss) > 1e-4*math.Max(1, loss) || got.Accuracy != acc {
				t.Errorf("Evaluate = loss %.6f accuracy %.3f, want %.6f %.3f", got.Loss, got.Accuracy, loss, acc)
			}
		})
	}
}

// referenceEval computes the mean cross-entropy and accuracy in float64
// with plain loops (refEval in kinds_test.go).
func referenceEval(cfg Config, w *model.Weights, ds *data.Dataset) (loss, acc float64) {
	return refEval(cfg, toFloat64(w), ds)
}

// FuzzTrainInput feeds Train and Evaluate datasets built from arbitrary
// bytes, lengths and labels included: they return an error or a result,
// never panic.
func FuzzTrainInput(f *testing.F) {
	f.Add(uint8(4), uint8(16), uint8(2), []byte{0, 1, 2, 3, 200, 100, 0, 0})
	f.Add(uint8(3), uint8(15), uint8(1), []byte{9, 9, 9})
	f.Add(uint8(0), uint8(16), uint8(0), []byte{})
	f.Add(uint8(2), uint8(16), uint8(5), make([]byte, 64))
	trainers := []Trainer{
		mustNew(f, Config{Kind: "mlp", Hidden: []int{3}, InputShape: []int{16}, Classes: 3}),
		mustNew(f, Config{Kind: "cnn", Conv: []int{2}, InputShape: []int{1, 4, 4}, Classes: 3}),
	}
	f.Fuzz(func(t *testing.T, n, features, batch uint8, raw []byte) {
		ds := &data.Dataset{N: int(n), Features: int(features), Classes: 3}
		for i, b := range raw {
			if i%5 == 0 {
				ds.Y = append(ds.Y, b%4) // label 3 is out of range
			} else {
				ds.X = append(ds.X, float32(b)/255)
			}
		}
		for _, tr := range trainers {
			w, _ := tr.Init(1)
			_, _, _ = tr.Train(context.Background(), w, ds, TrainConfig{Epochs: 1, BatchSize: int(batch), LR: 0.1})
			_, _ = tr.Evaluate(context.Background(), w, ds)
		}
	})
}
