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
// cores. Activations inside the convolutions are stored channels last,
// [h, w, c], and a patch in the order (ky, kx, channel), so that each of
// its five window rows is one contiguous run of the padded input; the
// weights are permuted to match once per batch ([cnn.prepare]) and their
// gradients back. The forward pass is patches [group·h·w, K] · weightᵀ
// [K, cout] over groups of convGroup samples, ReLU and pooling fused on
// the GEMM's output; the backward pass visits only the values max-pooling
// and ReLU pass a gradient to (a quarter or less of the output) and sums
// the rows they select straight from the padded input ([sumRowsN]).
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
	// padOff holds per output position y·w+x the offset (y·(w+4)+x)·cin
	// of its window in the padded input [h+4, w+4, cin].
	padOff []int32
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
		l.padOff = make([]int32, l.hw())
		for q := range l.padOff {
			l.padOff[q] = int32((q/l.w*(l.w+2*pad) + q%l.w) * l.cin)
		}
		c.convs[i] = l
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
	pooled [][]float32 // [layer] n × pooled(): each conv layer's pooled output, [h, w, c] (the last [c, h, w]: the flat FC input)
	argmax [][]int32   // [layer] n × pooled(): each pooled value's position y·w+x in the convolution output, [h, w, c] (the last too)
	wT     [][]float32 // [layer] the conv weight as [K, cout], K in patch order (see im2row)
	wp     [][]float32 // [layer] the conv weight as [cout, K], K in patch order
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
	rows   []float32   // the patches of up to convGroup samples of the widest layer, [group·hw, K]
	out    []float32   // the convolution output of a group, [group·hw, cout]
	din    []float32   // one sample's gradient of a layer's input
	padded []float32   // one sample's layer input or its gradient with a zero border, [h+4, w+4, cin]
	pool   []float32   // one sample's last pooled output [h, w, c], before it is transposed
	grad   [][]float32 // per conv layer: d weight [cout, K] in patch order, d bias
	offs   []int32     // the rows [sumRows] sums for one sample, at most the widest pooled()
	coef   []float32   // their factors
	nzOff  []int32     // the values of one sample that get a gradient: their rows, as offs
	nzG    []float32   // their gradients
	nzQ    []int32     // their positions
	coEnd  []int32     // per channel, where its values end in nzOff
	qstart []int32     // per conv output position q, where its values start in offs; hw+1
	qnext  []int32     // per q, where its next value goes; hw
}

// convGroup is how many samples one convolution GEMM takes: their patches
// stacked, [convGroup·h·w, K].
const convGroup = 2

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
		p.wT = append(p.wT, make([]float32, l.cout*l.k()))
		p.wp = append(p.wp, make([]float32, l.cout*l.k()))
	}
	for range min(n, cnnChunks) {
		ch := &cnnChunk{}
		maxPooled, maxHW := 0, 0
		for _, l := range c.convs {
			maxPooled, maxHW = max(maxPooled, l.pooled()), max(maxHW, l.hw())
		}
		ch.offs, ch.coef = make([]int32, maxPooled), make([]float32, maxPooled)
		ch.nzOff, ch.nzG, ch.nzQ = make([]int32, maxPooled), make([]float32, maxPooled), make([]int32, maxPooled)
		maxCout := 0
		for _, l := range c.convs {
			maxCout = max(maxCout, l.cout)
		}
		ch.coEnd = make([]int32, maxCout)
		ch.qstart, ch.qnext = make([]int32, maxHW+1), make([]int32, maxHW)
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
type convBufs struct{ rows, out, din, padded, pool []float32 }

// borrow gives ch working buffers from c's pool; release returns them.
func (c *cnn) borrow(ch *cnnChunk) {
	b, _ := c.bufs.Get().(*convBufs)
	if b == nil {
		maxRows, maxOut, maxIn, maxPad := 0, 0, 0, 0
		for _, l := range c.convs {
			maxPad = max(maxPad, l.cin*(l.h+2*pad)*(l.w+2*pad))
			maxRows = max(maxRows, l.k()*l.hw()*convGroup)
			maxOut = max(maxOut, l.cout*l.hw()*convGroup)
			maxIn = max(maxIn, l.cin*l.hw())
		}
		b = &convBufs{rows: make([]float32, maxRows), out: make([]float32, maxOut),
			din: make([]float32, maxIn), padded: make([]float32, maxPad),
			pool: make([]float32, c.flat)}
	}
	ch.rows, ch.out, ch.din, ch.padded, ch.pool = b.rows, b.out, b.din, b.padded, b.pool
}

func (c *cnn) release(ch *cnnChunk) {
	c.bufs.Put(&convBufs{ch.rows, ch.out, ch.din, ch.padded, ch.pool})
	ch.rows, ch.out, ch.din, ch.padded, ch.pool = nil, nil, nil, nil, nil
}

// chunkRange returns the samples [lo, hi) of chunk i of k over n samples.
func chunkRange(i, k, n int) (lo, hi int) { return i * n / k, (i + 1) * n / k }

// patchIndex returns the index in a patch (see im2row) of the weight
// [out, in, 5, 5]'s value at (ci, ky, kx).
func patchIndex(cin, ci, ky, kx int) int { return (ky*kernel+kx)*cin + ci }

// prepare lays out the convolution weights of w in p as the GEMMs take
// them: p.wp [cout, K] and p.wT [K, cout], K in patch order.
func (c *cnn) prepare(w *model.Weights, p *cnnPass) {
	for li, l := range c.convs {
		wt, wp, wT := w.Tensors[2*li].Data, p.wp[li], p.wT[li]
		K := l.k()
		for co := 0; co < l.cout; co++ {
			src, dst := wt[co*K:(co+1)*K], wp[co*K:(co+1)*K]
			for ci := 0; ci < l.cin; ci++ {
				for kk, v := range src[ci*kernel*kernel : (ci+1)*kernel*kernel] {
					dst[kk*l.cin+ci] = v
				}
			}
		}
		transposeInto(wT, wp, l.cout, K)
	}
}

func (c *cnn) batch(w, grad *model.Weights, ds *data.Dataset, idx []int, scratch any) (float64, int) {
	p := scratch.(*cnnPass)
	n := len(idx)
	nconv := len(c.convs)
	chunks := p.chunks[:min(n, len(p.chunks))]
	for s, j := range idx {
		p.y[s] = ds.Y[j]
	}
	c.prepare(w, p)

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
	mulSetPar(H, F, n, dhidT, n, flat, F, g[2*nconv].Data, F)
	colSums(dhid, n, H, g[2*nconv+1].Data)
	mulSetPar(n, F, H, dhid, H, fc1, F, dflat, F)

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
			c.convBackward(p, ch, ds, idx, s)
		}
	})
	for li, l := range c.convs {
		for part := 2 * li; part < 2*li+2; part++ {
			sum := chunks[0].grad[part]
			for _, ch := range chunks[1:] {
				for i, v := range ch.grad[part] {
					sum[i] += v
				}
			}
		}
		gw, dst := chunks[0].grad[2*li], g[2*li].Data
		K := l.k()
		for co := 0; co < l.cout; co++ {
			for ci := 0; ci < l.cin; ci++ {
				for kk := 0; kk < kernel*kernel; kk++ {
					dst[(co*l.cin+ci)*kernel*kernel+kk] = gw[co*K+kk*l.cin+ci]
				}
			}
		}
		copy(g[2*li+1].Data, chunks[0].grad[2*li+1])
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

// layerInput returns sample s's input to conv layer li: the image
// [c, h, w], or the previous layer's pooled output [h, w, c].
func (c *cnn) layerInput(p *cnnPass, ds *data.Dataset, idx []int, li, s int) []float32 {
	if li == 0 {
		return c.sampleInput(ds, idx, s)
	}
	ps := c.convs[li-1].pooled()
	return p.pooled[li-1][s*ps : (s+1)*ps]
}

// convForward runs samples [lo, hi) of the batch through the convolutions
// as one GEMM per layer, patches [(hi−lo)·hw, K] · weight [K, cout] (from
// [cnn.prepare]), leaving each layer's pooled output and argmax in p;
// ReLU and pooling run in one pass over the GEMM's output.
func (c *cnn) convForward(w *model.Weights, p *cnnPass, ch *cnnChunk, ds *data.Dataset, idx []int, lo, hi int) {
	g := hi - lo
	for li, l := range c.convs {
		hw, K := l.hw(), l.k()
		N := g * hw
		rows := ch.rows[:N*K]
		for s := lo; s < hi; s++ {
			im2row(c.layerInput(p, ds, idx, li, s), li == 0, l.cin, l.h, l.w, rows[(s-lo)*hw*K:], ch.padded)
		}
		out := ch.out[:N*l.cout]
		bias := w.Tensors[2*li+1].Data
		for r := 0; r < N; r++ {
			copy(out[r*l.cout:(r+1)*l.cout], bias)
		}
		mulAdd(N, l.cout, K, rows, K, p.wT[li], l.cout, out, l.cout)
		ps := l.pooled()
		last := li == len(c.convs)-1
		for s := lo; s < hi; s++ {
			pooled, arg := p.pooled[li][s*ps:(s+1)*ps], p.argmax[li][s*ps:(s+1)*ps]
			if !last {
				reluPool(out[(s-lo)*hw*l.cout:], l.cout, l.h, l.w, pooled, arg)
				continue
			}
			// The FC input is channel-major, [c, h/2, w/2], as torch.flatten;
			// the positions stay [h/2, w/2, c].
			reluPool(out[(s-lo)*hw*l.cout:], l.cout, l.h, l.w, ch.pool[:ps], arg)
			transposeInto(pooled, ch.pool[:ps], l.oh*l.ow, l.cout)
		}
	}
}

// convBackward adds sample s's convolution gradients into ch.grad, from
// its gradient in p.dflat. Only a pooling window's maximum gets a
// gradient, and only where it was positive (ReLU): a quarter or less of
// the convolution output. So instead of a GEMM over a mostly zero output
// gradient, d weight[co] sums g·patch(q) and d patch(q) sums g·weight[co]
// over those values g at channel co and position q, with [sumRows]. A
// patch row is a run of the padded input (see [im2row]), so both sums
// read and write the padded input and its gradient directly, without
// laying out patches; only the first layer, whose runs are short, reads
// patches.
func (c *cnn) convBackward(p *cnnPass, ch *cnnChunk, ds *data.Dataset, idx []int, s int) {
	dpooled := p.dflat[s*c.flat : (s+1)*c.flat]
	for li := len(c.convs) - 1; li >= 0; li-- {
		l := c.convs[li]
		hw, K, ps := l.hw(), l.k(), l.pooled()
		per := l.oh * l.ow
		last := li == len(c.convs)-1
		pw, run := l.w+2*pad, kernel*l.cin
		in := c.layerInput(p, ds, idx, li, s)
		pooled, arg := p.pooled[li][s*ps:(s+1)*ps], p.argmax[li][s*ps:(s+1)*ps]
		gw, gb, wp := ch.grad[2*li], ch.grad[2*li+1], p.wp[li]
		short := run < 16
		var src []float32 // the patches, or the padded input
		if short {
			src = ch.rows[:hw*K]
			im2row(in, li == 0, l.cin, l.h, l.w, src, ch.padded)
		} else {
			src = padInto(in, li == 0, l.cin, l.h, l.w, ch.padded)
		}
		// The values that get a gradient, channel by channel: their rows
		// (offsets in src), gradients and positions.
		nzOff, nzG, nzQ := ch.nzOff, ch.nzG, ch.nzQ
		nz := 0
		ends := ch.coEnd[:l.cout]
		for co := 0; co < l.cout; co++ {
			i, stride := co, l.cout // in pooled, dpooled; arg[a] is [h/2, w/2, c]
			if last {
				i, stride = co*per, 1
			}
			a := co
			// Without branches: each value is written at nz, which moves
			// on only where it has a gradient (pooled > 0 after ReLU, as
			// bits, and g ≠ 0); the bias sums +0 for the others, which
			// leaves a sum from +0 as it is.
			sum := gb[co]
			for pos := 0; pos < per; pos, i, a = pos+1, i+stride, a+l.cout {
				gv := dpooled[i]
				pb := int32(math.Float32bits(pooled[i]))
				gz := int32(math.Float32bits(gv) &^ (1 << 31))
				keep := (-pb >> 31) & (-gz >> 31) // −1 or 0
				q := arg[a]
				nzQ[nz], nzG[nz] = q, gv
				if short {
					nzOff[nz] = q * int32(K)
				} else {
					nzOff[nz] = l.padOff[q]
				}
				sum += math.Float32frombits(math.Float32bits(gv) & uint32(keep))
				nz -= int(keep)
			}
			gb[co] = sum
			ends[co] = int32(nz)
		}
		// d weight, channel by channel.
		from := int32(0)
		for co := 0; co < l.cout; co++ {
			offs, coef := nzOff[from:ends[co]], nzG[from:ends[co]]
			from = ends[co]
			if short {
				sumRows(gw[co*K:(co+1)*K], src, offs, coef)
				continue
			}
			// Five window rows: runs of gw[co] and rows of the padded input.
			sumRowsN(run, kernel, gw[co*K:(co+1)*K], run, src, pw*l.cin, offs, coef)
		}
		if li == 0 {
			break
		}
		// d input: the values by position q, then per q its five runs.
		start, next, offs, coef := ch.qstart[:hw+1], ch.qnext[:hw], ch.offs, ch.coef
		clear(start)
		for _, q := range nzQ[:nz] {
			start[q+1]++
		}
		for q := 0; q < hw; q++ {
			start[q+1] += start[q]
		}
		copy(next, start[:hw])
		from = 0
		for co := 0; co < l.cout; co++ {
			for j := from; j < ends[co]; j++ {
				q := nzQ[j]
				offs[next[q]], coef[next[q]] = int32(co*K), nzG[j]
				next[q]++
			}
			from = ends[co]
		}
		dpad := ch.padded[:(l.h+2*pad)*pw*l.cin]
		clear(dpad)
		for q := 0; q < hw; q++ {
			o, e := start[q], start[q+1]
			if o == e {
				continue
			}
			y, x := q/l.w, q%l.w
			at := (y*pw + x) * l.cin
			sumRowsN(run, kernel, dpad[at:], pw*l.cin, wp, run, offs[o:e], coef[o:e])
		}
		din := ch.din[:l.cin*hw]
		for y := 0; y < l.h; y++ {
			copy(din[y*l.w*l.cin:(y+1)*l.w*l.cin], dpad[((y+pad)*pw+pad)*l.cin:])
		}
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

// padInto copies an image, [cin, h, w] when chw, else [h, w, cin], into
// padded as [h+4, w+4, cin] with a zero border, and returns that part of
// padded.
func padInto(img []float32, chw bool, cin, h, w int, padded []float32) []float32 {
	ph, pw := h+2*pad, w+2*pad
	padded = padded[:ph*pw*cin]
	// The border only: the copy below overwrites the inside.
	row := pw * cin
	clear(padded[:pad*row])
	clear(padded[(pad+h)*row:])
	for y := pad; y < pad+h; y++ {
		clear(padded[y*row : y*row+pad*cin])
		clear(padded[y*row+(pad+w)*cin : (y+1)*row])
	}
	switch {
	case chw && cin > 1:
		for ci := 0; ci < cin; ci++ {
			for y := 0; y < h; y++ {
				src := img[(ci*h+y)*w : (ci*h+y+1)*w]
				dst := padded[((y+pad)*pw+pad)*cin+ci:]
				for x, v := range src {
					dst[x*cin] = v
				}
			}
		}
	default: // [h, w, cin], or one channel
		for y := 0; y < h; y++ {
			copy(padded[((y+pad)*pw+pad)*cin:], img[y*w*cin:(y+1)*w*cin])
		}
	}
	return padded
}

// im2row lays out an image's 5×5 windows (zero padded) as the rows of
// rows, [h·w, cin·25]: row y·w+x holds the window centred on (y, x) in
// patch order, ky, kx, then channel (see [patchIndex]), so that each of
// its five window rows is one run of 5·cin values of the image stored
// channels last. The image is [cin, h, w] when chw, else [h, w, cin]; it
// is first copied into padded, [h+4, w+4, cin] with a zero border.
func im2row(img []float32, chw bool, cin, h, w int, rows, padded []float32) {
	K := cin * kernel * kernel
	pw := w + 2*pad
	padded = padInto(img, chw, cin, h, w, padded)
	run := kernel * cin
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			row := rows[(y*w+x)*K : (y*w+x+1)*K]
			for ky := 0; ky < kernel; ky++ {
				off := ((y+ky)*pw + x) * cin
				r, src := row[ky*run:(ky+1)*run], padded[off:off+run]
				if run == kernel {
					r, src = r[:kernel:kernel], src[:kernel:kernel]
					r[0], r[1], r[2], r[3], r[4] = src[0], src[1], src[2], src[3], src[4]
					continue
				}
				copy(r, src)
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

// reluPool applies ReLU and pools 2×2 the [h, w, c] maps in, into
// [h/2, w/2, c], recording each window's maximum as its position y·w+x
// in in; an odd last row or column is dropped, as in PyTorch. The maximum
// of the ReLU is the ReLU of the maximum; where it is 0 the position is
// not used. After ReLU the values are ≥ +0, whose bit patterns order as
// integers do: the comparisons run on those, as int32 compares in
// poolRow16 where AVX-512 allows, else as conditional moves instead of
// branches that the random signs would mispredict.
func reluPool(in []float32, c, h, w int, out []float32, arg []int32) {
	oh, ow := h/2, w/2
	if oh == 0 || ow == 0 {
		return
	}
	_, _, _ = in[(2*oh*w-1)*c], out[oh*ow*c-1], arg[oh*ow*c-1]
	if hasAVX512 && c%16 == 0 {
		for y := 0; y < oh; y++ {
			poolRow16(&in[2*y*w*c], c, w, ow, &out[y*ow*c], &arg[y*ow*c], 2*y*w)
		}
		return
	}
	bits := func(v float32) int32 { // ReLU, as ordered integer bits
		u := int32(math.Float32bits(v))
		return u &^ (u >> 31)
	}
	for y := 0; y < oh; y++ {
		for x := 0; x < ow; x++ {
			q00 := 2*y*w + 2*x
			q01, q10, q11 := int32(q00+1), int32(q00+w), int32(q00+w+1)
			p00 := q00 * c
			p01, p10 := p00+c, p00+w*c
			p11 := p10 + c
			r00, r01, r10, r11 := in[p00:p00+c], in[p01:p01+c], in[p10:p10+c], in[p11:p11+c]
			o, a := out[(y*ow+x)*c:][:c], arg[(y*ow+x)*c:][:c]
			for ch := range r00 {
				best, bi := bits(r00[ch]), int32(q00)
				if v := bits(r01[ch]); v > best {
					best, bi = v, q01
				}
				if v := bits(r10[ch]); v > best {
					best, bi = v, q10
				}
				if v := bits(r11[ch]); v > best {
					best, bi = v, q11
				}
				o[ch], a[ch] = math.Float32frombits(uint32(best)), bi
			}
		}
	}
}
