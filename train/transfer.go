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
		fillUniform(d, nil, mix(uint64(seed), uint64(i)), 0.05)
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
		fillUniform(d, tn.Data, mix(uint64(cfg.Seed), site, uint64(i)), TransferNoise)
		out.Tensors[i] = model.Tensor{Name: tn.Name, Shape: append([]int(nil), tn.Shape...), Data: d}
	}
	var n int64
	if ds != nil {
		n = int64(ds.N)
	}
	return out, TrainResult{NumSamples: n, Epochs: cfg.Epochs, Seconds: time.Since(start).Seconds()}, nil
}

// Evaluate reports no samples, no loss and no accuracy: a transfer model
// has nothing to evaluate.
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
	s := uint64(0x9e3779b97f4a7c15)
	for _, x := range xs {
		s = splitmix(s ^ x)
	}
	return s
}

// splitmix is SplitMix64's output function of state s.
func splitmix(s uint64) uint64 {
	s += 0x9e3779b97f4a7c15
	s = (s ^ (s >> 30)) * 0xbf58476d1ce4e5b9
	s = (s ^ (s >> 27)) * 0x94d049bb133111eb
	return s ^ (s >> 31)
}

// fillUniform sets d to base (zeros when nil) plus values uniform in
// [-half, half) from a SplitMix64 stream seeded by seed: two values per
// 64-bit draw.
func fillUniform(d, base []float32, seed uint64, half float32) {
	const scale = 2.0 / (1 << 24)
	if base == nil {
		base = d // d is zeros
	}
	base = base[:len(d)]
	s := seed
	n := len(d) &^ 1
	for i := 0; i < n; i += 2 {
		s += 0x9e3779b97f4a7c15
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
