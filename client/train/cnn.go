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

// cnn is McMahan et al.'s FedAvg CNN: per entry of Conv a 5×5 convolution
// (same padding) + ReLU + 2×2 max-pool, then a 512-unit ReLU layer and the
// class logits. Tensors are named and laid out as PyTorch's state_dict:
// conv<i>.weight [out, in, 5, 5], conv<i>.bias, fc1.weight [512, C·H·W],
// fc1.bias, fc2.weight [classes, 512], fc2.bias. Convolutions run as
// im2col + GEMM per sample.
type cnn struct {
	in      [3]int // C, H, W
	convs   []convLayer
	flat    int
	hidden  int
	classes int
}

var _ Trainer = (*cnn)(nil)

const kernel, pad = 5, 2

type convLayer struct {
	cin, cout int
	h, w      int // input height and width (output of the conv, before pooling)
}

func newCNN(cfg Config) (Trainer, error) {
	if len(cfg.InputShape) != 3 {
		return nil, fmt.Errorf("%w: a cnn takes images [channels, height, width], got input shape %v", ErrConfig, cfg.InputShape)
	}
	conv := cfg.Conv
	if len(conv) == 0 {
		conv = []int{32, 64}
	}
	c := &cnn{in: [3]int{cfg.InputShape[0], cfg.InputShape[1], cfg.InputShape[2]}, hidden: 512, classes: cfg.Classes}
	ch, h, w := c.in[0], c.in[1], c.in[2]
	for _, out := range conv {
		if out <= 0 || out > 4096 {
			return nil, fmt.Errorf("%w: %d convolution channels", ErrConfig, out)
		}
		if h < 2 || w < 2 {
			return nil, fmt.Errorf("%w: %d convolutions pool a %v image below 1×1", ErrConfig, len(conv), cfg.InputShape)
		}
		c.convs = append(c.convs, convLayer{cin: ch, cout: out, h: h, w: w})
		ch, h, w = out, h/2, w/2
	}
	c.flat = ch * h * w
	return c, nil
}

// Init draws He-uniform weights as in [dense.Init].
func (c *cnn) Init(seed int64) (*model.Weights, error) {
	r := rand.New(rand.NewPCG(uint64(seed), 0xc22))
	uniform := func(n int, bound float64) []float32 {
		d := make([]float32, n)
		for i := range d {
			d[i] = float32((2*r.Float64() - 1) * bound)
		}
		return d
	}
	w := &model.Weights{}
	for i, l := range c.convs {
		fanIn := l.cin * kernel * kernel
		w.Tensors = append(w.Tensors,
			model.Tensor{Name: fmt.Sprintf("conv%d.weight", i+1), Shape: []int{l.cout, l.cin, kernel, kernel}, Data: uniform(l.cout*fanIn, math.Sqrt(6/float64(fanIn)))},
			model.Tensor{Name: fmt.Sprintf("conv%d.bias", i+1), Shape: []int{l.cout}, Data: uniform(l.cout, 1/math.Sqrt(float64(fanIn)))})
	}
	w.Tensors = append(w.Tensors,
		model.Tensor{Name: "fc1.weight", Shape: []int{c.hidden, c.flat}, Data: uniform(c.hidden*c.flat, math.Sqrt(6/float64(c.flat)))},
		model.Tensor{Name: "fc1.bias", Shape: []int{c.hidden}, Data: uniform(c.hidden, 1/math.Sqrt(float64(c.flat)))},
		model.Tensor{Name: "fc2.weight", Shape: []int{c.classes, c.hidden}, Data: uniform(c.classes*c.hidden, math.Sqrt(3/float64(c.hidden)))},
		model.Tensor{Name: "fc2.bias", Shape: []int{c.classes}, Data: uniform(c.classes, 1/math.Sqrt(float64(c.hidden)))})
	return w, nil
}

func (c *cnn) check(w *model.Weights, ds *data.Dataset) error {
	want, _ := c.Init(0)
	if err := want.Compatible(w); err != nil {
		return fmt.Errorf("weights do not fit this model: %w", err)
	}
	if ds == nil || ds.N == 0 {
		return fmt.Errorf("no data")
	}
	if ds.Features != c.in[0]*c.in[1]*c.in[2] {
		return fmt.Errorf("data has %d features per sample, the model takes %v", ds.Features, c.in)
	}
	return nil
}

// Train runs minibatch SGD (see [runSGD]).
func (c *cnn) Train(ctx context.Context, w *model.Weights, ds *data.Dataset, cfg TrainConfig) (*model.Weights, TrainResult, error) {
	if err := c.check(w, ds); err != nil {
		return nil, TrainResult{}, err
	}
	return runSGD(ctx, c, w, ds, cfg)
}

// Evaluate computes loss and accuracy in batches of 100.
func (c *cnn) Evaluate(ctx context.Context, w *model.Weights, ds *data.Dataset) (EvalResult, error) {
	if err := c.check(w, ds); err != nil {
		return EvalResult{}, err
	}
	return evaluate(ctx, c, w, ds, 100)
}

// cnnPass holds one batch's activations, per sample and layer.
type cnnPass struct {
	n      int
	cols   [][][]float32 // [layer][sample] im2col of the layer's input
	pre    [][][]float32 // [layer][sample] conv output after ReLU, before pooling
	argmax [][][]int32   // [layer][sample] pooled position → index in pre
	pooled [][][]float32 // [layer][sample] pooled output
	flat   []float32     // [n, flat]
	hid    []float32     // [n, hidden] after ReLU
	logits []float32     // [n, classes]
	dlog   []float32
	dhid   []float32
	dflat  []float32
	y      []uint8
}

func (c *cnn) scratch(n int) any {
	p := &cnnPass{n: n, flat: make([]float32, n*c.flat), hid: make([]float32, n*c.hidden),
		logits: make([]float32, n*c.classes), dlog: make([]float32, n*c.classes),
		dhid: make([]float32, n*c.hidden), dflat: make([]float32, n*c.flat), y: make([]uint8, n)}
	for _, l := range c.convs {
		hw := l.h * l.w
		cols, pre, am, pooled := make([][]float32, n), make([][]float32, n), make([][]int32, n), make([][]float32, n)
		for i := 0; i < n; i++ {
			cols[i] = make([]float32, l.cin*kernel*kernel*hw)
			pre[i] = make([]float32, l.cout*hw)
			am[i] = make([]int32, l.cout*(l.h/2)*(l.w/2))
			pooled[i] = make([]float32, l.cout*(l.h/2)*(l.w/2))
		}
		p.cols, p.pre, p.argmax, p.pooled = append(p.cols, cols), append(p.pre, pre), append(p.argmax, am), append(p.pooled, pooled)
	}
	return p
}

// im2col lays out a [cin, h, w] image as [cin·25, h·w] patches (zero padded).
func im2col(img []float32, cin, h, w int, col []float32) {
	hw := h * w
	for ci := 0; ci < cin; ci++ {
		for ky := 0; ky < kernel; ky++ {
			for kx := 0; kx < kernel; kx++ {
				row := col[((ci*kernel+ky)*kernel+kx)*hw : ((ci*kernel+ky)*kernel+kx+1)*hw]
				for y := 0; y < h; y++ {
					sy := y + ky - pad
					for x := 0; x < w; x++ {
						sx := x + kx - pad
						if sy < 0 || sy >= h || sx < 0 || sx >= w {
							row[y*w+x] = 0
						} else {
							row[y*w+x] = img[(ci*h+sy)*w+sx]
						}
					}
				}
			}
		}
	}
}

// col2im adds [cin·25, h·w] patch gradients back into a [cin, h, w] image.
func col2im(col []float32, cin, h, w int, img []float32) {
	clear(img)
	hw := h * w
	for ci := 0; ci < cin; ci++ {
		for ky := 0; ky < kernel; ky++ {
			for kx := 0; kx < kernel; kx++ {
				row := col[((ci*kernel+ky)*kernel+kx)*hw : ((ci*kernel+ky)*kernel+kx+1)*hw]
				for y := 0; y < h; y++ {
					sy := y + ky - pad
					if sy < 0 || sy >= h {
						continue
					}
					for x := 0; x < w; x++ {
						sx := x + kx - pad
						if sx >= 0 && sx < w {
							img[(ci*h+sy)*w+sx] += row[y*w+x]
						}
					}
				}
			}
		}
	}
}

func (c *cnn) batch(w, grad *model.Weights, ds *data.Dataset, idx []int, scratch any) (float64, int) {
	p := scratch.(*cnnPass)
	n := len(idx)
	feat := ds.Features
	nconv := len(c.convs)
	fc1, fc1b := w.Tensors[2*nconv].Data, w.Tensors[2*nconv+1].Data
	fc2, fc2b := w.Tensors[2*nconv+2].Data, w.Tensors[2*nconv+3].Data

	// Forward, sample by sample through the convolutions.
	for s, j := range idx {
		p.y[s] = ds.Y[j]
		input := ds.X[j*feat : (j+1)*feat]
		for li, l := range c.convs {
			hw := l.h * l.w
			K := l.cin * kernel * kernel
			im2col(input, l.cin, l.h, l.w, p.cols[li][s])
			out := p.pre[li][s]
			bias := w.Tensors[2*li+1].Data
			for co := 0; co < l.cout; co++ {
				o := out[co*hw : (co+1)*hw]
				for i := range o {
					o[i] = bias[co]
				}
			}
			blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, gen(l.cout, K, w.Tensors[2*li].Data), gen(K, hw, p.cols[li][s]), 1, gen(l.cout, hw, out))
			for i, v := range out {
				if v < 0 {
					out[i] = 0
				}
			}
			maxPool(out, l.cout, l.h, l.w, p.pooled[li][s], p.argmax[li][s])
			input = p.pooled[li][s]
		}
		copy(p.flat[s*c.flat:(s+1)*c.flat], input)
	}
	for s := 0; s < n; s++ {
		copy(p.hid[s*c.hidden:(s+1)*c.hidden], fc1b)
		copy(p.logits[s*c.classes:(s+1)*c.classes], fc2b)
	}
	blas32.Gemm(blas.NoTrans, blas.Trans, 1, gen(n, c.flat, p.flat), gen(c.hidden, c.flat, fc1), 1, gen(n, c.hidden, p.hid))
	for i, v := range p.hid[:n*c.hidden] {
		if v < 0 {
			p.hid[i] = 0
		}
	}
	blas32.Gemm(blas.NoTrans, blas.Trans, 1, gen(n, c.hidden, p.hid), gen(c.classes, c.hidden, fc2), 1, gen(n, c.classes, p.logits))
	scale := float32(1)
	if grad != nil {
		scale = float32(n)
	}
	loss, correct := softmaxCE(p.logits, p.y, n, c.classes, p.dlog, scale)
	if grad == nil {
		return loss, correct
	}

	// Backward through the dense layers, batched.
	g := grad.Tensors
	blas32.Gemm(blas.Trans, blas.NoTrans, 1, gen(n, c.classes, p.dlog), gen(n, c.hidden, p.hid), 0, gen(c.classes, c.hidden, g[2*nconv+2].Data))
	colSums(p.dlog, n, c.classes, g[2*nconv+3].Data)
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, gen(n, c.classes, p.dlog), gen(c.classes, c.hidden, fc2), 0, gen(n, c.hidden, p.dhid))
	for i, v := range p.hid[:n*c.hidden] {
		if v <= 0 {
			p.dhid[i] = 0
		}
	}
	blas32.Gemm(blas.Trans, blas.NoTrans, 1, gen(n, c.hidden, p.dhid), gen(n, c.flat, p.flat), 0, gen(c.hidden, c.flat, g[2*nconv].Data))
	colSums(p.dhid, n, c.hidden, g[2*nconv+1].Data)
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, gen(n, c.hidden, p.dhid), gen(c.hidden, c.flat, fc1), 0, gen(n, c.flat, p.dflat))

	// Backward through the convolutions, sample by sample.
	for li := range c.convs {
		clear(g[2*li].Data)
		clear(g[2*li+1].Data)
	}
	var dOut, dIn, dCol []float32
	for s := 0; s < n; s++ {
		dPooled := p.dflat[s*c.flat : (s+1)*c.flat]
		for li := nconv - 1; li >= 0; li-- {
			l := c.convs[li]
			hw := l.h * l.w
			K := l.cin * kernel * kernel
			dOut = grow(dOut, l.cout*hw)
			clear(dOut)
			for i, a := range p.argmax[li][s] {
				dOut[a] += dPooled[i]
			}
			pre := p.pre[li][s]
			for i, v := range pre {
				if v <= 0 {
					dOut[i] = 0
				}
			}
			blas32.Gemm(blas.NoTrans, blas.Trans, 1, gen(l.cout, hw, dOut), gen(K, hw, p.cols[li][s]), 1, gen(l.cout, K, g[2*li].Data))
			gb := g[2*li+1].Data
			for co := 0; co < l.cout; co++ {
				var sum float32
				for _, v := range dOut[co*hw : (co+1)*hw] {
					sum += v
				}
				gb[co] += sum
			}
			if li == 0 {
				break
			}
			dCol = grow(dCol, K*hw)
			blas32.Gemm(blas.Trans, blas.NoTrans, 1, gen(l.cout, K, w.Tensors[2*li].Data), gen(l.cout, hw, dOut), 0, gen(K, hw, dCol))
			dIn = grow(dIn, l.cin*hw)
			col2im(dCol, l.cin, l.h, l.w, dIn)
			dPooled = append([]float32(nil), dIn...)
		}
	}
	return loss, correct
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

// colSums sets out[j] = Σ_i m[i, j] for an n×k row-major m.
func colSums(m []float32, n, k int, out []float32) {
	clear(out)
	for i := 0; i < n; i++ {
		for j, v := range m[i*k : (i+1)*k] {
			out[j] += v
		}
	}
}

// maxPool pools [c, h, w] 2×2 into [c, h/2, w/2], recording each maximum's
// index in in.
func maxPool(in []float32, c, h, w int, out []float32, arg []int32) {
	oh, ow := h/2, w/2
	for ch := 0; ch < c; ch++ {
		for y := 0; y < oh; y++ {
			for x := 0; x < ow; x++ {
				b := int32((ch*h+2*y)*w + 2*x)
				best := b
				for _, d := range [3]int32{1, int32(w), int32(w) + 1} {
					if in[b+d] > in[best] {
						best = b + d
					}
				}
				o := (ch*oh+y)*ow + x
				out[o], arg[o] = in[best], best
			}
		}
	}
}
