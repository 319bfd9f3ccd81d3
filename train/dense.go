package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

// dense is a fully connected network: ReLU hidden layers, softmax output
// (logreg when there are none). Layer i's weight is "fc<i>.weight" with
// shape [out, in] and its bias "fc<i>.bias" [out], PyTorch's layout and
// names, so an external PyTorch trainer exchanges the same files.
//
// With 32 or more units in the first layer, training and evaluation hold
// that layer's weight transposed, [in, out]. Batches of gemmBatch samples
// or more run that layer as GEMMs on it (x·Wᵀ, xᵀ·d z); smaller ones
// over the input's non-zero values only (half of a Fashion-MNIST image is
// background): the forward pass adds a weight row per non-zero pixel, the
// gradient a row of d out per non-zero pixel. The exchanged weights keep
// PyTorch's layout.
type dense struct {
	sizes  []int // in, hidden..., classes
	layout []model.Tensor
	firstT bool // the first layer runs transposed
}

var _ Trainer = (*dense)(nil)

// gemmBatch is the smallest batch whose first layer runs as GEMMs rather
// than over each sample's non-zero inputs.
const gemmBatch = 16

func newDense(in int, hidden []int, classes int) (*dense, error) {
	if in <= 0 || in > maxParams {
		return nil, fmt.Errorf("%w: %d input features; the input shape must multiply out to between 1 and %d", ErrConfig, in, maxParams)
	}
	sizes := []int{in}
	for _, h := range hidden {
		if h <= 0 {
			return nil, fmt.Errorf("%w: hidden width %d; widths must be positive (mlp hidden %v)", ErrConfig, h, hidden)
		}
		sizes = append(sizes, h)
	}
	d := &dense{sizes: append(sizes, classes)}
	d.firstT = d.sizes[1] >= 32
	var count paramCounter
	for l := 0; l < d.layers(); l++ {
		in, out := d.sizes[l], d.sizes[l+1]
		count.add(out, in+1)
		d.layout = append(d.layout,
			model.Tensor{Name: fmt.Sprintf("fc%d.weight", l+1), Shape: []int{out, in}},
			model.Tensor{Name: fmt.Sprintf("fc%d.bias", l+1), Shape: []int{out}})
	}
	if count.bad {
		return nil, fmt.Errorf("%w: layers %v hold more than %d parameters; use an external trainer (model kind exec) for models this large", ErrConfig, d.sizes, maxParams)
	}
	return d, nil
}

func (d *dense) layers() int  { return len(d.sizes) - 1 }
func (d *dense) classes() int { return d.sizes[len(d.sizes)-1] }

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
			model.Tensor{Name: d.layout[2*l].Name, Shape: []int{out, in}, Data: wt},
			model.Tensor{Name: d.layout[2*l+1].Name, Shape: []int{out}, Data: b})
	}
	return w, nil
}

// pass holds one batch's activations and gradients.
type pass struct {
	acts  [][]float32 // acts[0] = input, acts[l+1] = layer l's output (after ReLU)
	grads [][]float32 // per layer, d loss / d pre-activation
	xT    []float32   // the input transposed, [in, batch], for the first layer's GEMM
	y     []uint8     // the batch's labels
}

func (d *dense) newPass(batch int) *pass {
	p := &pass{acts: make([][]float32, len(d.sizes)), grads: make([][]float32, d.layers()), y: make([]uint8, batch)}
	if d.firstT && batch >= gemmBatch {
		p.xT = make([]float32, d.sizes[0]*batch)
	}
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

// forward computes the logits of n samples already in p.acts[0]; w is
// in the working layout (see [dense.work]).
func (d *dense) forward(w *model.Weights, p *pass, n int) {
	for l := 0; l < d.layers(); l++ {
		in, out := d.sizes[l], d.sizes[l+1]
		W, b := w.Tensors[2*l].Data, w.Tensors[2*l+1].Data
		z := p.acts[l+1][:n*out]
		hidden := l < d.layers()-1
		if l == 0 && d.firstT && n >= gemmBatch {
			// z [n, out] = x [n, in] · Wᵀ [in, out] on the GEMM kernel.
			for i := 0; i < n; i++ {
				copy(z[i*out:(i+1)*out], b)
			}
			mulAddPar(n, out, in, p.acts[0], in, W, out, z, out)
			if hidden {
				relu(z)
			}
			continue
		}
		if l == 0 && d.firstT {
			x := p.acts[0]
			k := min(n, runtime.GOMAXPROCS(0))
			parallel(k, func(c int) {
				lo, hi := chunkRange(c, k, n)
				for i := lo; i < hi; i++ {
					zr := z[i*out : (i+1)*out]
					copy(zr, b)
					for j, v := range x[i*in : (i+1)*in] {
						if v != 0 {
							axpy(v, W[j*out:(j+1)*out], zr)
						}
					}
					if hidden {
						relu(zr)
					}
				}
			})
			continue
		}
		for i := 0; i < n; i++ {
			copy(z[i*out:(i+1)*out], b)
		}
		blas32.Gemm(blas.NoTrans, blas.Trans, 1, gen(n, in, p.acts[l]), gen(out, in, W), 1, gen(n, out, z))
		if hidden {
			relu(z)
		}
	}
}

// axpy sets y += a·x.
func axpy(a float32, x, y []float32) {
	if hasFMA {
		axpyFMA(a, x, y[:len(x)])
		return
	}
	blas32.Implementation().Saxpy(len(x), a, x, 1, y, 1)
}

// work returns w in the layout training runs on: the first layer's
// weight transposed when d.firstT. The result shares w's other tensors.
func (d *dense) work(w *model.Weights) *model.Weights {
	if !d.firstT {
		return w
	}
	out := &model.Weights{Tensors: slices.Clone(w.Tensors)}
	out.Tensors[0].Data = transpose(w.Tensors[0].Data, d.sizes[1], d.sizes[0])
	return out
}

// exchange undoes work: PyTorch's layout again.
func (d *dense) exchange(w *model.Weights) *model.Weights {
	if !d.firstT {
		return w
	}
	out := &model.Weights{Tensors: slices.Clone(w.Tensors)}
	out.Tensors[0].Data = transpose(w.Tensors[0].Data, d.sizes[0], d.sizes[1])
	return out
}

// transpose returns the cols×rows transpose of a rows×cols matrix.
func transpose(m []float32, rows, cols int) []float32 {
	out := make([]float32, len(m))
	const blk = 32
	for r0 := 0; r0 < rows; r0 += blk {
		for c0 := 0; c0 < cols; c0 += blk {
			for r := r0; r < min(r0+blk, rows); r++ {
				for c := c0; c < min(c0+blk, cols); c++ {
					out[c*rows+r] = m[r*cols+c]
				}
			}
		}
	}
	return out
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

// backward fills grad (in w's working layout) from the last layer's
// gradient.
func (d *dense) backward(w, grad *model.Weights, p *pass, n int) {
	for l := d.layers() - 1; l >= 0; l-- {
		in, out := d.sizes[l], d.sizes[l+1]
		dz := p.grads[l][:n*out]
		if l == 0 && d.firstT && n >= gemmBatch {
			// d Wᵀ [in, out] = xᵀ [in, n] · d z [n, out]; mulAdd skips the
			// blocks of pixels that are 0 in the whole batch.
			xT, gw := p.xT[:in*n], grad.Tensors[0].Data
			transposeInto(xT, p.acts[0][:n*in], n, in)
			clear(gw)
			mulAddPar(in, out, n, xT, n, dz, out, gw, out)
		} else if l == 0 && d.firstT {
			// d Wᵀ [in, out]: row j = Σ_i x[i, j]·dz[i, :] over non-zero x.
			x, gw := p.acts[0], grad.Tensors[0].Data
			k := min(in, runtime.GOMAXPROCS(0))
			parallel(k, func(c int) {
				lo, hi := chunkRange(c, k, in)
				for j := lo; j < hi; j++ {
					row := gw[j*out : (j+1)*out]
					clear(row)
					for i := 0; i < n; i++ {
						if v := x[i*in+j]; v != 0 {
							axpy(v, dz[i*out:(i+1)*out], row)
						}
					}
				}
			})
		} else {
			blas32.Gemm(blas.Trans, blas.NoTrans, 1, gen(n, out, dz), gen(n, in, p.acts[l]), 0, gen(out, in, grad.Tensors[2*l].Data))
		}
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
		reluGrad(prev, p.acts[l][:n*in])
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
	if err := checkTrainConfig(cfg); err != nil {
		return nil, TrainResult{}, fmt.Errorf("checking the training config: %w", err)
	}
	if err := checkInputs(d.layout, d.sizes[0], d.classes(), w, ds); err != nil {
		return nil, TrainResult{}, err
	}
	return runSGD(ctx, d, w, ds, cfg)
}

// Evaluate computes loss and accuracy in batches of 500.
func (d *dense) Evaluate(ctx context.Context, w *model.Weights, ds *data.Dataset) (EvalResult, error) {
	if err := checkInputs(d.layout, d.sizes[0], d.classes(), w, ds); err != nil {
		return EvalResult{}, err
	}
	return evaluate(ctx, d, w, ds, 500)
}
