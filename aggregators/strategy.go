package aggregators

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"

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
	acc := make([][]float64, len(global.Tensors))
	for i, t := range global.Tensors {
		acc[i] = make([]float64, len(t.Data))
	}
	lr := f.ServerLR
	if lr == 0 {
		lr = 1
	}
	return &avgRound{global: global, acc: acc, lr: lr}, nil
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
	acc     [][]float64 // Σ n_k · w_k, in float64
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
	wt := float64(n)
	for i, t := range u.Tensors {
		a := r.acc[i]
		for j, v := range t.Data {
			a[j] += wt * float64(v)
		}
	}
	r.total += wt
	r.updates++
	return nil
}

func (r *avgRound) Result() (*model.Weights, map[string]float64, error) {
	if r.updates == 0 {
		return nil, nil, ErrNoUpdates
	}
	next := r.global.ZerosLike()
	var norm2 float64
	for i, t := range next.Tensors {
		g := r.global.Tensors[i].Data
		a := r.acc[i]
		for j := range t.Data {
			avg := a[j] / r.total
			v := float64(g[j]) + r.lr*(avg-float64(g[j]))
			t.Data[j] = float32(v)
			d := v - float64(g[j])
			norm2 += d * d
		}
	}
	return next, map[string]float64{
		"updates":     float64(r.updates),
		"samples":     r.total,
		"update_norm": math.Sqrt(norm2),
	}, nil
}
