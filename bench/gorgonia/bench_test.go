package gorgonia

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/train"
)

// images returns the first n training images of the Fashion-MNIST subset
// the main module's tests use.
var fmnist = sync.OnceValues(func() (*data.Dataset, error) {
	tr, _, err := data.LoadFashionMNIST(context.Background(), data.LoadOptions{Path: "../../data/testdata/fmnist-subset"})
	return tr, err
})

func images(b *testing.B, n int) *data.Dataset {
	b.Helper()
	ds, err := fmnist()
	if err != nil {
		b.Fatal(err)
	}
	if ds.N < n {
		b.Fatalf("the subset has %d images, the benchmark needs %d", ds.N, n)
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	return ds.Subset(idx)
}

// net is a gorgonia model compiled for one batch size.
type net struct {
	x, y    *G.Node
	learn   G.Nodes
	vm      G.VM
	solver  G.Solver
	loss    G.Value // the last batch's mean loss, read from the graph
	bs, in  int
	classes int
}

func linear(g *G.ExprGraph, x *G.Node, in, out int, name string) (*G.Node, G.Nodes) {
	w := G.NewMatrix(g, tensor.Float32, G.WithShape(in, out), G.WithName(name+".w"), G.WithInit(G.GlorotU(1)))
	b := G.NewVector(g, tensor.Float32, G.WithShape(out), G.WithName(name+".b"), G.WithInit(G.Zeroes()))
	return G.Must(G.BroadcastAdd(G.Must(G.Mul(x, w)), b, nil, []byte{0})), G.Nodes{w, b}
}

// newNet builds the graph: kind "mlp" or "cnn", then the mean softmax
// cross-entropy and its gradients, once.
func newNet(kind string, bs int) (*net, error) {
	g := G.NewGraph()
	n := &net{bs: bs, in: 784, classes: 10}
	n.y = G.NewMatrix(g, tensor.Float32, G.WithShape(bs, 10), G.WithName("y"), G.WithInit(G.Zeroes()))
	var logits *G.Node
	switch kind {
	case "mlp":
		n.x = G.NewMatrix(g, tensor.Float32, G.WithShape(bs, 784), G.WithName("x"), G.WithInit(G.Zeroes()))
		h, p1 := linear(g, n.x, 784, 200, "fc1")
		h = G.Must(G.Rectify(h))
		out, p2 := linear(g, h, 200, 10, "fc2")
		logits, n.learn = out, append(p1, p2...)
	case "cnn":
		n.x = G.NewTensor(g, tensor.Float32, 4, G.WithShape(bs, 1, 28, 28), G.WithName("x"), G.WithInit(G.Zeroes()))
		h := n.x
		cin := 1
		for i, cout := range []int{32, 64} {
			f := G.NewTensor(g, tensor.Float32, 4, G.WithShape(cout, cin, 5, 5), G.WithName(fmt.Sprintf("conv%d.w", i+1)), G.WithInit(G.GlorotU(1)))
			h = G.Must(G.Conv2d(h, f, tensor.Shape{5, 5}, []int{2, 2}, []int{1, 1}, []int{1, 1}))
			h = G.Must(G.Rectify(h))
			h = G.Must(G.MaxPool2D(h, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2}))
			n.learn = append(n.learn, f)
			cin = cout
		}
		h = G.Must(G.Reshape(h, tensor.Shape{bs, 64 * 7 * 7}))
		h, p1 := linear(g, h, 64*7*7, 512, "fc1")
		h = G.Must(G.Rectify(h))
		out, p2 := linear(g, h, 512, 10, "fc2")
		logits = out
		n.learn = append(append(n.learn, p1...), p2...)
	default:
		return nil, fmt.Errorf("model kind %q: use mlp or cnn", kind)
	}
	lsm := G.Must(G.LogSoftMax(logits))
	loss := G.Must(G.Neg(G.Must(G.Div(G.Must(G.Sum(G.Must(G.HadamardProd(lsm, n.y)))), G.NewConstant(float32(bs))))))
	G.Read(loss, &n.loss)
	if _, err := G.Grad(loss, n.learn...); err != nil {
		return nil, fmt.Errorf("building the gradients: %w", err)
	}
	n.vm = G.NewTapeMachine(g, G.BindDualValues(n.learn...))
	n.solver = G.NewVanillaSolver(G.WithLearnRate(0.05))
	return n, nil
}

// epoch trains on ds's full batches in order and returns the samples
// trained on and their mean loss.
func (n *net) epoch(ds *data.Dataset) (int, float64, error) {
	f := ds.Features
	var shape tensor.Shape = tensor.Shape{n.bs, f}
	if n.x.Dims() == 4 {
		shape = tensor.Shape{n.bs, 1, 28, 28}
	}
	trained, sum := 0, 0.0
	for lo := 0; lo+n.bs <= ds.N; lo += n.bs {
		xs := append([]float32(nil), ds.X[lo*f:(lo+n.bs)*f]...)
		ys := make([]float32, n.bs*n.classes)
		for i := range n.bs {
			ys[i*n.classes+int(ds.Y[lo+i])] = 1
		}
		if err := G.Let(n.x, tensor.New(tensor.WithShape(shape...), tensor.WithBacking(xs))); err != nil {
			return trained, 0, err
		}
		if err := G.Let(n.y, tensor.New(tensor.WithShape(n.bs, n.classes), tensor.WithBacking(ys))); err != nil {
			return trained, 0, err
		}
		if err := n.vm.RunAll(); err != nil {
			return trained, 0, fmt.Errorf("batch at %d: %w", lo, err)
		}
		if err := n.solver.Step(G.NodesToValueGrads(n.learn)); err != nil {
			return trained, 0, err
		}
		sum += float64(n.loss.Data().(float32)) * float64(n.bs)
		n.vm.Reset()
		trained += n.bs
	}
	if trained == 0 {
		return 0, 0, fmt.Errorf("%d samples make no batch of %d", ds.N, n.bs)
	}
	return trained, sum / float64(trained), nil
}

// cases are the batch sizes and GOMAXPROCS of bench/pytorch_cpu.py and
// train's benchmarks.
func cases(b *testing.B, fn func(b *testing.B, batch int)) {
	for _, batch := range []int{32, 128} {
		for _, procs := range []int{1, runtime.NumCPU()} {
			b.Run(fmt.Sprintf("batch=%d/procs=%d", batch, procs), func(b *testing.B) {
				defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
				fn(b, batch)
			})
		}
	}
}

func benchGorgonia(b *testing.B, kind string, n int) {
	ds := images(b, n)
	cases(b, func(b *testing.B, batch int) {
		m, err := newNet(kind, batch)
		if err != nil {
			b.Fatal(err)
		}
		samples := 0
		for b.Loop() {
			k, _, err := m.epoch(ds)
			if err != nil {
				b.Fatal(err)
			}
			samples += k
		}
		b.ReportMetric(float64(samples)/b.Elapsed().Seconds(), "samples/s")
	})
}

func benchBuiltin(b *testing.B, cfg train.Config, n int) {
	ds := images(b, n)
	tr, err := train.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	w, err := tr.Init(1)
	if err != nil {
		b.Fatal(err)
	}
	cases(b, func(b *testing.B, batch int) {
		for b.Loop() {
			if _, _, err := tr.Train(context.Background(), w, ds, train.TrainConfig{Epochs: 1, BatchSize: batch, LR: 0.05}); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(ds.N)*float64(b.N)/b.Elapsed().Seconds(), "samples/s")
	})
}

// The MLP: one epoch over 2,000 images.
func BenchmarkMLPGorgonia(b *testing.B) { benchGorgonia(b, "mlp", 2000) }

func BenchmarkMLPBuiltin(b *testing.B) {
	benchBuiltin(b, train.Config{Kind: "mlp", Hidden: []int{200}, InputShape: []int{1, 28, 28}, Classes: 10}, 2000)
}

// The CNN: one epoch over 512 images.
func BenchmarkCNNGorgonia(b *testing.B) { benchGorgonia(b, "cnn", 512) }

func BenchmarkCNNBuiltin(b *testing.B) {
	benchBuiltin(b, train.Config{Kind: "cnn", InputShape: []int{1, 28, 28}, Classes: 10}, 512)
}

// TestGorgoniaLearns checks that the gorgonia graphs train, so that the
// benchmark times real training: the mean loss of a third epoch over 256
// images is well below the first's (ln 10 ≈ 2.3 at chance).
func TestGorgoniaLearns(t *testing.T) {
	for _, kind := range []string{"mlp", "cnn"} {
		t.Run(kind, func(t *testing.T) {
			ds, err := fmnist()
			if err != nil {
				t.Fatal(err)
			}
			idx := make([]int, 256)
			for i := range idx {
				idx[i] = i
			}
			small := ds.Subset(idx)
			m, err := newNet(kind, 32)
			if err != nil {
				t.Fatal(err)
			}
			var losses []float64
			for range 3 {
				k, loss, err := m.epoch(small)
				if err != nil || k != 256 {
					t.Fatalf("epoch: %d samples, %v", k, err)
				}
				losses = append(losses, loss)
			}
			if !(losses[2] < 0.8*losses[0]) {
				t.Errorf("mean loss per epoch %v: it does not fall", losses)
			}
		})
	}
}
