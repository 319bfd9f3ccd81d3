package train

// Tests that every built-in kind (logreg, mlp, cnn) must pass, written
// against the exported API only: the gradient of one training step
// against finite differences of an independent float64 model, seeds,
// FedProx's pull towards the anchor, cancellation, and the CNN's
// PyTorch layout at its default size.

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

// kindConfigs are one small model of each built-in kind.
var kindConfigs = []struct {
	name string
	cfg  Config
}{
	{"logreg", Config{Kind: "logreg", InputShape: []int{1, 4, 4}, Classes: 3}},
	{"mlp", Config{Kind: "mlp", Hidden: []int{12, 6}, InputShape: []int{1, 4, 4}, Classes: 3}},
	{"cnn", Config{Kind: "cnn", Conv: []int{3, 4}, InputShape: []int{1, 8, 8}, Classes: 3}},
}

// noisy returns n samples of standard normal noise of the given shape,
// labels cycling through the classes, and the class's index added to one
// pixel per class so that there is something to learn.
func noisy(n int, shape []int, classes int, seed uint64) *data.Dataset {
	r := rand.New(rand.NewPCG(seed, 0x6b))
	f := 1
	for _, d := range shape {
		f *= d
	}
	ds := &data.Dataset{N: n, Features: f, Shape: append([]int(nil), shape...), Classes: classes,
		X: make([]float32, n*f), Y: make([]uint8, n)}
	for i := range ds.X {
		ds.X[i] = float32(r.NormFloat64())
	}
	for i := range ds.Y {
		c := i % classes
		ds.Y[i] = uint8(c)
		ds.X[i*f+(c*f)/classes] += 2
	}
	return ds
}

func newKind(t testing.TB, cfg Config) Trainer {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v) = %v", cfg, err)
	}
	return tr
}

// TestGradientsAgainstFloat64 checks each kind's gradient, as one full
// batch SGD step with lr = 1 applies it (g = w − w'), against central
// finite differences of refLoss, a float64 transcription of PyTorch's
// layers. float64 lets the step h be small enough (1e-6) that no ReLU or
// max-pool kink falls inside it, which float32 differences cannot avoid
// on a CNN. The bound is a relative error of 1e-2; gradients smaller
// than 1e-4 are compared absolutely at 1e-6.
func TestGradientsAgainstFloat64(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"logreg", Config{Kind: "logreg", InputShape: []int{6}, Classes: 3}},
		{"mlp", Config{Kind: "mlp", Hidden: []int{7, 5}, InputShape: []int{6}, Classes: 4}},
		{"cnn two channels", Config{Kind: "cnn", Conv: []int{3, 4}, InputShape: []int{2, 8, 8}, Classes: 3}},
		{"cnn odd sizes", Config{Kind: "cnn", Conv: []int{2, 3}, InputShape: []int{1, 9, 7}, Classes: 4}},
		{"cnn one conv", Config{Kind: "cnn", Conv: []int{2}, InputShape: []int{3, 5, 6}, Classes: 2}},
	}
	const (
		h        = 1e-6
		tol      = 1e-2
		floor    = 1e-4
		maxCheck = 32 // values checked in a larger tensor, spread over it
	)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := newKind(t, tt.cfg)
			ds := noisy(5, tt.cfg.InputShape, tt.cfg.Classes, 3)
			w, err := tr.Init(2)
			if err != nil {
				t.Fatal(err)
			}
			next, _, err := tr.Train(context.Background(), w, ds, TrainConfig{Epochs: 1, BatchSize: ds.N, LR: 1})
			if err != nil {
				t.Fatal(err)
			}
			ref := toFloat64(w)
			// The float32 model and the reference agree on the loss.
			ev, err := tr.Evaluate(context.Background(), w, ds)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := ev.Loss, refLoss(tt.cfg, ref, ds); math.Abs(got-want) > 1e-5*math.Max(1, want) {
				t.Fatalf("Evaluate loss = %.7f, want the float64 reference's %.7f", got, want)
			}
			checked, worst := 0, 0.0
			for ti, tn := range w.Tensors {
				stride := max(1, (len(tn.Data)+maxCheck-1)/maxCheck)
				for i := 0; i < len(tn.Data); i += stride {
					analytic := float64(tn.Data[i]) - float64(next.Tensors[ti].Data[i])
					orig := ref[ti][i]
					ref[ti][i] = orig + h
					plus := refLoss(tt.cfg, ref, ds)
					ref[ti][i] = orig - h
					minus := refLoss(tt.cfg, ref, ds)
					ref[ti][i] = orig
					numeric := (plus - minus) / (2 * h)
					scale := math.Max(math.Abs(analytic), math.Abs(numeric))
					rel := math.Abs(analytic-numeric) / math.Max(scale, floor)
					worst = math.Max(worst, rel)
					if rel > tol {
						t.Errorf("d loss/d %s[%d] = %.7f, finite difference %.7f (relative error %.1e, want < %.0e)",
							tn.Name, i, analytic, numeric, rel, tol)
					}
					checked++
				}
			}
			t.Logf("%d values of %d tensors checked, worst relative error %.1e", checked, len(w.Tensors), worst)
		})
	}
}

func toFloat64(w *model.Weights) [][]float64 {
	out := make([][]float64, len(w.Tensors))
	for i, tn := range w.Tensors {
		out[i] = make([]float64, len(tn.Data))
		for j, v := range tn.Data {
			out[i][j] = float64(v)
		}
	}
	return out
}

// refLoss is the mean softmax cross-entropy of ds under w (see refEval).
func refLoss(cfg Config, w [][]float64, ds *data.Dataset) float64 {
	loss, _ := refEval(cfg, w, ds)
	return loss
}

// refEval is the mean softmax cross-entropy and the accuracy of ds under w
// (tensors in the model's order) computed in float64 as PyTorch defines
// the layers: Conv2d(k=5, padding=2) as cross-correlation over
// [out, in, 5, 5], ReLU, MaxPool2d(2) (floor), flatten channel-major,
// Linear as x·Wᵀ + b. Ties in the prediction go to the first class.
func refEval(cfg Config, w [][]float64, ds *data.Dataset) (loss, acc float64) {
	var total float64
	correct := 0
	for s := 0; s < ds.N; s++ {
		x := make([]float64, ds.Features)
		for i := range x {
			x[i] = float64(ds.X[s*ds.Features+i])
		}
		li := 0
		if cfg.Kind == "cnn" {
			c, hh, ww := cfg.InputShape[0], cfg.InputShape[1], cfg.InputShape[2]
			for ; li < 2*len(cfg.Conv); li += 2 {
				x, c, hh, ww = refConvBlock(x, c, hh, ww, w[li], w[li+1])
			}
		}
		for ; li < len(w); li += 2 {
			W, b := w[li], w[li+1]
			out := make([]float64, len(b))
			for o := range out {
				v := b[o]
				for i, xi := range x {
					v += W[o*len(x)+i] * xi
				}
				if li+2 < len(w) {
					v = math.Max(v, 0)
				}
				out[o] = v
			}
			x = out
		}
		best := 0
		for j, v := range x {
			if v > x[best] {
				best = j
			}
		}
		if best == int(ds.Y[s]) {
			correct++
		}
		mx := x[best]
		var sum float64
		for _, v := range x {
			sum += math.Exp(v - mx)
		}
		total += math.Log(sum) + mx - x[ds.Y[s]]
	}
	return total / float64(ds.N), float64(correct) / float64(ds.N)
}

// refConvBlock is conv 5×5 (padding 2) + ReLU + 2×2 max-pool of a
// [c, h, w] image; it returns the pooled maps and their shape.
func refConvBlock(x []float64, c, h, w int, W, b []float64) ([]float64, int, int, int) {
	cout := len(b)
	conv := make([]float64, cout*h*w)
	for o := 0; o < cout; o++ {
		for y := 0; y < h; y++ {
			for xx := 0; xx < w; xx++ {
				v := b[o]
				for ci := 0; ci < c; ci++ {
					for ky := 0; ky < 5; ky++ {
						sy := y + ky - 2
						if sy < 0 || sy >= h {
							continue
						}
						for kx := 0; kx < 5; kx++ {
							if sx := xx + kx - 2; sx >= 0 && sx < w {
								v += W[((o*c+ci)*5+ky)*5+kx] * x[(ci*h+sy)*w+sx]
							}
						}
					}
				}
				conv[(o*h+y)*w+xx] = math.Max(v, 0)
			}
		}
	}
	oh, ow := h/2, w/2
	pooled := make([]float64, cout*oh*ow)
	for o := 0; o < cout; o++ {
		for y := 0; y < oh; y++ {
			for xx := 0; xx < ow; xx++ {
				m := math.Inf(-1)
				for _, d := range [4][2]int{{0, 0}, {0, 1}, {1, 0}, {1, 1}} {
					m = math.Max(m, conv[(o*h+2*y+d[0])*w+2*xx+d[1]])
				}
				pooled[(o*oh+y)*ow+xx] = m
			}
		}
	}
	return pooled, cout, oh, ow
}

// TestSeedsAllKinds: Init and Train are functions of their seeds, and
// Train leaves its input weights alone.
func TestSeedsAllKinds(t *testing.T) {
	for _, k := range kindConfigs {
		t.Run(k.name, func(t *testing.T) {
			tr := newKind(t, k.cfg)
			ds := noisy(48, k.cfg.InputShape, k.cfg.Classes, 1)
			w5, _ := tr.Init(5)
			w5b, _ := tr.Init(5)
			w6, _ := tr.Init(6)
			if diff := cmp.Diff(w5, w5b); diff != "" {
				t.Errorf("Init(5) twice differs (-first +second):\n%s", diff)
			}
			if identical(w5, w6) {
				t.Error("Init(5) = Init(6), want different weights")
			}
			train := func(seed int64) *model.Weights {
				out, _, err := tr.Train(context.Background(), w5, ds, TrainConfig{Epochs: 2, BatchSize: 10, LR: 0.05, Momentum: 0.9, WeightDecay: 1e-4, Seed: seed})
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
			a, b, c := train(7), train(7), train(8)
			if !cmp.Equal(a, b) {
				t.Error("Train with seed 7 twice gave different weights")
			}
			if identical(a, c) {
				t.Error("Train with seeds 7 and 8 gave the same weights")
			}
			if identical(a, w5) {
				t.Error("Train returned its input unchanged")
			}
			if diff := cmp.Diff(w5b, w5); diff != "" {
				t.Errorf("Train modified its input weights (-before +after):\n%s", diff)
			}
		})
	}
}

// identical reports whether a and b hold the same tensors bit for bit; it
// is cmp.Equal without the cost of cmp's diff when they differ.
func identical(a, b *model.Weights) bool {
	if len(a.Tensors) != len(b.Tensors) {
		return false
	}
	for i, ta := range a.Tensors {
		tb := b.Tensors[i]
		if ta.Name != tb.Name || len(ta.Data) != len(tb.Data) || !cmp.Equal(ta.Shape, tb.Shape) {
			return false
		}
		for j, v := range ta.Data {
			if math.Float32bits(v) != math.Float32bits(tb.Data[j]) {
				return false
			}
		}
	}
	return true
}

// TestFedProxAllKinds: with μ = 10 the trained weights stay nearer the
// weights Train starts from (FedProx's anchor) than with μ = 0.
func TestFedProxAllKinds(t *testing.T) {
	for _, k := range kindConfigs {
		t.Run(k.name, func(t *testing.T) {
			tr := newKind(t, k.cfg)
			ds := noisy(60, k.cfg.InputShape, k.cfg.Classes, 2)
			anchor, _ := tr.Init(1)
			dist := func(mu float64) float64 {
				w, _, err := tr.Train(context.Background(), anchor, ds, TrainConfig{Epochs: 3, BatchSize: 10, LR: 0.05, Mu: mu, Seed: 1})
				if err != nil {
					t.Fatal(err)
				}
				d, err := model.Sub(w, anchor)
				if err != nil {
					t.Fatal(err)
				}
				return d.L2Norm()
			}
			free, prox := dist(0), dist(10)
			if !(free > 0) || !(prox < 0.5*free) {
				t.Errorf("‖w − anchor‖ = %.4f with μ=10, %.4f with μ=0; want the proximal term to hold it under half", prox, free)
			}
		})
	}
}

// TestCancelAllKinds: a context cancelled before Train, or during it,
// stops it before the next batch with an error wrapping context.Canceled.
func TestCancelAllKinds(t *testing.T) {
	for _, k := range kindConfigs {
		t.Run(k.name, func(t *testing.T) {
			tr := newKind(t, k.cfg)
			ds := noisy(64, k.cfg.InputShape, k.cfg.Classes, 3)
			w, _ := tr.Init(1)

			done, cancel := context.WithCancel(context.Background())
			cancel()
			if _, res, err := tr.Train(done, w, ds, TrainConfig{Epochs: 1, BatchSize: 8, LR: 0.1}); !errors.Is(err, context.Canceled) || res.Steps != 0 {
				t.Errorf("Train(cancelled context) = %d steps, %v; want 0 steps and context.Canceled", res.Steps, err)
			}
			if _, err := tr.Evaluate(done, w, ds); !errors.Is(err, context.Canceled) {
				t.Errorf("Evaluate(cancelled context) = %v, want context.Canceled", err)
			}

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cfg := TrainConfig{Epochs: 1000, BatchSize: 8, LR: 0.01, Progress: func(epoch, batch, batches int, loss float64) {
				if epoch == 2 && batch == 3 {
					cancel()
				}
			}}
			out, res, err := tr.Train(ctx, w, ds, cfg)
			if !errors.Is(err, context.Canceled) || out != nil || res.Steps != 8+3 {
				t.Errorf("Train(cancelled at epoch 2 batch 3) = weights %t, %d steps, %v; want no weights, 11 steps, context.Canceled", out != nil, res.Steps, err)
			}
		})
	}
}

// TestCNNDefaultLayout: Config.Conv defaults to [32 64], and the tensors
// carry PyTorch's names and shapes for McMahan et al.'s FedAvg CNN on
// 28×28 images.
func TestCNNDefaultLayout(t *testing.T) {
	w, err := newKind(t, Config{Kind: "cnn", InputShape: []int{1, 28, 28}, Classes: 10}).Init(1)
	if err != nil {
		t.Fatal(err)
	}
	type tensor struct {
		Name  string
		Shape []int
	}
	var got []tensor
	for _, tn := range w.Tensors {
		got = append(got, tensor{tn.Name, tn.Shape})
		if n, _ := model.NumElements(tn.Shape); uint64(len(tn.Data)) != n {
			t.Errorf("%s holds %d values, want %d for shape %v", tn.Name, len(tn.Data), n, tn.Shape)
		}
	}
	want := []tensor{
		{"conv1.weight", []int{32, 1, 5, 5}}, {"conv1.bias", []int{32}},
		{"conv2.weight", []int{64, 32, 5, 5}}, {"conv2.bias", []int{64}},
		{"fc1.weight", []int{512, 64 * 7 * 7}}, {"fc1.bias", []int{512}},
		{"fc2.weight", []int{10, 512}}, {"fc2.bias", []int{10}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("default CNN tensors (-want +got):\n%s", diff)
	}
	if err := w.CheckFinite(); err != nil {
		t.Errorf("Init: %v", err)
	}
}
