package train

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"

	"github.com/cohortfl/cohort/data"
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
// cores. Convolutions run as im2col + GEMM over groups of convGroup
// samples, ReLU and pooling fused on the GEMM's output; the backward pass
// works on the patches as rows and visits only the values max-pooling and
// ReLU pass a gradient to (a quarter or less of the output).
type cnn struct {
	in      [3]int // C, H, W
	convs   []convLayer
	flat    int
	hidden  int
	classes int
	layout  []model.Tensor
	bufs    sync.Pool // of *convBufs
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
	argmax [][]int32   // [layer] n × pooled(): each pooled value's index in the sample's conv output
	flatT  []float32   // [flat, n]: the FC input transposed
	hidT   []float32   // [hidden, n] after ReLU
	hid    []float32   // [n, hidden] after ReLU
	logT   []float32   // [classes, n]
	logits []float32   // [n, classes]
	dlog   []float32   // [n, classes]
	dlogT  []float32   // [classes, n]
	dhid   []float32   // [n, hidden]
	dhidT  []float32   // [hidden, n]
	dflat  []float32   // [n, flat]
	y      []uint8
	chunks []*cnnChunk
}

// cnnChunk is one slice of a batch: its working buffers while it runs
// (see [cnn.borrow]) and its sum of convolution gradients.
type cnnChunk struct {
	cols   []float32   // the patches of up to convGroup samples of the widest layer, [K, group·hw]; one sample's [hw, K] backward
	out    []float32   // the convolution output of a group, [cout, group·hw]
	dcol   []float32   // one sample's patch gradients [hw, K]
	din    []float32   // one sample's gradient of a layer's input
	padded []float32   // one sample's layer input or its gradient with a zero border, [cin, h+4, w+4]
	grad   [][]float32 // per conv layer: d weight, d bias
}

// convGroup is how many samples one convolution GEMM takes: their patches
// side by side, [K, convGroup·h·w], so that the product runs over long
// rows.
const convGroup = 4

func (c *cnn) scratch(n int) any {
	p := &cnnPass{
		flatT: make([]float32, c.flat*n), hidT: make([]float32, c.hidden*n), hid: make([]float32, n*c.hidden),
		logT: make([]float32, c.classes*n), logits: make([]float32, n*c.classes),
		dlog: make([]float32, n*c.classes), dlogT: make([]float32, c.classes*n),
		dhid: make([]float32, n*c.hidden), dhidT: make([]float32, c.hidden*n), dflat: make([]float32, n*c.flat),
		y: make([]uint8, n)}
	for _, l := range c.convs {
		p.pooled = append(p.pooled, make([]float32, n*l.pooled()))
		p.argmax = append(p.argmax, make([]int32, n*l.pooled()))
	}
	for range min(n, cnnChunks) {
		ch := &cnnChunk{}
		for _, l := range c.convs {
			ch.grad = append(ch.grad, make([]float32, l.cout*l.k()), make([]float32, l.cout))
		}
		p.chunks = append(p.chunks, ch)
	}
	return p
}

// convBufs are a chunk's working buffers while it runs: taken from the
// trainer's pool for the time of one parallel pass, so that each Train
// call does not allocate (and clear) tens of MB for them. Every use
// overwrites what it reads.
type convBufs struct{ cols, out, dcol, din, padded []float32 }

// borrow gives ch working buffers from c's pool; release returns them.
func (c *cnn) borrow(ch *cnnChunk) {
	b, _ := c.bufs.Get().(*convBufs)
	if b == nil {
		maxCols, maxOut, maxIn, maxPad := 0, 0, 0, 0
		for _, l := range c.convs {
			maxPad = max(maxPad, l.cin*(l.h+2*pad)*(l.w+2*pad))
			maxCols = max(maxCols, l.k()*l.hw()*convGroup)
			maxOut = max(maxOut, l.cout*l.hw()*convGroup)
			maxIn = max(maxIn, l.cin*l.hw())
		}
		b = &convBufs{cols: make([]float32, maxCols), out: make([]float32, maxOut),
			dcol: make([]float32, maxCols/convGroup), din: make([]float32, maxIn), padded: make([]float32, maxPad)}
	}
	ch.cols, ch.out, ch.dcol, ch.din, ch.padded = b.cols, b.out, b.dcol, b.din, b.padded
}

func (c *cnn) release(ch *cnnChunk) {
	c.bufs.Put(&convBufs{ch.cols, ch.out, ch.dcol, ch.din, ch.padded})
	ch.cols, ch.out, ch.dcol, ch.din, ch.padded = nil, nil, nil, nil, nil
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

	// Convolutions forward, slices of the batch in parallel, each in
	// groups of convGroup samples.
	parallel(len(chunks), func(ci int) {
		c.borrow(chunks[ci])
		defer c.release(chunks[ci])
		lo, hi := chunkRange(ci, len(chunks), n)
		for s := lo; s < hi; s += convGroup {
			c.convForward(w, p, chunks[ci], ds, idx, s, min(s+convGroup, hi))
		}
	})

	// The dense layers, batched. They run on transposed activations
	// (features × samples) so that every product is a plain A·B over the
	// weights as they are: hᵀ = W·xᵀ.
	H, C, F := c.hidden, c.classes, c.flat
	flat := p.pooled[nconv-1][:n*F]
	fc1, fc1b := w.Tensors[2*nconv].Data, w.Tensors[2*nconv+1].Data
	fc2, fc2b := w.Tensors[2*nconv+2].Data, w.Tensors[2*nconv+3].Data
	flatT, hidT, hid, logT, logits := p.flatT[:F*n], p.hidT[:H*n], p.hid[:n*H], p.logT[:C*n], p.logits[:n*C]
	transposeInto(flatT, flat, n, F)
	fillRows(hidT, fc1b, n)
	mulAddPar(H, n, F, fc1, F, flatT, n, hidT, n)
	relu(hidT)
	fillRows(logT, fc2b, n)
	mulAdd(C, n, H, fc2, H, hidT, n, logT, n)
	transposeInto(logits, logT, C, n)
	scale := float32(1)
	if grad != nil {
		scale = float32(n)
	}
	loss, correct := softmaxCE(logits, p.y, n, C, p.dlog, scale)
	if grad == nil {
		return loss, correct
	}
	g := grad.Tensors
	dlog, dlogT, dhid, dhidT, dflat := p.dlog[:n*C], p.dlogT[:C*n], p.dhid[:n*H], p.dhidT[:H*n], p.dflat[:n*F]
	transposeInto(hid, hidT, H, n)
	transposeInto(dlogT, dlog, n, C)
	clear(g[2*nconv+2].Data)
	mulAdd(C, H, n, dlogT, n, hid, H, g[2*nconv+2].Data, H)
	colSums(dlog, n, C, g[2*nconv+3].Data)
	clear(dhid)
	mulAdd(n, H, C, dlog, C, fc2, H, dhid, H)
	reluGrad(dhid, hid)
	transposeInto(dhidT, dhid, n, H)
	clear(g[2*nconv].Data)
	mulAddPar(H, F, n, dhidT, n, flat, F, g[2*nconv].Data, F)
	colSums(dhid, n, H, g[2*nconv+1].Data)
	clear(dflat)
	mulAddPar(n, F, H, dhid, H, fc1, F, dflat, F)

	// Convolutions backward, slices in parallel, then their sums in order.
	parallel(len(chunks), func(ci int) {
		ch := chunks[ci]
		c.borrow(ch)
		defer c.release(ch)
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

// fillRows sets each row r of the rows×n matrix m to v[r].
func fillRows(m, v []float32, n int) {
	for r, b := range v {
		row := m[r*n : (r+1)*n]
		for i := range row {
			row[i] = b
		}
	}
}

// sampleInput returns the pixels of the batch's sample s.
func (c *cnn) sampleInput(ds *data.Dataset, idx []int, s int) []float32 {
	f := ds.Features
	return ds.X[idx[s]*f : (idx[s]+1)*f]
}

// layerInput returns sample s's input to conv layer li.
func (c *cnn) layerInput(p *cnnPass, ds *data.Dataset, idx []int, li, s int) []float32 {
	if li == 0 {
		return c.sampleInput(ds, idx, s)
	}
	ps := c.convs[li-1].pooled()
	return p.pooled[li-1][s*ps : (s+1)*ps]
}

// convForward runs samples [lo, hi) of the batch through the convolutions
// as one GEMM per layer, weight [cout, K] · patches [K, (hi−lo)·hw],
// leaving each layer's pooled output and argmax in p; ReLU and pooling
// run in one pass over the GEMM's output.
func (c *cnn) convForward(w *model.Weights, p *cnnPass, ch *cnnChunk, ds *data.Dataset, idx []int, lo, hi int) {
	g := hi - lo
	for li, l := range c.convs {
		hw, K := l.hw(), l.k()
		N := g * hw
		cols := ch.cols[:K*N]
		for s := lo; s < hi; s++ {
			im2col(c.layerInput(p, ds, idx, li, s), l.cin, l.h, l.w, cols[(s-lo)*hw:], N)
		}
		out := ch.out[:l.cout*N]
		fillRows(out, w.Tensors[2*li+1].Data, N)
		mulAdd(l.cout, N, K, w.Tensors[2*li].Data, K, cols, N, out, N)
		ps := l.pooled()
		for s := lo; s < hi; s++ {
			reluPool(out[(s-lo)*hw:], N, l.cout, l.h, l.w, p.pooled[li][s*ps:(s+1)*ps], p.argmax[li][s*ps:(s+1)*ps])
		}
	}
}

// convBackward adds sample s's convolution gradients into ch.grad, from
// its gradient in p.dflat. Only a pooling window's maximum gets a
// gradient, and only where it was positive (ReLU): a quarter or less of
// the convolution output. So instead of a GEMM over a mostly zero output
// gradient, each such value g at channel co and position q adds
// g·patch(q) to d weight[co] and g·weight[co] to d patch(q).
func (c *cnn) convBackward(w *model.Weights, p *cnnPass, ch *cnnChunk, input []float32, s int) {
	dpooled := p.dflat[s*c.flat : (s+1)*c.flat]
	for li := len(c.convs) - 1; li >= 0; li-- {
		l := c.convs[li]
		hw, K, ps := l.hw(), l.k(), l.pooled()
		per := l.oh * l.ow
		in := input
		if li > 0 {
			prev := c.convs[li-1].pooled()
			in = p.pooled[li-1][s*prev : (s+1)*prev]
		}
		rows := ch.cols[:hw*K]
		im2row(in, l.cin, l.h, l.w, rows, ch.padded)
		var dcol []float32
		if li > 0 {
			dcol = ch.dcol[:hw*K]
			clear(dcol)
		}
		pooled, arg := p.pooled[li][s*ps:(s+1)*ps], p.argmax[li][s*ps:(s+1)*ps]
		gw, gb, wt := ch.grad[2*li], ch.grad[2*li+1], w.Tensors[2*li].Data
		for i, gv := range dpooled {
			if gv == 0 || pooled[i] <= 0 {
				continue
			}
			co := i / per
			q := int(arg[i]) - co*hw
			gb[co] += gv
			axpy(gv, rows[q*K:(q+1)*K], gw[co*K:(co+1)*K])
			if dcol != nil {
				axpy(gv, wt[co*K:(co+1)*K], dcol[q*K:(q+1)*K])
			}
		}
		if li == 0 {
			break
		}
		din := ch.din[:l.cin*hw]
		row2im(dcol, l.cin, l.h, l.w, din, ch.padded)
		dpooled = din
	}
}

// relu sets x's negative values (and NaNs with the sign bit set) to 0,
// without branches: the sign is random, and a branch on it mispredicts.
func relu(x []float32) {
	for i, v := range x {
		u := math.Float32bits(v)
		x[i] = math.Float32frombits(u &^ uint32(int32(u)>>31))
	}
}

// reluGrad sets g[i] to 0 where the ReLU output act[i] is 0, without
// branches.
func reluGrad(g, act []float32) {
	g = g[:len(act)]
	for i, v := range act {
		a := int32(math.Float32bits(v)) // ≥ 0 after relu
		g[i] = math.Float32frombits(math.Float32bits(g[i]) & uint32((a|-a)>>31))
	}
}

// im2col lays out a [cin, h, w] image as [cin·25, h·w] patches (zero
// padded) in the rows of col, which are ld apart: column y·w+x holds the
// 5×5×cin window centred on (y, x), in the order of PyTorch's conv weight
// [out, in, 5, 5].
func im2col(img []float32, cin, h, w int, col []float32, ld int) {
	hw := h * w
	for ci := 0; ci < cin; ci++ {
		for ky := 0; ky < kernel; ky++ {
			for kx := 0; kx < kernel; kx++ {
				k := (ci*kernel+ky)*kernel + kx
				row := col[k*ld : k*ld+hw]
				for y := 0; y < h; y++ {
					sy := y + ky - pad
					r := row[y*w : (y+1)*w]
					if sy < 0 || sy >= h {
						clear(r)
						continue
					}
					src := img[(ci*h+sy)*w : (ci*h+sy+1)*w]
					// x + kx − pad inside [0, w) for x in [x0, x1).
					x0 := min(w, max(0, pad-kx))
					x1 := max(x0, min(w, w+pad-kx))
					clear(r[:x0])
					copy(r[x0:x1], src[x0+kx-pad:x1+kx-pad])
					clear(r[x1:])
				}
			}
		}
	}
}

// im2row is im2col transposed: [h·w, cin·25], one window per row. It
// copies the image into padded, [cin, h+4, w+4] with a zero border, so
// that every window is five plain 5-value copies without bounds tests.
func im2row(img []float32, cin, h, w int, rows, padded []float32) {
	K := cin * kernel * kernel
	ph, pw := h+2*pad, w+2*pad
	padded = padded[:cin*ph*pw]
	clear(padded)
	for ci := 0; ci < cin; ci++ {
		for y := 0; y < h; y++ {
			copy(padded[(ci*ph+y+pad)*pw+pad:], img[(ci*h+y)*w:(ci*h+y+1)*w])
		}
	}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			row := rows[(y*w+x)*K : (y*w+x+1)*K]
			for ci := 0; ci < cin; ci++ {
				for ky := 0; ky < kernel; ky++ {
					r := row[(ci*kernel+ky)*kernel:][:kernel:kernel]
					off := (ci*ph+y+ky)*pw + x
					src := padded[off : off+kernel : off+kernel]
					r[0], r[1], r[2], r[3], r[4] = src[0], src[1], src[2], src[3], src[4]
				}
			}
		}
	}
}

// row2im adds [h·w, cin·25] window gradients back into a [cin, h, w] image
// gradient, which it overwrites. It sums into padded, [cin, h+4, w+4],
// without bounds tests, and copies the inside out.
func row2im(rows []float32, cin, h, w int, img, padded []float32) {
	K := cin * kernel * kernel
	ph, pw := h+2*pad, w+2*pad
	padded = padded[:cin*ph*pw]
	clear(padded)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			row := rows[(y*w+x)*K : (y*w+x+1)*K]
			for ci := 0; ci < cin; ci++ {
				for ky := 0; ky < kernel; ky++ {
					r := row[(ci*kernel+ky)*kernel:][:kernel:kernel]
					off := (ci*ph+y+ky)*pw + x
					dst := padded[off : off+kernel : off+kernel]
					dst[0] += r[0]
					dst[1] += r[1]
					dst[2] += r[2]
					dst[3] += r[3]
					dst[4] += r[4]
				}
			}
		}
	}
	for ci := 0; ci < cin; ci++ {
		for y := 0; y < h; y++ {
			copy(img[(ci*h+y)*w:(ci*h+y+1)*w], padded[(ci*ph+y+pad)*pw+pad:])
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

// reluPool applies ReLU and pools 2×2 the [c, h, w] maps whose channels
// lie ld apart in in, into [c, h/2, w/2], recording each window's maximum
// as its index in a [c, h, w] map; an odd last row or column is dropped,
// as in PyTorch. The maximum of the ReLU is the ReLU of the maximum; where
// it is 0 the index is not used. After ReLU the values are ≥ +0, whose
// bit patterns order as integers do: the comparisons run on those, which
// the compiler turns into conditional moves instead of branches that the
// random signs would mispredict.
func reluPool(in []float32, ld, c, h, w int, out []float32, arg []int32) {
	oh, ow := h/2, w/2
	bits := func(v float32) int32 { // ReLU, as ordered integer bits
		u := int32(math.Float32bits(v))
		return u &^ (u >> 31)
	}
	for ch := 0; ch < c; ch++ {
		m := in[ch*ld : ch*ld+h*w]
		for y := 0; y < oh; y++ {
			r0, r1 := m[2*y*w:(2*y+1)*w], m[(2*y+1)*w:(2*y+2)*w]
			r0, r1 = r0[:2*ow], r1[:2*ow]
			o := (ch*oh + y) * ow
			base := int32((ch*h + 2*y) * w)
			for x := 0; x < ow; x++ {
				best, bi := bits(r0[2*x]), int32(2*x)
				if v := bits(r0[2*x+1]); v > best {
					best, bi = v, int32(2*x+1)
				}
				if v := bits(r1[2*x]); v > best {
					best, bi = v, int32(w+2*x)
				}
				if v := bits(r1[2*x+1]); v > best {
					best, bi = v, int32(w+2*x+1)
				}
				out[o+x], arg[o+x] = math.Float32frombits(uint32(best)), base+bi
			}
		}
	}
}
