package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

var subset = sync.OnceValues(func() ([2]*data.Dataset, error) {
	tr, te, err := data.LoadFashionMNIST(context.Background(), data.LoadOptions{Path: "../data/testdata/fmnist-subset"})
	return [2]*data.Dataset{tr, te}, err
})

func fmnist(t testing.TB) (*data.Dataset, *data.Dataset) {
	t.Helper()
	ds, err := subset()
	if err != nil {
		t.Fatal(err)
	}
	return ds[0], ds[1]
}

// blobs is a small separable problem: class c is centred at e_c·3.
func blobs(n, features, classes int, seed uint64) *data.Dataset {
	r := rand.New(rand.NewPCG(seed, 1))
	ds := &data.Dataset{N: n, Features: features, Shape: []int{features}, Classes: classes,
		X: make([]float32, n*features), Y: make([]uint8, n)}
	for i := 0; i < n; i++ {
		c := r.IntN(classes)
		ds.Y[i] = uint8(c)
		for j := 0; j < features; j++ {
			v := r.NormFloat64() * 0.5
			if j == c {
				v += 3
			}
			ds.X[i*features+j] = float32(v)
		}
	}
	return ds
}

func mustNew(t testing.TB, cfg Config) Trainer {
	t.Helper()
	tr, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tr
}

// lossOf is the mean cross-entropy of w on ds.
func lossOf(t *testing.T, tr Trainer, w *model.Weights, ds *data.Dataset) float64 {
	t.Helper()
	r, err := tr.Evaluate(context.Background(), w, ds)
	if err != nil {
		t.Fatal(err)
	}
	return r.Loss
}

// checkGradients compares one SGD step's change with central finite
// differences of Evaluate's loss: with lr = η the step moves each weight
// by −η·∂L/∂w. It checks every value of tensors of up to 64 values and 16
// spread over larger ones.
func checkGradients(t *testing.T, tr Trainer, w *model.Weights, ds *data.Dataset, tol float64) {
	t.Helper()
	const lr = 1e-3
	next, _, err := tr.Train(context.Background(), w, ds, TrainConfig{Epochs: 1, BatchSize: ds.N, LR: lr, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	for ti, tn := range w.Tensors {
		stride := max(1, len(tn.Data)/16)
		if len(tn.Data) <= 64 {
			stride = 1
		}
		for i := 0; i < len(tn.Data); i += stride {
			analytic := float64(w.Tensors[ti].Data[i]-next.Tensors[ti].Data[i]) / lr
			plus, minus := w.Clone(), w.Clone()
			const h = 2e-3 // small enough not to cross ReLU kinks and pooling switches, large for float32
			plus.Tensors[ti].Data[i] += h
			minus.Tensors[ti].Data[i] -= h
			numeric := (lossOf(t, tr, plus, ds) - lossOf(t, tr, minus, ds)) / (2 * h)
			if d := math.Abs(analytic - numeric); d > tol*math.Max(1, math.Abs(numeric)) {
				t.Errorf("%s[%d]: gradient %.5f, finite difference %.5f", tn.Name, i, analytic, numeric)
			}
			checked++
		}
	}
	if checked < len(w.Tensors) {
		t.Fatalf("checked %d values of %d tensors", checked, len(w.Tensors))
	}
}

func TestGradients(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: "logreg", InputShape: []int{5}, Classes: 3},
		{Kind: "mlp", Hidden: []int{7, 4}, InputShape: []int{5}, Classes: 3},
		{Kind: "mlp", Hidden: []int{40, 6}, InputShape: []int{5}, Classes: 3}, // first layer transposed
		{Kind: "mlp", Hidden: []int{32}, InputShape: []int{5}, Classes: 3},
		{Kind: "logreg", InputShape: []int{5}, Classes: 33}, // the output layer transposed
	} {
		t.Run(cfg.Kind+fmtShape(cfg.Hidden)+strconv.Itoa(cfg.Classes), func(t *testing.T) {
			tr := mustNew(t, cfg)
			w, _ := tr.Init(3)
			checkGradients(t, tr, w, blobs(6, 5, 3, 9), 2e-2)
			checkGradients(t, tr, w, images(6, []int{5}, 3, 9), 2e-2) // with zero inputs
		})
	}
}

func TestMLPLearnsFashionMNIST(t *testing.T) {
	train, test := fmnist(t)
	tr := mustNew(t, Config{Kind: "mlp", Hidden: []int{64}, InputShape: train.Shape, Classes: 10})
	w, _ := tr.Init(1)
	before, _ := tr.Evaluate(context.Background(), w, test)
	w, res, err := tr.Train(context.Background(), w, train, TrainConfig{Epochs: 2, BatchSize: 32, LR: 0.05, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	after, _ := tr.Evaluate(context.Background(), w, test)
	if after.Accuracy < 0.75 || before.Accuracy > 0.25 {
		t.Errorf("test accuracy %.3f → %.3f after 2 epochs, want from chance to ≥ 0.75", before.Accuracy, after.Accuracy)
	}
	if res.NumSamples != 6000 || res.Steps != 2*188 || res.Epochs != 2 {
		t.Errorf("result = %+v, want 6000 samples, 376 steps", res)
	}
}

func TestDeterminism(t *testing.T) {
	ds := blobs(200, 8, 4, 1)
	tr := mustNew(t, Config{Kind: "mlp", Hidden: []int{16}, InputShape: []int{8}, Classes: 4})
	w0, _ := tr.Init(5)
	w0b, _ := tr.Init(5)
	w0c, _ := tr.Init(6)
	if !cmp.Equal(w0, w0b) || cmp.Equal(w0, w0c) {
		t.Error("Init is not a function of the seed")
	}
	cfg := TrainConfig{Epochs: 2, BatchSize: 16, LR: 0.1, Momentum: 0.9, Seed: 7}
	a, _, _ := tr.Train(context.Background(), w0, ds, cfg)
	b, _, _ := tr.Train(context.Background(), w0, ds, cfg)
	cfg.Seed = 8
	c, _, _ := tr.Train(context.Background(), w0, ds, cfg)
	if !cmp.Equal(a, b) {
		t.Error("the same seed gave different weights")
	}
	if cmp.Equal(a, c) {
		t.Error("a different seed gave the same weights")
	}
	if !cmp.Equal(w0, w0b) {
		t.Error("Train modified its input weights")
	}
}

func TestFedProxStaysNearAnchor(t *testing.T) {
	ds := blobs(300, 8, 4, 2)
	tr := mustNew(t, Config{Kind: "mlp", Hidden: []int{16}, InputShape: []int{8}, Classes: 4})
	anchor, _ := tr.Init(1)
	dist := func(mu float64) float64 {
		w, _, err := tr.Train(context.Background(), anchor, ds, TrainConfig{Epochs: 3, BatchSize: 10, LR: 0.05, Mu: mu, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		d, _ := model.Sub(w, anchor)
		return d.L2Norm()
	}
	free, prox := dist(0), dist(10)
	if !(prox < 0.5*free) {
		t.Errorf("‖w − anchor‖ = %.3f with μ=10, %.3f with μ=0; want the proximal term to hold it at less than half", prox, free)
	}
}

func TestCancellation(t *testing.T) {
	train, _ := fmnist(t)
	tr := mustNew(t, Config{Kind: "mlp", Hidden: []int{32}, InputShape: train.Shape, Classes: 10})
	w, _ := tr.Init(1)
	ctx, cancel := context.WithCancel(context.Background())
	cfg := TrainConfig{Epochs: 100, BatchSize: 32, LR: 0.05, Progress: func(e, b, n int, l float64) {
		if b == 10 {
			cancel()
		}
	}}
	_, res, err := tr.Train(ctx, w, train, cfg)
	if !errors.Is(err, context.Canceled) || res.Steps > 11 {
		t.Errorf("Train after cancel = %v after %d steps, want context.Canceled right away", err, res.Steps)
	}
}

func TestBadInput(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: "mlp", Hidden: []int{5}, InputShape: []int{1, 4, 4}, Classes: 4},
		{Kind: "cnn", Conv: []int{2}, InputShape: []int{1, 4, 4}, Classes: 4},
	} {
		t.Run(cfg.Kind, func(t *testing.T) { testBadInput(t, cfg) })
	}
}

func testBadInput(t *testing.T, cfg Config) {
	ds := images(20, cfg.InputShape, cfg.Classes, 3)
	tr := mustNew(t, cfg)
	w, _ := tr.Init(1)
	other := cfg
	other.Hidden, other.Conv = []int{6}, []int{3}
	wrong, _ := mustNew(t, other).Init(1)
	renamed := w.Clone()
	renamed.Tensors[0].Name = "layer1.weight"
	short := w.Clone()
	short.Tensors[1].Data = short.Tensors[1].Data[:1]
	nan := w.Clone()
	nan.Tensors[2].Data[0] = float32(math.NaN())
	shortX, shortY, badLabel := ds.Subset(seq(20)), ds.Subset(seq(20)), ds.Subset(seq(20))
	shortX.X = shortX.X[:len(shortX.X)-1]
	shortY.Y = shortY.Y[:19]
	badLabel.Y[7] = 4
	tests := []struct {
		name   string
		w      *model.Weights
		ds     *data.Dataset
		target error  // errors.Is target, or nil
		want   string // in the message
	}{
		{"wrong shapes", wrong, ds, model.ErrIncompatible, "shape"},
		{"renamed", renamed, ds, model.ErrIncompatible, `"layer1.weight"`},
		{"too few values", short, ds, model.ErrIncompatible, "holds 1 values"},
		{"no weights", nil, ds, model.ErrIncompatible, "no weights"},
		{"non-finite weights", nan, ds, model.ErrNotFinite, "NaN"},
		{"wrong features", w, images(5, []int{17}, 4, 1), nil, "17 features"},
		{"nil data", w, nil, nil, "no data"},
		{"empty data", w, &data.Dataset{Features: 16}, nil, "no data"},
		{"short X", w, shortX, nil, "holds 319 values"},
		{"short Y", w, shortY, nil, "19 labels for 20 samples"},
		{"label out of range", w, badLabel, nil, "sample 7 has label 4"},
	}
	good := TrainConfig{Epochs: 1, BatchSize: 4, LR: 0.1}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := tr.Train(context.Background(), tt.w, tt.ds, good)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.target != nil && !errors.Is(err, tt.target)) {
				t.Errorf("Train = %v, want an error mentioning %q (errors.Is %v)", err, tt.want, tt.target)
			}
			_, err = tr.Evaluate(context.Background(), tt.w, tt.ds)
			if err == nil || !strings.Contains(err.Error(), tt.want) || (tt.target != nil && !errors.Is(err, tt.target)) {
				t.Errorf("Evaluate = %v, want an error mentioning %q (errors.Is %v)", err, tt.want, tt.target)
			}
		})
	}

	configs := []struct {
		name string
		cfg  TrainConfig
		want []string
	}{
		{"zero", TrainConfig{}, []string{"epochs 0", "batch size 0", "learning rate 0"}},
		{"lr NaN", TrainConfig{Epochs: 1, BatchSize: 4, LR: math.NaN()}, []string{"learning rate NaN"}},
		{"lr Inf", TrainConfig{Epochs: 1, BatchSize: 4, LR: math.Inf(1)}, []string{"learning rate +Inf"}},
		{"momentum 1", TrainConfig{Epochs: 1, BatchSize: 4, LR: 0.1, Momentum: 1}, []string{"momentum 1"}},
		{"momentum NaN", TrainConfig{Epochs: 1, BatchSize: 4, LR: 0.1, Momentum: math.NaN()}, []string{"momentum NaN"}},
		{"negative", TrainConfig{Epochs: 1, BatchSize: 4, LR: 0.1, Mu: -1, WeightDecay: -1}, []string{"mu -1", "weight decay -1"}},
		{"mu NaN", TrainConfig{Epochs: 1, BatchSize: 4, LR: 0.1, Mu: math.NaN()}, []string{"mu NaN"}},
		{"diverges", TrainConfig{Epochs: 3, BatchSize: 4, LR: 1e30}, []string{"diverged"}},
	}
	for _, tt := range configs {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := tr.Train(context.Background(), w, ds, tt.cfg)
			for _, want := range tt.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Train(%s) = %v, want an error mentioning %q", tt.name, err, want)
				}
			}
		})
	}
}

func TestNewRejectsBadConfigs(t *testing.T) {
	for _, cfg := range []Config{
		{Kind: "svm", InputShape: []int{8}, Classes: 4},
		{Kind: "", InputShape: []int{8}, Classes: 4},
		{Kind: "mlp", InputShape: []int{8}, Classes: 4},
		{Kind: "mlp", Hidden: []int{-1}, InputShape: []int{8}, Classes: 4},
		{Kind: "mlp", Hidden: []int{10, 0}, InputShape: []int{8}, Classes: 4},
		{Kind: "mlp", Hidden: []int{1 << 40}, InputShape: []int{8}, Classes: 4},
		{Kind: "mlp", Hidden: []int{1 << 20, 1 << 20}, InputShape: []int{8}, Classes: 4},
		{Kind: "mlp", Hidden: []int{10}, InputShape: []int{1 << 31, 1 << 31}, Classes: 4},
		{Kind: "mlp", Hidden: []int{10}, InputShape: []int{1 << 32, 1 << 32}, Classes: 4},
		{Kind: "logreg", InputShape: []int{8}, Classes: 1},
		{Kind: "logreg", InputShape: []int{8}, Classes: 1 << 40},
		{Kind: "logreg", Classes: 3},
		{Kind: "logreg", InputShape: []int{0, 3}, Classes: 3},
		{Kind: "cnn", InputShape: []int{784}, Classes: 10},
		{Kind: "cnn", InputShape: []int{1, 28, 28}, Conv: []int{0}, Classes: 10},
		{Kind: "cnn", InputShape: []int{1, 28, 28}, Conv: []int{8, 8, 8, 8, 8}, Classes: 10},
		{Kind: "cnn", InputShape: []int{1, 1 << 20, 1 << 20}, Classes: 10},
		{Kind: "cnn", InputShape: []int{1 << 40, 4, 4}, Classes: 10},
		{Kind: "cnn", InputShape: []int{3, 512, 512}, Conv: []int{4096}, Classes: 10},
	} {
		if tr, err := New(cfg); !errors.Is(err, ErrConfig) {
			t.Errorf("New(%+v) = %v, %v; want ErrConfig", cfg, tr, err)
		}
	}
}

func TestInitNamesAndShapes(t *testing.T) {
	w, _ := mustNew(t, Config{Kind: "mlp", Hidden: []int{200}, InputShape: []int{1, 28, 28}, Classes: 10}).Init(1)
	var got []string
	for _, tn := range w.Tensors {
		got = append(got, tn.Name+fmtShape(tn.Shape))
	}
	want := []string{"fc1.weight[200 784]", "fc1.bias[200]", "fc2.weight[10 200]", "fc2.bias[10]"}
	if !cmp.Equal(got, want) {
		t.Errorf("tensors = %v, want PyTorch's nn.Linear names and layout %v", got, want)
	}
}

func fmtShape(s []int) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, d := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.Itoa(d))
	}
	b.WriteByte(']')
	return b.String()
}

func benchTrain(b *testing.B, cfg Config, n, batch int) {
	train, _ := fmnist(b)
	tr := mustNew(b, cfg)
	w, _ := tr.Init(1)
	ds := train.Subset(seq(n))
	for b.Loop() {
		if _, _, err := tr.Train(context.Background(), w, ds, TrainConfig{Epochs: 1, BatchSize: batch, LR: 0.05}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(ds.N)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

// BenchmarkTrainMLP trains the example job's MLP, 784-200-10, for one
// epoch over 2,000 Fashion-MNIST images at batch 32 and 128, on one core
// and on all: the cases bench/pytorch_cpu.py measures for PyTorch.
func BenchmarkTrainMLP(b *testing.B) {
	benchTrainCases(b, Config{Kind: "mlp", Hidden: []int{200}, InputShape: []int{1, 28, 28}, Classes: 10}, 2000)
}

// benchTrainCases runs benchTrain at batch 32 and 128 with GOMAXPROCS 1
// and the machine's core count.
func benchTrainCases(b *testing.B, cfg Config, n int) {
	for _, batch := range []int{32, 128} {
		for _, procs := range []int{1, runtime.NumCPU()} {
			b.Run(fmt.Sprintf("batch=%d/procs=%d", batch, procs), func(b *testing.B) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				benchTrain(b, cfg, n, batch)
			})
		}
	}
}

func BenchmarkTrainLogreg(b *testing.B) {
	benchTrain(b, Config{Kind: "logreg", InputShape: []int{1, 28, 28}, Classes: 10}, 2000, 32)
}

func BenchmarkEvaluateMLP(b *testing.B) {
	_, test := fmnist(b)
	tr := mustNew(b, Config{Kind: "mlp", Hidden: []int{200}, InputShape: []int{1, 28, 28}, Classes: 10})
	w, _ := tr.Init(1)
	for b.Loop() {
		if _, err := tr.Evaluate(context.Background(), w, test); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(test.N)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}

// TestCNNGradients checks the CNN's gradients by finite differences on
// tiny images: two input channels, and odd sizes that pooling floors; 5
// samples give one per batch slice, 37 several per convolution group and
// a partial last group.
func TestCNNGradients(t *testing.T) {
	for _, tc := range []struct {
		cfg Config
		n   int
	}{
		{Config{Kind: "cnn", Conv: []int{3, 4}, InputShape: []int{2, 8, 8}, Classes: 3}, 5},
		{Config{Kind: "cnn", Conv: []int{2, 3}, InputShape: []int{1, 9, 7}, Classes: 4}, 5},
		{Config{Kind: "cnn", Conv: []int{3}, InputShape: []int{3, 5, 6}, Classes: 2}, 5},
		{Config{Kind: "cnn", Conv: []int{3, 4}, InputShape: []int{1, 6, 7}, Classes: 3}, 37},
		// Layers of 4 and 16 input channels: runs of 20 and 80 values, the
		// backward pass on the padded input instead of patches.
		{Config{Kind: "cnn", Conv: []int{4, 16, 3}, InputShape: []int{1, 8, 9}, Classes: 3}, 5},
	} {
		t.Run(fmt.Sprintf("%s/n=%d", fmtShape(tc.cfg.InputShape), tc.n), func(t *testing.T) {
			withKernels(t, func(t *testing.T) {
				tr := mustNew(t, tc.cfg)
				ds := images(tc.n, tc.cfg.InputShape, tc.cfg.Classes, 4)
				w, _ := tr.Init(2)
				checkGradients(t, tr, w, ds, 3e-2)
			})
		})
	}
}

// TestCNNBatchedConv checks that the convolutions of a group of samples
// in one GEMM give, bit for bit, what each sample gives alone.
func TestCNNBatchedConv(t *testing.T) {
	withKernels(t, func(t *testing.T) {
		cfg := Config{Kind: "cnn", Conv: []int{5, 6}, InputShape: []int{2, 9, 10}, Classes: 3}
		tr := mustNew(t, cfg).(*cnn)
		ds := images(11, cfg.InputShape, cfg.Classes, 6)
		w, _ := tr.Init(3)
		idx := seq(ds.N)
		grouped, single := tr.scratch(ds.N).(*cnnPass), tr.scratch(ds.N).(*cnnPass)
		ch, one := grouped.chunks[0], single.chunks[0]
		tr.borrow(ch)
		tr.borrow(one)
		tr.prepare(w, grouped)
		tr.prepare(w, single)
		for lo := 0; lo < ds.N; lo += convGroup {
			tr.convForward(w, grouped, ch, ds, idx, lo, min(lo+convGroup, ds.N))
		}
		for s := 0; s < ds.N; s++ {
			tr.convForward(w, single, one, ds, idx, s, s+1)
		}
		for li := range tr.convs {
			if !cmp.Equal(grouped.pooled[li], single.pooled[li]) || !cmp.Equal(grouped.argmax[li], single.argmax[li]) {
				t.Errorf("layer %d: grouped convolutions differ from per-sample ones", li+1)
			}
			if nonzero := slices.IndexFunc(grouped.pooled[li], func(v float32) bool { return v > 0 }); nonzero < 0 {
				t.Errorf("layer %d: all outputs 0, the comparison shows nothing", li+1)
			}
		}
	})
}

// images returns n random images of the given shape, about half of
// their pixels 0 as in real images, with labels cycling through the
// classes.
func images(n int, shape []int, classes int, seed uint64) *data.Dataset {
	r := rand.New(rand.NewPCG(seed, seed))
	f := numel(shape)
	ds := &data.Dataset{N: n, Features: f, Shape: shape, Classes: classes, X: make([]float32, n*f), Y: make([]uint8, n)}
	for i := range ds.X {
		ds.X[i] = float32(max(0, r.NormFloat64()))
	}
	for i := range ds.Y {
		ds.Y[i] = uint8(i % classes)
	}
	return ds
}

func TestCNNNames(t *testing.T) {
	w, _ := mustNew(t, Config{Kind: "cnn", Conv: []int{3, 4}, InputShape: []int{2, 8, 8}, Classes: 3}).Init(1)
	var names []string
	for _, tn := range w.Tensors {
		names = append(names, tn.Name+fmtShape(tn.Shape))
	}
	want := []string{"conv1.weight[3 2 5 5]", "conv1.bias[3]", "conv2.weight[4 3 5 5]", "conv2.bias[4]",
		"fc1.weight[512 16]", "fc1.bias[512]", "fc2.weight[3 512]", "fc2.bias[3]"}
	if !cmp.Equal(names, want) {
		t.Errorf("CNN tensors = %v, want %v", names, want)
	}
}

func TestCNNLearns(t *testing.T) {
	train, test := fmnist(t)
	tr := mustNew(t, Config{Kind: "cnn", Conv: []int{8, 16}, InputShape: train.Shape, Classes: 10})
	w, _ := tr.Init(1)
	small := train.Subset(seq(600))
	w, _, err := tr.Train(context.Background(), w, small, TrainConfig{Epochs: 1, BatchSize: 20, LR: 0.05, Momentum: 0.9, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := tr.Evaluate(context.Background(), w, test.Subset(seq(300)))
	if r.Accuracy < 0.4 {
		t.Errorf("CNN accuracy after one epoch on 600 images = %.3f, want ≥ 0.4 (chance is 0.1)", r.Accuracy)
	}
	if _, err := New(Config{Kind: "cnn", InputShape: []int{784}, Classes: 10}); !errors.Is(err, ErrConfig) {
		t.Errorf("cnn on flat input: %v, want ErrConfig", err)
	}
}

// BenchmarkTrainCNN trains the FedAvg CNN (conv 32, 64, FC 512) for one
// epoch over 512 images, in the cases of BenchmarkTrainMLP.
func BenchmarkTrainCNN(b *testing.B) {
	benchTrainCases(b, Config{Kind: "cnn", InputShape: []int{1, 28, 28}, Classes: 10}, 512)
}

func BenchmarkEvaluateCNN(b *testing.B) {
	_, test := fmnist(b)
	tr := mustNew(b, Config{Kind: "cnn", InputShape: []int{1, 28, 28}, Classes: 10})
	w, _ := tr.Init(1)
	ds := test.Subset(seq(200))
	for b.Loop() {
		if _, err := tr.Evaluate(context.Background(), w, ds); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(ds.N)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}
