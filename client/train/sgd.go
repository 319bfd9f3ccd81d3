package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/cohortfl/cohort/client/data"
	"github.com/cohortfl/cohort/model"
)

// network is what the SGD and evaluation loops need from a model.
type network interface {
	// scratch returns buffers for batches of up to n samples; one per loop.
	scratch(n int) any
	// batch returns the summed loss and the correct count of the samples
	// idx of ds under w; with grad non-nil it fills grad with the gradient
	// of the mean loss.
	batch(w, grad *model.Weights, ds *data.Dataset, idx []int, scratch any) (loss float64, correct int)
}

// runSGD trains a copy of w on ds: minibatches in a seeded shuffle, the
// last partial batch used with its own size, ctx checked between batches.
func runSGD(ctx context.Context, net network, w *model.Weights, ds *data.Dataset, cfg TrainConfig) (*model.Weights, TrainResult, error) {
	if err := checkTrainConfig(cfg); err != nil {
		return nil, TrainResult{}, err
	}
	start := time.Now()
	cur := w.Clone()
	grad := w.ZerosLike()
	var vel *model.Weights
	if cfg.Momentum > 0 {
		vel = w.ZerosLike()
	}
	bs := min(cfg.BatchSize, ds.N)
	sc := net.scratch(bs)
	r := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x7a1))
	perm := make([]int, ds.N)
	res := TrainResult{NumSamples: int64(ds.N), Epochs: cfg.Epochs}
	batches := (ds.N + bs - 1) / bs
	for e := 0; e < cfg.Epochs; e++ {
		for i := range perm {
			perm[i] = i
		}
		r.Shuffle(len(perm), func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		var epochLoss float64
		for b := 0; b < batches; b++ {
			if err := ctx.Err(); err != nil {
				return nil, res, fmt.Errorf("training stopped at epoch %d batch %d: %w", e+1, b+1, err)
			}
			idx := perm[b*bs : min((b+1)*bs, ds.N)]
			loss, _ := net.batch(cur, grad, ds, idx, sc)
			step(cur, grad, vel, w, cfg)
			epochLoss += loss
			res.Steps++
			if cfg.Progress != nil {
				cfg.Progress(e+1, b+1, batches, loss/float64(len(idx)))
			}
		}
		res.Loss = epochLoss / float64(ds.N)
		if math.IsNaN(res.Loss) || math.IsInf(res.Loss, 0) {
			return nil, res, fmt.Errorf("training diverged in epoch %d (loss %v); lower train.lr", e+1, res.Loss)
		}
	}
	res.Seconds = time.Since(start).Seconds()
	return cur, res, nil
}

// evaluate computes w's mean loss and accuracy on ds in batches of bs.
func evaluate(ctx context.Context, net network, w *model.Weights, ds *data.Dataset, bs int) (EvalResult, error) {
	bs = min(bs, ds.N)
	sc := net.scratch(bs)
	var loss float64
	correct := 0
	idx := make([]int, 0, bs)
	for lo := 0; lo < ds.N; lo += bs {
		if err := ctx.Err(); err != nil {
			return EvalResult{}, fmt.Errorf("evaluation stopped: %w", err)
		}
		idx = idx[:0]
		for j := lo; j < min(lo+bs, ds.N); j++ {
			idx = append(idx, j)
		}
		l, c := net.batch(w, nil, ds, idx, sc)
		loss += l
		correct += c
	}
	return EvalResult{NumSamples: int64(ds.N), Loss: loss / float64(ds.N), Accuracy: float64(correct) / float64(ds.N)}, nil
}
