package aggregators

import (
	"fmt"
	"math"
	"runtime"
	"sync"

	"github.com/cohortfl/cohort/model"
)

// FedAvg is federated averaging (McMahan et al., 2017): the next global
// model is the mean of the sites' weights, each weighted by its sample
// count, applied with a server learning rate η: w ← w + η·(avg − w). With
// η = 1 the next model is the weighted mean itself. The zero value is plain
// FedAvg.
type FedAvg struct {
	// ServerLR is η; 0 means 1.
	ServerLR float64
}

var _ Strategy = (*FedAvg)(nil)

// Name returns "fedavg".
func (f *FedAvg) Name() string { return "fedavg" }

// Begin validates global (consistent and finite, else [ErrBadGlobal]) and
// starts a round over it. The round allocates its sum, one float32 per
// parameter, here.
func (f *FedAvg) Begin(global *model.Weights) (Round, error) {
	lr := f.ServerLR
	if lr == 0 {
		lr = 1
	}
	if !(lr > 0) || math.IsInf(lr, 0) {
		return nil, fmt.Errorf("fedavg: server learning rate %v must be positive", f.ServerLR)
	}
	if err := global.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadGlobal, err)
	}
	if err := global.CheckFinite(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadGlobal, err)
	}
	r := &avgRound{global: global, lr: lr, acc: make([][]float32, len(global.Tensors))}
	for i, t := range global.Tensors {
		r.acc[i] = make([]float32, len(t.Data))
	}
	r.plan = newPlan(global, runtime.GOMAXPROCS(0))
	r.norms = make([]float32, len(r.plan))
	r.okScan = make([]bool, len(r.plan))
	r.norm2 = make([]float64, len(r.plan))
	r.finite = make([]bool, len(r.plan))
	return r, nil
}

// FedProx is FedProx (Li et al., 2020) on the server: aggregation is
// FedAvg's. Mu is forwarded to the sites, whose local objective adds the
// proximal term μ/2·‖w − w_global‖².
type FedProx struct {
	FedAvg
	// Mu is the proximal coefficient μ ≥ 0.
	Mu float64
}

var _ Strategy = (*FedProx)(nil)

// Name returns "fedprox".
func (f *FedProx) Name() string { return "fedprox" }

// avgRound is FedAvg's running aggregate: acc = Σ a_k·w_k in float32,
// where a_k = float32(n_k/n_1) is site k's sample count relative to the
// first update's, and wsum = Σ a_k in float64. The mean is acc/wsum: the
// normalisation divides by exactly the weights that were applied, so one
// update (a_1 = 1) comes back bit for bit whatever its count, and the
// weights never meet float32's 2^24 limit on exact integers. Rounding a_k
// to float32 moves it by at most 2^-24 of itself.
type avgRound struct {
	global  *model.Weights
	lr      float64
	acc     [][]float32
	ref     float64 // n_1, the first added update's sample count
	wsum    float64 // Σ a_k
	total   float64 // Σ n_k, exact below 2^53
	bound   float64 // Σ a_k·max|w_k|: a bound on every |acc| entry
	updates int

	// Work shared with the workers of one call, so that a call allocates
	// nothing beyond one goroutine per extra worker.
	plan    [][]piece      // per worker: the ranges of tensors it owns
	norms   []float32      // per worker: Add's scan, a bound on |u|
	okScan  []bool         // per worker: Add's scan found only finite values
	norm2   []float64      // per worker: Result's Σ(next − global)²
	finite  []bool         // per worker: Result's range check
	scanned sync.WaitGroup // Add: every worker has scanned
	done    sync.WaitGroup // every worker has finished
	u       *model.Weights // Add: the update
	wt      float32        // Add: its weight
	next    *model.Weights // Result: the output
}

// maxSum bounds the sum's entries well inside float32's range.
const maxSum = math.MaxFloat32 / 4

func (r *avgRound) Add(u *model.Weights, n int64) error {
	if n < 1 {
		return fmt.Errorf("%w: %d samples; an update needs at least one", ErrBadUpdate, n)
	}
	if err := r.global.Compatible(u); err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	// Every worker scans its share (finite, and a bound on the
	// magnitudes); once all have, each reaches the same verdict from the
	// shared results and, if the update is good, folds its share in.
	ref := r.ref
	if r.updates == 0 {
		ref = float64(n)
	}
	r.u, r.wt = u, float32(float64(n)/ref)
	defer func() { r.u = nil }()
	r.scanned.Add(len(r.plan))
	r.done.Add(len(r.plan))
	for w := 1; w < len(r.plan); w++ {
		go r.addShare(w)
	}
	r.addShare(0)
	r.done.Wait()
	norm, finite, ok := r.verdict()
	switch {
	case ok:
		r.bound += float64(r.wt) * float64(norm)
		r.ref = ref
		r.wsum += float64(r.wt)
		r.total += float64(n)
		r.updates++
		return nil
	case !finite:
		if err := u.CheckFinite(); err != nil { // names the first one
			return fmt.Errorf("%w: %w", ErrBadUpdate, err)
		}
		return fmt.Errorf("%w: %w", ErrBadUpdate, model.ErrNotFinite)
	}
	return fmt.Errorf("%w: values of magnitude up to %g weighted by %d samples could overflow the float32 aggregate", ErrBadUpdate, norm, n)
}

// addShare is worker w's part of Add.
func (r *avgRound) addShare(w int) {
	defer r.done.Done()
	var m float32
	ok := true
	for _, p := range r.plan[w] {
		norm, finite := model.FiniteNorm(r.u.Tensors[p.t].Data[p.lo:p.hi])
		m, ok = max(m, norm), ok && finite
	}
	r.norms[w], r.okScan[w] = m, ok
	r.scanned.Done()
	r.scanned.Wait()
	if _, _, ok := r.verdict(); !ok {
		return
	}
	for _, p := range r.plan[w] {
		model.AxpyFlat(r.wt, r.u.Tensors[p.t].Data[p.lo:p.hi], r.acc[p.t][p.lo:p.hi])
	}
}

// verdict returns a bound on the update's magnitudes, whether they are
// finite, and whether the update may be added: finite, and unable to
// overflow the sum.
func (r *avgRound) verdict() (norm float32, finite, ok bool) {
	finite = true
	for w := range r.plan {
		norm, finite = max(norm, r.norms[w]), finite && r.okScan[w]
	}
	return norm, finite, finite && r.bound+float64(r.wt)*float64(norm) <= maxSum
}

func (r *avgRound) Result() (*model.Weights, map[string]float64, error) {
	if r.updates == 0 {
		return nil, nil, ErrNoUpdates
	}
	r.next = r.global.ZerosLike()
	defer func() { r.next = nil }()
	r.done.Add(len(r.plan))
	for w := 1; w < len(r.plan); w++ {
		go r.resultShare(w)
	}
	r.resultShare(0)
	r.done.Wait()
	var s float64
	for w := range r.plan {
		if !r.finite[w] {
			return nil, nil, fmt.Errorf("fedavg: server learning rate %v pushes the next model past float32's range; lower it", r.lr)
		}
		s += r.norm2[w]
	}
	return r.next, map[string]float64{
		"updates":     float64(r.updates),
		"samples":     r.total,
		"update_norm": math.Sqrt(s),
	}, nil
}

// resultShare is worker w's part of Result: next = g + η·(acc/wsum − g),
// in float64, rounded once to float32.
func (r *avgRound) resultShare(w int) {
	defer r.done.Done()
	inv := 1 / r.wsum
	var s float64
	ok := true
	for _, p := range r.plan[w] {
		g, a, out := r.global.Tensors[p.t].Data[p.lo:p.hi], r.acc[p.t][p.lo:p.hi], r.next.Tensors[p.t].Data[p.lo:p.hi]
		for j := range out {
			v := float64(a[j]) * inv
			if r.lr != 1 {
				v = float64(g[j]) + r.lr*(v-float64(g[j]))
			}
			f := float32(v)
			ok = ok && !math.IsInf(float64(f), 0)
			out[j] = f
			d := float64(f) - float64(g[j])
			s += d * d
		}
	}
	r.norm2[w], r.finite[w] = s, ok
}

// piece is the range [lo, hi) of tensor t.
type piece struct{ t, lo, hi int }

// serialMax is the model size below which a round works on one core:
// spreading smaller work costs more than it saves.
const serialMax = 1 << 17

// newPlan splits w's parameters into one contiguous share per worker (at
// most workers, one when w is small), each a list of tensor ranges.
func newPlan(w *model.Weights, workers int) [][]piece {
	total := w.NumParams()
	if total < serialMax || workers < 1 {
		workers = 1
	}
	share := (total + workers - 1) / workers
	plan := make([][]piece, 0, workers)
	var cur []piece
	left := share
	for i, t := range w.Tensors {
		for lo := 0; lo < len(t.Data); {
			hi := min(len(t.Data), lo+left)
			cur = append(cur, piece{i, lo, hi})
			left -= hi - lo
			lo = hi
			if left == 0 {
				plan = append(plan, cur)
				cur, left = nil, share
			}
		}
	}
	if len(cur) > 0 || len(plan) == 0 {
		plan = append(plan, cur)
	}
	return plan
}
