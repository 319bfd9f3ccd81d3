package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/cohortfl/cohort/client/data"
	"github.com/cohortfl/cohort/model"
)

// dense is a fully connected network: ReLU hidden layers, softmax output
// (logreg when there are none). Layer i's weight is "fc<i>.weight" with
// shape [out, in] and its bias "fc<i>.bias" [out], PyTorch's layout and
// names, so an external PyTorch trainer exchanges the same files.
type dense struct {
	sizes []int // in, hidden..., classes
}

var _ Trainer = (*dense)(nil)

func newDense(in int, hidden []int, classes int) (*dense, error) {
	sizes := []int{in}
	for _, h := range hidden {
		if h <= 0 || h > 1<<20 {
			return nil, fmt.Errorf("%w: hidden width %d", ErrConfig, h)
		}
		sizes = append(sizes, h)
	}
	return &dense{sizes: append(sizes, classes)}, nil
}

func (d *dense) layers() int { return len(d.sizes) - 1 }

// Init draws He-uniform weights (Kaiming, as PyTorch's nn.Linear default
// bound 1/sqrt(in) for biases) from the seed.
func (d *dense) Init(seed int64) (*model.Weights, error) {
	r := rand.New(rand.NewPCG(uint64(seed), 0x5eed))
	w := &model.Weights{}
	for l := 0; l < d.layers(); l++ {
		in, out := d.sizes[l], d.sizes[l+1]
		wt := make([]float32, out*in)
		bound := math.Sqrt(6.0 / float64(in))
		if l == d.layers()-1 {
			bound = math.Sqrt(3.0 / float64(in)) // no ReLU after the last layer
		}
		for i := range wt {
			wt[i] = float32((2*r.Float64() - 1) * bound)
		}
		b := make([]float32, out)
		bb := 1 / math.Sqrt(float64(in))
		for i := range b {
			b[i] = float32((2*r.Float64() - 1) * bb)
		}
		w.Tensors = append(w.Tensors,
			model.Tensor{Name: fmt.Sprintf("fc%d.weight", l+1), Shape: []int{out, in}, Data: wt},
			model.Tensor{Name: fmt.Sprintf("fc%d.bias", l+1), Shape: []int{out}, Data: b})
	}
	return w, nil
}

func (d *dense) check(w *model.Weights, ds *data.Dataset) error {
	want, _ := d.Init(0)
	if err := want.Compatible(w); err != nil {
		return fmt.Errorf("weights do not fit this model: %w", err)
	}
	if ds == nil || ds.N == 0 {
		return fmt.Errorf("no data")
	}
	if ds.Features != d.sizes[0] {
		return fmt.Errorf("data has %d features per sample, the model takes %d", ds.Features, d.sizes[0])
	}
	return nil
}

// pass holds one batch's activations and gradients.
type pass struct {
	acts  [][]float32 // acts[0] = input, acts[l+1] = layer l's output (after ReLU)
	grads [][]float32 // per layer, d loss / d pre-activation
	y     []uint8     // the batch's labels
}

func (d *dense) newPass(batch int) *pass {
	p := &pass{acts: make([][]float32, len(d.sizes)), grads: make([][]float32, d.layers()), y: make([]uint8, batch)}
	for i, s := range d.sizes {
		p.acts[i] = make([]float32, batch*s)
	}
	for l := range p.grads {
		p.grads[l] = make([]float32, batch*d.sizes[l+1])
	}
	return p
}

func gen(rows, cols int, data []float32) blas32.General {
	return blas32.General{Rows: rows, Cols: cols, Stride: cols, Data: data[:rows*cols]}
}

// forward computes the logits of n samples already in p.acts[0].
func (d *dense) forward(w *model.Weights, p *pass, n int) {
	for l := 0; l < d.layers(); l++ {
		in, out := d.sizes[l], d.sizes[l+1]
		W, b := w.Tensors[2*l].Data, w.Tensors[2*l+1].Data
		z := p.acts[l+1][:n*out]
		for i := 0; i < n; i++ {
			copy(z[i*out:(i+1)*out], b)
		}
		blas32.Gemm(blas.NoTrans, blas.Trans, 1, gen(n, in, p.acts[l]), gen(out, in, W), 1, gen(n, out, z))
		if l < d.layers()-1 {
			for i, v := range z {
				if v < 0 {
					z[i] = 0
				}
			}
		}
	}
}

// lossAndGrad turns the logits into softmax cross-entropy: it returns the
// summed loss and correct count, and leaves d loss/d logits (divided by
// scale) in the last gradient buffer.
func (d *dense) lossAndGrad(p *pass, y []uint8, n int, scale float32) (float64, int) {
	k := d.sizes[len(d.sizes)-1]
	return softmaxCE(p.acts[len(p.acts)-1], y, n, k, p.grads[len(p.grads)-1], scale)
}

// softmaxCE computes the softmax cross-entropy of n rows of k logits
// against labels y. It returns the summed loss and the number of correct
// predictions, and writes d loss/d logits, divided by scale, into grad.
func softmaxCE(logits []float32, y []uint8, n, k int, grad []float32, scale float32) (float64, int) {
	var loss float64
	correct := 0
	for i := 0; i < n; i++ {
		row := logits[i*k : (i+1)*k]
		mx, arg := row[0], 0
		for j, v := range row {
			if v > mx {
				mx, arg = v, j
			}
		}
		if arg == int(y[i]) {
			correct++
		}
		var sum float64
		for _, v := range row {
			sum += math.Exp(float64(v - mx))
		}
		loss += math.Log(sum) - float64(row[y[i]]-mx)
		gr := grad[i*k : (i+1)*k]
		for j, v := range row {
			gr[j] = float32(math.Exp(float64(v-mx))/sum) / scale
		}
		gr[y[i]] -= 1 / scale
	}
	return loss, correct
}

// backward fills grad (shaped like w) from the last layer's gradient.
func (d *dense) backward(w, grad *model.Weights, p *pass, n int) {
	for l := d.layers() - 1; l >= 0; l-- {
		in, out := d.sizes[l], d.sizes[l+1]
		dz := p.grads[l][:n*out]
		blas32.Gemm(blas.Trans, blas.NoTrans, 1, gen(n, out, dz), gen(n, in, p.acts[l]), 0, gen(out, in, grad.Tensors[2*l].Data))
		gb := grad.Tensors[2*l+1].Data
		clear(gb)
		for i := 0; i < n; i++ {
			for j, v := range dz[i*out : (i+1)*out] {
				gb[j] += v
			}
		}
		if l == 0 {
			break
		}
		prev := p.grads[l-1][:n*in]
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, gen(n, out, dz), gen(out, in, w.Tensors[2*l].Data), 0, gen(n, in, prev))
		a := p.acts[l][:n*in]
		for i, v := range a {
			if v <= 0 {
				prev[i] = 0
			}
		}
	}
}

func (d *dense) load(p *pass, ds *data.Dataset, idx []int) {
	f := ds.Features
	for i, j := range idx {
		copy(p.acts[0][i*f:(i+1)*f], ds.X[j*f:(j+1)*f])
	}
}

// batch computes one batch's summed loss and correct count; with grad
// non-nil it also fills grad with d mean loss/d w.
func (d *dense) batch(w, grad *model.Weights, ds *data.Dataset, idx []int, scratch any) (float64, int) {
	p := scratch.(*pass)
	n := len(idx)
	d.load(p, ds, idx)
	y := p.y[:n]
	for i, j := range idx {
		y[i] = ds.Y[j]
	}
	d.forward(w, p, n)
	scale := float32(1)
	if grad != nil {
		scale = float32(n)
	}
	loss, correct := d.lossAndGrad(p, y, n, scale)
	if grad != nil {
		d.backward(w, grad, p, n)
	}
	return loss, correct
}

func (d *dense) scratch(batch int) any { return d.newPass(batch) }

// Train runs minibatch SGD (see [runSGD]).
func (d *dense) Train(ctx context.Context, w *model.Weights, ds *data.Dataset, cfg TrainConfig) (*model.Weights, TrainResult, error) {
	if err := d.check(w, ds); err != nil {
		return nil, TrainResult{}, err
	}
	return runSGD(ctx, d, w, ds, cfg)
}

// Evaluate computes loss and accuracy in batches of 500.
func (d *dense) Evaluate(ctx context.Context, w *model.Weights, ds *data.Dataset) (EvalResult, error) {
	if err := d.check(w, ds); err != nil {
		return EvalResult{}, err
	}
	return evaluate(ctx, d, w, ds, 500)
}

func checkTrainConfig(cfg TrainConfig) error {
	switch {
	case cfg.Epochs < 1:
		return fmt.Errorf("epochs %d: need at least 1", cfg.Epochs)
	case cfg.BatchSize < 1:
		return fmt.Errorf("batch size %d: need at least 1", cfg.BatchSize)
	case !(cfg.LR > 0):
		return fmt.Errorf("learning rate %v: must be > 0", cfg.LR)
	case cfg.Momentum < 0 || cfg.Momentum >= 1:
		return fmt.Errorf("momentum %v: must be in [0, 1)", cfg.Momentum)
	case cfg.Mu < 0 || cfg.WeightDecay < 0:
		return fmt.Errorf("mu %v and weight decay %v must be ≥ 0", cfg.Mu, cfg.WeightDecay)
	}
	return nil
}

// step applies one SGD update to cur from grad: weight decay and FedProx's
// proximal gradient μ(w − anchor) are added to the gradient, then momentum.
func step(cur, grad, vel, anchor *model.Weights, cfg TrainConfig) {
	lr, m := float32(cfg.LR), float32(cfg.Momentum)
	wd, mu := float32(cfg.WeightDecay), float32(cfg.Mu)
	for t := range cur.Tensors {
		w, g, a := cur.Tensors[t].Data, grad.Tensors[t].Data, anchor.Tensors[t].Data
		var v []float32
		if vel != nil {
			v = vel.Tensors[t].Data
		}
		for i := range w {
			gi := g[i] + wd*w[i] + mu*(w[i]-a[i])
			if v != nil {
				v[i] = m*v[i] + gi
				gi = v[i]
			}
			w[i] -= lr * gi
		}
	}
}
