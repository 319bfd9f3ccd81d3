package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

// network is what the SGD and evaluation loops need from a model.
type network interface {
	// scratch returns buffers for batches of up to n samples; one per loop.
	scratch(n int) any
	// batch returns the summed loss and the correct count of the samples
	// idx of ds under w; with grad non-nil it fills grad with the gradient
	// of the mean loss. w (and grad) are in the working layout, ds has been
	// checked against the model.
	batch(w, grad *model.Weights, ds *data.Dataset, idx []int, scratch any) (loss float64, correct int)
	// work returns weights in PyTorch's layout in the layout batch takes;
	// it may share tensors with its argument, which it does not modify.
	work(w *model.Weights) *model.Weights
	// exchange is the inverse of work.
	exchange(w *model.Weights) *model.Weights
}

// runSGD trains a copy of w on ds: minibatches in a seeded shuffle (one
// shuffle per epoch from one generator, so two epochs in one call differ
// from two calls of one epoch with the same seed), the last partial batch
// used with its own size, ctx checked between batches.
func runSGD(ctx context.Context, net network, w *model.Weights, ds *data.Dataset, cfg TrainConfig) (*model.Weights, TrainResult, error) {
	start := time.Now()
	anchor := net.work(w)
	cur := anchor.Clone()
	grad := cur.ZerosLike()
	var vel *model.Weights
	if cfg.Momentum > 0 {
		vel = cur.ZerosLike()
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
				res.Seconds = time.Since(start).Seconds()
				return nil, res, fmt.Errorf("training stopped at epoch %d batch %d: %w", e+1, b+1, err)
			}
			idx := perm[b*bs : min((b+1)*bs, ds.N)]
			loss, _ := net.batch(cur, grad, ds, idx, sc)
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				res.Seconds = time.Since(start).Seconds()
				return nil, res, fmt.Errorf("training diverged at epoch %d batch %d (loss %v); lower the learning rate (train.lr)", e+1, b+1, loss)
			}
			step(cur, grad, vel, anchor, cfg)
			epochLoss += loss
			res.Steps++
			if cfg.Progress != nil {
				cfg.Progress(e+1, b+1, batches, loss/float64(len(idx)))
			}
		}
		res.Loss = epochLoss / float64(ds.N)
	}
	out := net.exchange(cur)
	res.Seconds = time.Since(start).Seconds()
	if err := out.CheckFinite(); err != nil {
		return nil, res, fmt.Errorf("training diverged (lower the learning rate, train.lr): %w", err)
	}
	return out, res, nil
}

// evaluate computes w's mean loss and accuracy on ds in batches of bs.
func evaluate(ctx context.Context, net network, w *model.Weights, ds *data.Dataset, bs int) (EvalResult, error) {
	bs = min(bs, ds.N)
	sc := net.scratch(bs)
	w = net.work(w)
	var loss float64
	correct := 0
	idx := make([]int, 0, bs)
	for lo := 0; lo < ds.N; lo += bs {
		if err := ctx.Err(); err != nil {
			return EvalResult{}, fmt.Errorf("evaluation stopped at sample %d of %d: %w", lo, ds.N, err)
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

// checkTrainConfig returns every problem with cfg, joined.
func checkTrainConfig(cfg TrainConfig) error {
	var errs []error
	if cfg.Epochs < 1 {
		errs = append(errs, fmt.Errorf("epochs %d: need at least 1", cfg.Epochs))
	}
	if cfg.BatchSize < 1 {
		errs = append(errs, fmt.Errorf("batch size %d: need at least 1", cfg.BatchSize))
	}
	if !(cfg.LR > 0) || math.IsInf(cfg.LR, 0) {
		errs = append(errs, fmt.Errorf("learning rate %v: must be a finite number > 0", cfg.LR))
	}
	if !(cfg.Momentum >= 0 && cfg.Momentum < 1) {
		errs = append(errs, fmt.Errorf("momentum %v: must be in [0, 1)", cfg.Momentum))
	}
	if !(cfg.WeightDecay >= 0) || math.IsInf(cfg.WeightDecay, 0) {
		errs = append(errs, fmt.Errorf("weight decay %v: must be a finite number ≥ 0", cfg.WeightDecay))
	}
	if !(cfg.Mu >= 0) || math.IsInf(cfg.Mu, 0) {
		errs = append(errs, fmt.Errorf("mu %v: the FedProx coefficient must be a finite number ≥ 0", cfg.Mu))
	}
	return errors.Join(errs...)
}

// checkInputs returns an error naming what in w or ds does not fit a model
// with the given tensor layout (names and shapes, no data), input features
// and classes. Nothing that passes it can make the networks index out of
// range.
func checkInputs(layout []model.Tensor, features, classes int, w *model.Weights, ds *data.Dataset) error {
	if err := checkWeights(layout, w); err != nil {
		return fmt.Errorf("weights do not fit this model: %w", err)
	}
	if err := w.CheckFinite(); err != nil {
		return fmt.Errorf("checking weights: %w", err)
	}
	if err := checkData(ds, features, classes); err != nil {
		return fmt.Errorf("checking data: %w", err)
	}
	return nil
}

// checkWeights compares w's names, order, shapes and sizes with layout.
func checkWeights(layout []model.Tensor, w *model.Weights) error {
	if w == nil {
		return fmt.Errorf("%w: no weights", model.ErrIncompatible)
	}
	if len(w.Tensors) != len(layout) {
		return fmt.Errorf("%w: %d tensors, the model has %d (%s …)", model.ErrIncompatible, len(w.Tensors), len(layout), layout[0].Name)
	}
	for i, want := range layout {
		got := w.Tensors[i]
		if got.Name != want.Name {
			return fmt.Errorf("%w: tensor %d is %q, want %q", model.ErrIncompatible, i, got.Name, want.Name)
		}
		if !slices.Equal(got.Shape, want.Shape) {
			return fmt.Errorf("%w: tensor %q has shape %v, the model's is %v", model.ErrIncompatible, got.Name, got.Shape, want.Shape)
		}
		if n := numel(want.Shape); len(got.Data) != n {
			return fmt.Errorf("%w: tensor %q holds %d values, its shape %v needs %d", model.ErrIncompatible, got.Name, len(got.Data), want.Shape, n)
		}
	}
	return nil
}

// checkData checks that ds has samples of the given size, consistent
// lengths and labels below classes.
func checkData(ds *data.Dataset, features, classes int) error {
	switch {
	case ds == nil || ds.N == 0:
		return errors.New("no data: the dataset has no samples")
	case ds.N < 0:
		return fmt.Errorf("the dataset claims %d samples", ds.N)
	case ds.Features != features:
		return fmt.Errorf("data has %d features per sample, the model takes %d", ds.Features, features)
	case ds.N > len(ds.X)/features || len(ds.X) != ds.N*features:
		return fmt.Errorf("the dataset holds %d values, %d samples × %d features need %d", len(ds.X), ds.N, features, ds.N*features)
	case len(ds.Y) != ds.N:
		return fmt.Errorf("the dataset holds %d labels for %d samples", len(ds.Y), ds.N)
	}
	for i, y := range ds.Y {
		if int(y) >= classes {
			return fmt.Errorf("sample %d has label %d, the model has %d classes (labels 0 to %d)", i, y, classes, classes-1)
		}
	}
	return nil
}

func numel(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// maxParams bounds a built-in model's size: beyond it (4 GiB of float32
// weights) an external trainer on a GPU is the tool.
const maxParams = 1 << 30

// paramCounter adds up layer sizes, reporting overflow and models over
// maxParams instead of wrapping around.
type paramCounter struct {
	n   int
	bad bool
}

// add counts a rows×cols tensor.
func (p *paramCounter) add(rows, cols int) {
	if rows <= 0 || cols <= 0 || rows > maxParams/cols || p.n+rows*cols > maxParams {
		p.bad = true
		return
	}
	p.n += rows * cols
}

// step applies one SGD update to cur from grad: weight decay and FedProx's
// proximal gradient μ(w − anchor) are added to the gradient, then momentum
// (PyTorch's form: v ← m·v + g, w ← w − lr·v).
func step(cur, grad, vel, anchor *model.Weights, cfg TrainConfig) {
	lr, m := float32(cfg.LR), float32(cfg.Momentum)
	wd, mu := float32(cfg.WeightDecay), float32(cfg.Mu)
	for t := range cur.Tensors {
		w, g, a := cur.Tensors[t].Data, grad.Tensors[t].Data, anchor.Tensors[t].Data
		g = g[:len(w)]
		a = a[:len(w)]
		var v []float32
		if vel != nil {
			v = vel.Tensors[t].Data[:len(w)]
		}
		switch {
		case v == nil && wd == 0 && mu == 0:
			for i := range w {
				w[i] -= lr * g[i]
			}
		case v == nil:
			for i := range w {
				w[i] -= lr * (g[i] + wd*w[i] + mu*(w[i]-a[i]))
			}
		default:
			for i := range w {
				gi := g[i] + wd*w[i] + mu*(w[i]-a[i])
				v[i] = m*v[i] + gi
				w[i] -= lr * v[i]
			}
		}
	}
}

// parallel runs fn(0), …, fn(n−1) on up to GOMAXPROCS goroutines and
// returns when all are done. Callers make the result independent of the
// order the calls run in.
func parallel(n int, fn func(i int)) {
	workers := min(n, runtime.GOMAXPROCS(0))
	if workers <= 1 {
		for i := range n {
			fn(i)
		}
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				fn(i)
			}
		})
	}
	wg.Wait()
}
