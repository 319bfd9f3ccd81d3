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
// (same padding) + ReLU + 2×2 max-pool (floor, as PyTorch's MaxPool2d),
// then a 512-unit ReLU layer and the class logits. Tensors are named and
// laid out as PyTorch's state_dict: conv<i>.weight [out, in, 5, 5],
// conv<i>.bias, fc1.weight [512, C·H·W] (the last pooled maps flattened
// channel-major, as torch.flatten does), fc1.bias, fc2.weight
// [classes, 512], fc2.bias.
//
// A batch is split into at most cnnChunks fixed slices of samples that run
// in parallel, each summing its own convolution gradients; the slices are
// added in order afterwards, so results do not depend on the number of
// cores. Convolutions run per sample as im2col + GEMM; the backward pass
// works on the patches as rows so that gonum's GEMM skips the zeros
// max-pooling and ReLU leave in the output gradient (three quarters or
// more of it).
type cnn struct {
	in      [3]int // C, H, W
	convs   []convLayer
	flat    int
	hidden  int
	classes int
	layout  []model.Tensor
}

var _ Trainer = (*cnn)(nil)

const (
	kernel, pad = 5, 2
	// cnnChunks is the most slices a CNN batch is split into.
	cnnChunks = 8
)

type convLayer struct {
	cin, cout int
	h, w      int // input and convolution output height and width
	oh, ow    int // after pooling
}

func (l convLayer) k() int      { return l.cin * kernel * kernel }
func (l convLayer) hw() int     { return l.h * l.w }
func (l convLayer) pooled() int { return l.cout * l.oh * l.ow }

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
	var count paramCounter
	count.add(ch, h)
	count.add(ch*h, w) // the image itself must be addressable
	for _, out := range conv {
		if out <= 0 || out > 4096 {
			return nil, fmt.Errorf("%w: %d convolution channels; use 1 to 4096 (cnn conv %v)", ErrConfig, out, conv)
		}
		if h < 2 || w < 2 {
			return nil, fmt.Errorf("%w: %d convolutions pool a %v image below 1×1; use fewer (cnn conv %v)", ErrConfig, len(conv), cfg.InputShape, conv)
		}
		count.add(out, ch*kernel*kernel+1)
		count.add(out*h, w) // the convolution output of one sample
		count.add(ch*kernel*kernel*h, w)
		c.convs = append(c.convs, convLayer{cin: ch, cout: out, h: h, w: w, oh: h / 2, ow: w / 2})
		ch, h, w = out, h/2, w/2
	}
	c.flat = ch * h * w
	count.add(c.hidden, c.flat+1)
	count.add(c.classes, c.hidden+1)
	if count.bad {
		return nil, fmt.Errorf("%w: a cnn with channels %v on %v images is larger than %d parameters or values per sample; use an external trainer (model kind exec)", ErrConfig, conv, cfg.InputShape, maxParams)
	}
	for i, l := range c.convs {
		c.layout = append(c.layout,
			model.Tensor{Name: fmt.Sprintf("conv%d.weight", i+1), Shape: []int{l.cout, l.cin, kernel, kernel}},
			model.Tensor{Name: fmt.Sprintf("conv%d.bias", i+1), Shape: []int{l.cout}})
	}
	c.layout = append(c.layout,
		model.Tensor{Name: "fc1.weight", Shape: []int{c.hidden, c.flat}},
		model.Tensor{Name: "fc1.bias", Shape: []int{c.hidden}},
		model.Tensor{Name: "fc2.weight", Shape: []int{c.classes, c.hidden}},
		model.Tensor{Name: "fc2.bias", Shape: []int{c.classes}})
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
	fanIn := func(l int) int { // of layout tensor l, a weight
		s := c.layout[l].Shape
		return numel(s) / s[0]
	}
	w := &model.Weights{Tensors: make([]model.Tensor, len(c.layout))}
	last := len(c.layout) - 2
	for i := 0; i < len(c.layout); i += 2 {
		in := float64(fanIn(i))
		bound := math.Sqrt(6 / in)
		if i == last {
			bound = math.Sqrt(3 / in) // no ReLU after the logits
		}
		wt, b := c.layout[i], c.layout[i+1]
		w.Tensors[i] = model.Tensor{Name: wt.Name, Shape: append([]int(nil), wt.Shape...), Data: uniform(numel(wt.Shape), bound)}
		w.Tensors[i+1] = model.Tensor{Name: b.Name, Shape: append([]int(nil), b.Shape...), Data: uniform(numel(b.Shape), 1/math.Sqrt(in))}
	}
	return w, nil
}

// work and exchange: the CNN trains on PyTorch's layout as it is.
func (c *cnn) work(w *model.Weights) *model.Weights     { return w }
func (c *cnn) exchange(w *model.Weights) *model.Weights { return w }

func (c *cnn) features() int { return c.in[0] * c.in[1] * c.in[2] }

// Train runs minibatch SGD (see [runSGD]).
func (c *cnn) Train(ctx context.Context, w *model.Weights, ds *data.Dataset, cfg TrainConfig) (*model.Weights, TrainResult, error) {
	if err := checkTrainConfig(cfg); err != nil {
		return nil, TrainResult{}, fmt.Errorf("checking the training config: %w", err)
	}
	if err := checkInputs(c.layout, c.features(), c.classes, w, ds); err != nil {
		return nil, TrainResult{}, err
	}
	return runSGD(ctx, c, w, ds, cfg)
}

// Evaluate computes loss and accuracy in batches of 100.
func (c *cnn) Evaluate(ctx context.Context, w *model.Weights, ds *data.Dataset) (EvalResult, error) {
	if err := checkInputs(c.layout, c.features(), c.classes, w, ds); err != nil {
		return EvalResult{}, err
	}
	return evaluate(ctx, c, w, ds, 100)
}

// cnnPass holds one batch's activations and gradients.
type cnnPass struct {
	pooled [][]float32 // [layer] n × pooled(): each conv layer's pooled output; the last is the flat FC input
	argmax [][]int32   // [layer] n × pooled(): each pooled value's index in the conv output
	hid    []float32   // [n, hidden] after ReLU
	logits []float32   // [n, classes]
	dlog   []float32
	dhid   []float32
	dflat  []float32 // [n, flat]
	y      []uint8
	chunks []*cnnChunk
}

// cnnChunk is one slice of a batch's working memory for one sample at a
// time, and the slice's sum of convolution gradients.
type cnnChunk struct {
	cols []float32   // one sample's patches of the widest layer, [K, hw] or [hw, K]
	out  []float32   // one sample's convolution output, then its gradient
	dcol []float32   // patch gradients [hw, K]
	din  []float32   // gradient of a layer's input
	grad [][]float32 // per conv layer: d weight, d bias
}

func (c *cnn) scratch(n int) any {
	p := &cnnPass{hid: make([]float32, n*c.hidden), logits: make([]float32, n*c.classes),
		dlog: make([]float32, n*c.classes), dhid: make([]float32, n*c.hidden), dflat: make([]float32, n*c.flat),
		y: make([]uint8, n)}
	maxCols, maxOut, maxIn := 0, 0, 0
	for _, l := range c.convs {
		p.pooled = append(p.pooled, make([]float32, n*l.pooled()))
		p.argmax = append(p.argmax, make([]int32, n*l.pooled()))
		maxCols = max(maxCols, l.k()*l.hw())
		maxOut = max(maxOut, l.cout*l.hw())
		maxIn = max(maxIn, l.cin*l.hw())
	}
	for range min(n, cnnChunks) {
		ch := &cnnChunk{cols: make([]float32, maxCols), out: make([]float32, maxOut),
			dcol: make([]float32, maxCols), din: make([]float32, maxIn)}
		for _, l := range c.convs {
			ch.grad = append(ch.grad, make([]float32, l.cout*l.k()), make([]float32, l.cout))
		}
		p.chunks = append(p.chunks, ch)
	}
	return p
}

// chunkRange returns the samples [lo, hi) of chunk i of k over n samples.
func chunkRange(i, k, n int) (lo, hi int) { return i * n / k, (i + 1) * n / k }

func (c *cnn) batch(w, grad *model.Weights, ds *data.Dataset, idx []int, scratch any) (float64, int) {
	p := scratch.(*cnnPass)
	n := len(idx)
	nconv := len(c.convs)
	chunks := p.chunks[:min(n, len(p.chunks))]
	for s, j := range idx {
		p.y[s] = ds.Y[j]
	}

	// Convolutions forward, slices of the batch in parallel.
	parallel(len(chunks), func(ci int) {
		lo, hi := chunkRange(ci, len(chunks), n)
		for s := lo; s < hi; s++ {
			c.convForward(w, p, chunks[ci], c.sampleInput(ds, idx, s), s)
		}
	})

	// The dense layers, batched.
	flat := p.pooled[nconv-1][:n*c.flat]
	fc1, fc1b := w.Tensors[2*nconv].Data, w.Tensors[2*nconv+1].Data
	fc2, fc2b := w.Tensors[2*nconv+2].Data, w.Tensors[2*nconv+3].Data
	for s := 0; s < n; s++ {
		copy(p.hid[s*c.hidden:(s+1)*c.hidden], fc1b)
		copy(p.logits[s*c.classes:(s+1)*c.classes], fc2b)
	}
	blas32.Gemm(blas.NoTrans, blas.Trans, 1, gen(n, c.flat, flat), gen(c.hidden, c.flat, fc1), 1, gen(n, c.hidden, p.hid))
	relu(p.hid[:n*c.hidden])
	blas32.Gemm(blas.NoTrans, blas.Trans, 1, gen(n, c.hidden, p.hid), gen(c.classes, c.hidden, fc2), 1, gen(n, c.classes, p.logits))
	scale := float32(1)
	if grad != nil {
		scale = float32(n)
	}
	loss, correct := softmaxCE(p.logits, p.y, n, c.classes, p.dlog, scale)
	if grad == nil {
		return loss, correct
	}
	g := grad.Tensors
	blas32.Gemm(blas.Trans, blas.NoTrans, 1, gen(n, c.classes, p.dlog), gen(n, c.hidden, p.hid), 0, gen(c.classes, c.hidden, g[2*nconv+2].Data))
	colSums(p.dlog, n, c.classes, g[2*nconv+3].Data)
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, gen(n, c.classes, p.dlog), gen(c.classes, c.hidden, fc2), 0, gen(n, c.hidden, p.dhid))
	for i, v := range p.hid[:n*c.hidden] {
		if v <= 0 {
			p.dhid[i] = 0
		}
	}
	blas32.Gemm(blas.Trans, blas.NoTrans, 1, gen(n, c.hidden, p.dhid), gen(n, c.flat, flat), 0, gen(c.hidden, c.flat, g[2*nconv].Data))
	colSums(p.dhid, n, c.hidden, g[2*nconv+1].Data)
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, gen(n, c.hidden, p.dhid), gen(c.hidden, c.flat, fc1), 0, gen(n, c.flat, p.dflat))

	// Convolutions backward, slices in parallel, then their sums in order.
	parallel(len(chunks), func(ci int) {
		ch := chunks[ci]
		for _, gr := range ch.grad {
			clear(gr)
		}
		lo, hi := chunkRange(ci, len(chunks), n)
		for s := lo; s < hi; s++ {
			c.convBackward(w, p, ch, c.sampleInput(ds, idx, s), s)
		}
	})
	for li := 0; li < 2*nconv; li++ {
		dst := g[li].Data
		copy(dst, chunks[0].grad[li])
		for _, ch := range chunks[1:] {
			for i, v := range ch.grad[li] {
				dst[i] += v
			}
		}
	}
	return loss, correct
}

// sampleInput returns the pixels of the batch's sample s.
func (c *cnn) sampleInput(ds *data.Dataset, idx []int, s int) []float32 {
	f := ds.Features
	return ds.X[idx[s]*f : (idx[s]+1)*f]
}

// convForward runs sample s through the convolutions, leaving each layer's
// pooled output and argmax in p.
func (c *cnn) convForward(w *model.Weights, p *cnnPass, ch *cnnChunk, input []float32, s int) {
	for li, l := range c.convs {
		hw, K := l.hw(), l.k()
		cols := ch.cols[:K*hw]
		im2col(input, l.cin, l.h, l.w, cols)
		out := ch.out[:l.cout*hw]
		bias := w.Tensors[2*li+1].Data
		for co := 0; co < l.cout; co++ {
			o := out[co*hw : (co+1)*hw]
			for i := range o {
				o[i] = bias[co]
			}
		}
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, gen(l.cout, K, w.Tensors[2*li].Data), gen(K, hw, cols), 1, gen(l.cout, hw, out))
		relu(out)
		ps := l.pooled()
		pooled := p.pooled[li][s*ps : (s+1)*ps]
		maxPool(out, l.cout, l.h, l.w, pooled, p.argmax[li][s*ps:(s+1)*ps])
		input = pooled
	}
}

// convBackward adds sample s's convolution gradients into ch.grad, from
// its gradient in p.dflat.
func (c *cnn) convBackward(w *model.Weights, p *cnnPass, ch *cnnChunk, input []float32, s int) {
	dpooled := p.dflat[s*c.flat : (s+1)*c.flat]
	for li := len(c.convs) - 1; li >= 0; li-- {
		l := c.convs[li]
		hw, K, ps := l.hw(), l.k(), l.pooled()
		per := l.oh * l.ow
		// Through the pooling and the ReLU: only a window's maximum gets
		// a gradient, and only where it was positive.
		dout := ch.out[:l.cout*hw]
		clear(dout)
		pooled, arg := p.pooled[li][s*ps:(s+1)*ps], p.argmax[li][s*ps:(s+1)*ps]
		gb := ch.grad[2*li+1]
		for i, gv := range dpooled {
			if gv != 0 && pooled[i] > 0 {
				dout[arg[i]] = gv
				gb[i/per] += gv
			}
		}
		in := input
		if li > 0 {
			prev := c.convs[li-1].pooled()
			in = p.pooled[li-1][s*prev : (s+1)*prev]
		}
		rows := ch.cols[:hw*K]
		im2row(in, l.cin, l.h, l.w, rows)
		// d weight [cout, K] += d out [cout, hw] · patches [hw, K]; gonum
		// skips d out's zeros.
		blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, gen(l.cout, hw, dout), gen(hw, K, rows), 1, gen(l.cout, K, ch.grad[2*li]))
		if li == 0 {
			break
		}
		// d patches [hw, K] = d outᵀ · weight [cout, K], skipping zeros too.
		dcol := ch.dcol[:hw*K]
		blas32.Gemm(blas.Trans, blas.NoTrans, 1, gen(l.cout, hw, dout), gen(l.cout, K, w.Tensors[2*li].Data), 0, gen(hw, K, dcol))
		din := ch.din[:l.cin*hw]
		row2im(dcol, l.cin, l.h, l.w, din)
		dpooled = din
	}
}

func relu(x []float32) {
	for i, v := range x {
		if v < 0 {
			x[i] = 0
		}
	}
}

// im2col lays out a [cin, h, w] image as [cin·25, h·w] patches (zero
// padded): column y·w+x holds the 5×5×cin window centred on (y, x), in
// the order of PyTorch's conv weight [out, in, 5, 5].
func im2col(img []float32, cin, h, w int, col []float32) {
	hw := h * w
	for ci := 0; ci < cin; ci++ {
		for ky := 0; ky < kernel; ky++ {
			for kx := 0; kx < kernel; kx++ {
				row := col[((ci*kernel+ky)*kernel+kx)*hw : ((ci*kernel+ky)*kernel+kx+1)*hw]
				for y := 0; y < h; y++ {
					sy := y + ky - pad
					r := row[y*w : (y+1)*w]
					if sy < 0 || sy >= h {
						clear(r)
						continue
					}
					src := img[(ci*h+sy)*w : (ci*h+sy+1)*w]
					for x := range r {
						if sx := x + kx - pad; sx < 0 || sx >= w {
							r[x] = 0
						} else {
							r[x] = src[sx]
						}
					}
				}
			}
		}
	}
}

// im2row is im2col transposed: [h·w, cin·25], one window per row.
func im2row(img []float32, cin, h, w int, rows []float32) {
	K := cin * kernel * kernel
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			row := rows[(y*w+x)*K : (y*w+x+1)*K]
			for ci := 0; ci < cin; ci++ {
				for ky := 0; ky < kernel; ky++ {
					r := row[(ci*kernel+ky)*kernel : (ci*kernel+ky+1)*kernel]
					sy := y + ky - pad
					if sy < 0 || sy >= h {
						clear(r)
						continue
					}
					src := img[(ci*h+sy)*w : (ci*h+sy+1)*w]
					for kx := range r {
						if sx := x + kx - pad; sx < 0 || sx >= w {
							r[kx] = 0
						} else {
							r[kx] = src[sx]
						}
					}
				}
			}
		}
	}
}

// row2im adds [h·w, cin·25] window gradients back into a [cin, h, w] image
// gradient, which it overwrites.
func row2im(rows []float32, cin, h, w int, img []float32) {
	clear(img)
	K := cin * kernel * kernel
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			row := rows[(y*w+x)*K : (y*w+x+1)*K]
			for ci := 0; ci < cin; ci++ {
				for ky := 0; ky < kernel; ky++ {
					sy := y + ky - pad
					if sy < 0 || sy >= h {
						continue
					}
					r := row[(ci*kernel+ky)*kernel : (ci*kernel+ky+1)*kernel]
					dst := img[(ci*h+sy)*w : (ci*h+sy+1)*w]
					for kx, v := range r {
						if sx := x + kx - pad; sx >= 0 && sx < w {
							dst[sx] += v
						}
					}
				}
			}
		}
	}
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
// index in in; an odd last row or column is dropped, as in PyTorch.
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
