package train

import (
	"context"
	"fmt"
	"hash/fnv"
	"strings"
	"time"

	"github.com/cohortfl/cohort/data"
	"github.com/cohortfl/cohort/model"
)

// TransferKind is the model kind of the [Transfer] trainer (the job's
// model: {kind: transfer, params: N}).
const TransferKind = "transfer"

// TransferTensorParams is the most parameters one tensor of a [Transfer]
// model holds (1 GiB of float32s); a larger model is split into several.
const TransferTensorParams = 1 << 28

// TransferNoise is the half-width of the uniform noise [Transfer.Train]
// adds to every parameter.
const TransferNoise = 1e-3

// Transfer is the transfer-only trainer: it does not train. Its Train
// returns at once a copy of the weights it received with small uniform
// noise added, the same for the same site, seed and weights, and reports
// the dataset's size as its samples, so that a job measures what the
// orchestrator itself costs (sending, receiving, aggregating and storing
// the model) at any model size. Its Evaluate reports no samples: the
// model has no accuracy, and the coordinator reports none.
type Transfer struct {
	params int64
}

var _ Trainer = (*Transfer)(nil)

// NewTransfer returns a transfer-only trainer whose Init makes models of
// params float32 parameters. params 0 makes a trainer that can train and
// evaluate any weights but not Init them: the sites' trainers, whose
// initial model comes from the coordinator.
func NewTransfer(params int64) (*Transfer, error) {
	if params < 0 {
		return nil, fmt.Errorf("%w: a transfer model of %d parameters; give a positive number (model.params)", ErrConfig, params)
	}
	return &Transfer{params: params}, nil
}

// Params returns the number of parameters Init makes.
func (t *Transfer) Params() int64 { return t.params }

// Init returns params parameters drawn uniformly from [-0.05, 0.05), the
// same for the same seed, in tensors "transfer.0", "transfer.1", … of at
// most [TransferTensorParams] each.
func (t *Transfer) Init(seed int64) (*model.Weights, error) {
	if t.params <= 0 {
		return nil, fmt.Errorf("%w: the transfer trainer has no parameter count; the coordinator makes a transfer model's initial weights from model.params", ErrConfig)
	}
	w := &model.Weights{}
	left := t.params
	for i := 0; left > 0; i++ {
		n := min(left, TransferTensorParams)
		d := make([]float32, n)
		addUniform(d, d, 0, mix(uint64(seed), uint64(i)), 0.05)
		w.Tensors = append(w.Tensors, model.Tensor{Name: fmt.Sprintf("transfer.%d", i), Shape: []int{int(n)}, Data: d})
		left -= n
	}
	return w, nil
}

// Train returns w plus uniform noise in ±[TransferNoise], drawn from
// cfg.Seed (the job's seed and the round) and the site's name (from the
// task's worker key in ctx): deterministic per site and round. It reports
// ds.N samples, no loss and no steps.
func (t *Transfer) Train(ctx context.Context, w *model.Weights, ds *data.Dataset, cfg TrainConfig) (*model.Weights, TrainResult, error) {
	start := time.Now()
	if w == nil {
		return nil, TrainResult{}, fmt.Errorf("%w: no weights to send back", ErrConfig)
	}
	site := transferSite(ctx, ds)
	out := &model.Weights{Tensors: make([]model.Tensor, len(w.Tensors))}
	for i, tn := range w.Tensors {
		if err := ctx.Err(); err != nil {
			return nil, TrainResult{}, err
		}
		d := make([]float32, len(tn.Data))
		addUniform(d, tn.Data, 0, noiseSeed(cfg, site, i), TransferNoise)
		out.Tensors[i] = model.Tensor{Name: tn.Name, Shape: append([]int(nil), tn.Shape...), Data: d}
	}
	res := transferResult(ds, cfg)
	res.Seconds = time.Since(start).Seconds()
	return out, res, nil
}

// TrainStream is [Transfer.Train] for a model that the caller streams
// past rather than holds: it returns the function that turns a run of the
// model's values — tensor t's from index off — into the update's in place,
// bit for bit what Train returns there, whatever the runs and their order,
// and the result Train reports but its Seconds (the caller does the work).
// The function returns ctx's error once ctx is done. A site agent sends
// the update back as the global model arrives, holding neither.
func (t *Transfer) TrainStream(ctx context.Context, ds *data.Dataset, cfg TrainConfig) (func(t, off int, vals []float32) error, TrainResult, error) {
	site := transferSite(ctx, ds)
	perturb := func(i, off int, vals []float32) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		addUniform(vals, vals, off, noiseSeed(cfg, site, i), TransferNoise)
		return nil
	}
	return perturb, transferResult(ds, cfg), nil
}

// noiseSeed seeds the noise of tensor i of site's update.
func noiseSeed(cfg TrainConfig, site uint64, i int) uint64 {
	return mix(uint64(cfg.Seed), site, uint64(i))
}

// transferResult is what a transfer "training" reports but its seconds.
func transferResult(ds *data.Dataset, cfg TrainConfig) TrainResult {
	var n int64
	if ds != nil {
		n = int64(ds.N)
	}
	return TrainResult{NumSamples: n, Epochs: cfg.Epochs}
}

// Evaluate reports no samples, no loss and no accuracy: a transfer model
// has nothing to evaluate, and w may be nil.
func (t *Transfer) Evaluate(ctx context.Context, w *model.Weights, ds *data.Dataset) (EvalResult, error) {
	return EvalResult{}, ctx.Err()
}

// transferSite identifies the training site: the site part of the task's
// worker key ("site/job/arm"), else the dataset's name and size.
func transferSite(ctx context.Context, ds *data.Dataset) uint64 {
	h := fnv.New64a()
	if wk := TaskFrom(ctx).Worker; wk != "" {
		site, _, _ := strings.Cut(wk, "/")
		h.Write([]byte(site))
	} else if ds != nil {
		fmt.Fprintf(h, "%s/%d", ds.Name, ds.N)
	}
	return h.Sum64()
}

// mix combines its arguments into one seed.
func mix(xs ...uint64) uint64 {
	s := uint64(golden)
	for _, x := range xs {
		s = splitmix(s ^ x)
	}
	return s
}

// splitmix is SplitMix64's output function of state s.
func splitmix(s uint64) uint64 {
	s += golden
	s = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9
	s = (s ^ (s >> 27)) * 0x94d049bb133111eb
	return s ^ (s >> 31)
}

// golden is SplitMix64's state increment.
const golden = 0x9e3779b97f4a7c15

// addUniform sets d to base plus values uniform in [-half, half), d and
// base being a tensor's values from index off (base may be d: the noise
// is added in place). The values come from a SplitMix64 stream seeded by
// seed, two per 64-bit draw, draw k for indices 2k and 2k+1, so that any
// run of the tensor gets what the whole tensor would.
func addUniform(d, base []float32, off int, seed uint64, half float32) {
	const scale = 2.0 / (1 << 24)
	base = base[:len(d)]
	i := 0
	if off%2 == 1 && len(d) > 0 { // the second value of draw off/2
		z := splitmix(seed + uint64(off/2)*golden)
		d[0] = base[0] + (float32((z>>8)&(1<<24-1))*scale-1)*half
		i = 1
	}
	s := seed + uint64((off+i)/2)*golden
	n := i + (len(d)-i)&^1
	for ; i < n; i += 2 {
		s += golden
		z := (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9
		z = (z ^ (z >> 27)) * 0x94d049bb133111eb
		z ^= z >> 31
		d[i] = base[i] + (float32(z>>40)*scale-1)*half
		d[i+1] = base[i+1] + (float32((z>>8)&(1<<24-1))*scale-1)*half
	}
	if n < len(d) {
		z := splitmix(s)
		d[n] = base[n] + (float32(z>>40)*scale-1)*half
	}
}
