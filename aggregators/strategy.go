package aggregators

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sort"
	"strings"
	"sync"

	"gonum.org/v1/gonum/blas/blas32"

	"github.com/cohortfl/cohort/model"
)

// Errors returned by this package.
var (
	// ErrUnknownStrategy is returned by [New] for a name it does not know.
	ErrUnknownStrategy = errors.New("unknown strategy")
	// ErrBadUpdate is returned by [Round.Add] for an update it refuses; the
	// aggregate is left untouched.
	ErrBadUpdate = errors.New("bad update")
	// ErrNoUpdates is returned by [Round.Result] when nothing was added.
	ErrNoUpdates = errors.New("no updates to aggregate")
)

// Strategy aggregates the updates of a round into the next global model.
type Strategy interface {
	// Name is the strategy's name in job files ("fedavg").
	Name() string
	// Begin starts a round over the given global model, which it does not
	// modify.
	Begin(global *model.Weights) (Round, error)
}

// Round is one round's running aggregate. Its methods are not safe for
// concurrent use: the coordinator folds updates one at a time.
type Round interface {
	// Add folds one site's trained weights (not a delta) with its sample
	// count into the aggregate. An update that does not match the global
	// model, holds NaN or ±Inf, or has no samples is refused with an error
	// wrapping [ErrBadUpdate], and the aggregate is unchanged.
	Add(update *model.Weights, numSamples int64) error
	// Result returns the next global model and server-side metrics
	// (updates, samples, update_norm: ‖next − global‖).
	Result() (*model.Weights, map[string]float64, error)
}

// New returns the strategy called name. params holds its numeric settings:
// "mu" (FedProx's μ) and "server_lr" (default 1).
func New(name string, params map[string]float64) (Strategy, error) {
	lr := 1.0
	if v, ok := params["server_lr"]; ok && v != 0 {
		lr = v
	}
	if !(lr > 0) || math.IsInf(lr, 0) {
		return nil, fmt.Errorf("strategy %s: server_lr %v must be positive", name, lr)
	}
	switch name {
	case "fedavg":
		return &FedAvg{ServerLR: lr}, nil
	case "fedprox":
		mu := params["mu"]
		if mu < 0 || math.IsNaN(mu) || math.IsInf(mu, 0) {
			return nil, fmt.Errorf("strategy fedprox: mu %v must be ≥ 0", mu)
		}
		return &FedProx{FedAvg: FedAvg{ServerLR: lr}, Mu: mu}, nil
	}
	known := []string{"fedavg", "fedprox"}
	sort.Strings(known)
	return nil, fmt.Errorf("%w %q: known strategies are %s", ErrUnknownStrategy, name, strings.Join(known, ", "))
}

// FedAvg is federated averaging: the next global model is the average of
// the sites' weights, weighted by their sample counts, applied with a
// server learning rate: w ← w + ServerLR·(avg − w).
type FedAvg struct {
	// ServerLR scales the step towards the average; 1 (or 0) is plain FedAvg.
	ServerLR float64
}

var _ Strategy = (*FedAvg)(nil)

// Name returns "fedavg".
func (f *FedAvg) Name() string { return "fedavg" }

// Begin starts a round.
func (f *FedAvg) Begin(global *model.Weights) (Round, error) {
	if global == nil {
		return nil, errors.New("fedavg: no global model")
	}
	lr := f.ServerLR
	if lr == 0 {
		lr = 1
	}
	return &avgRound{global: global, lr: lr}, nil
}

// FedProx is FedAvg on the server; Mu is forwarded to the sites, whose
// local objective adds μ/2·‖w − w_global‖².
type FedProx struct {
	FedAvg
	Mu float64
}

// Name returns "fedprox".
func (f *FedProx) Name() string { return "fedprox" }

type avgRound struct {
	global  *model.Weights
	acc     [][]float32 // Σ n_k/n_0 · w_k (scaled by the first update's count)
	scale   float64     // n_0: the weights are relative to it, to keep magnitudes near 1
	total   float64     // Σ n_k
	updates int
	lr      float64
}

func (r *avgRound) Add(u *model.Weights, n int64) error {
	if n < 1 {
		return fmt.Errorf("%w: %d samples; an update needs at least one", ErrBadUpdate, n)
	}
	if err := r.global.Compatible(u); err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	if err := u.CheckFinite(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	if r.updates == 0 {
		// The first update has weight 1 (weights are relative to its
		// count): the accumulator starts as a copy of it.
		r.scale = float64(n)
		r.acc = make([][]float32, len(u.Tensors))
		for i, t := range u.Tensors {
			r.acc[i] = slices.Clone(t.Data)
		}
		r.total, r.updates = float64(n), 1
		return nil
	}
	wt := float32(float64(n) / r.scale)
	for i, t := range u.Tensors {
		a := r.acc[i]
		parallel(len(t.Data), func(lo, hi int) {
			blas32.Axpy(wt, blas32.Vector{N: hi - lo, Inc: 1, Data: t.Data[lo:hi]}, blas32.Vector{N: hi - lo, Inc: 1, Data: a[lo:hi]})
		})
	}
	r.total += float64(n)
	r.updates++
	return nil
}

func (r *avgRound) Result() (*model.Weights, map[string]float64, error) {
	if r.updates == 0 {
		return nil, nil, ErrNoUpdates
	}
	next := r.global.ZerosLike()
	var norm2 float64
	var mu sync.Mutex
	for i, t := range next.Tensors {
		g := r.global.Tensors[i].Data
		a := r.acc[i]
		parallel(len(t.Data), func(lo, hi int) {
			var n2 float64
			inv := r.scale / r.total
			for j := lo; j < hi; j++ {
				avg := float64(a[j]) * inv
				v := float64(g[j]) + r.lr*(avg-float64(g[j]))
				t.Data[j] = float32(v)
				d := v - float64(g[j])
				n2 += d * d
			}
			mu.Lock()
			norm2 += n2
			mu.Unlock()
		})
	}
	return next, map[string]float64{
		"updates":     float64(r.updates),
		"samples":     r.total,
		"update_norm": math.Sqrt(norm2),
	}, nil
}

// parallelMin is the length below which splitting work across cores costs
// more than it saves.
const parallelMin = 1 << 16

// parallel runs f over [0, n) in one contiguous range per core.
func parallel(n int, f func(lo, hi int)) {
	p := runtime.GOMAXPROCS(0)
	if n < parallelMin || p == 1 {
		f(0, n)
		return
	}
	var wg sync.WaitGroup
	step := (n + p - 1) / p
	for lo := 0; lo < n; lo += step {
		wg.Add(1)
		go func(lo, hi int) {
			defer wg.Done()
			f(lo, hi)
		}(lo, min(lo+step, n))
	}
	wg.Wait()
}
