package aggregators

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"

	"github.com/cohortfl/cohort/model"
)

// Defaults of the server optimizers' parameters, applied by [New] and by
// [FedOpt.Begin] when a parameter is absent or 0.
const (
	// DefaultEtaAdam is fedadam's and fedyogi's server learning rate η.
	DefaultEtaAdam = 0.01
	// DefaultEtaAdagrad is fedadagrad's η.
	DefaultEtaAdagrad = 0.1
	// DefaultEtaAvgM is fedavgm's η (its job-file parameter is server_lr).
	DefaultEtaAvgM = 1.0
	// DefaultBeta1 is fedadam's and fedyogi's first-moment decay β1;
	// fedadagrad's default is 0, no momentum.
	DefaultBeta1 = 0.9
	// DefaultBeta2 is fedadam's and fedyogi's second-moment decay β2.
	DefaultBeta2 = 0.99
	// DefaultTau is the adaptivity τ of fedadam, fedyogi and fedadagrad.
	DefaultTau = 1e-3
	// DefaultMomentum is fedavgm's server momentum β.
	DefaultMomentum = 0.9
)

// The names of the server optimizers, [FedOpt.Optimizer]'s values.
const (
	OptAdam    = "fedadam"
	OptYogi    = "fedyogi"
	OptAdagrad = "fedadagrad"
	OptAvgM    = "fedavgm"
)

// FedOpt is a server optimizer over FedAvg's aggregate (Reddi et al.,
// "Adaptive Federated Optimization", ICLR 2021, Algorithm 2; FedAvgM: Hsu
// et al., 2019). Each round, the pseudo-gradient Δ = mean − x is the
// difference between the round's FedAvg mean (weighted by sample counts,
// under the weight cap MaxFraction, or DP-FedAvg's noisy clipped mean when
// DP is set) and the global model x, and the optimizer moves x by it,
// coordinate-wise:
//
//	fedadam:    m ← β1·m + (1−β1)·Δ;  v ← β2·v + (1−β2)·Δ²
//	fedyogi:    m ← β1·m + (1−β1)·Δ;  v ← v − (1−β2)·Δ²·sign(v − Δ²)
//	fedadagrad: m ← β1·m + (1−β1)·Δ;  v ← v + Δ²
//	            x ← x + η·m/(√v + τ)
//	fedavgm:    m ← β·m + Δ;          x ← x + η·m
//
// As in the paper there is no bias correction; m starts at 0 and v at τ².
// With β = 0 and η = 1 fedavgm is FedAvg.
//
// The moments m and v are the server state. The strategy holds the state
// of the last committed round; a round starts from it and computes the
// next state at Result without changing the strategy's: the coordinator
// commits it with SetState(round.NextState()) once the round's model is
// committed, so a failed round leaves the state as it was (see
// [Stateful]). It is stored as float32, like the model, so a state saved
// and restored continues bit for bit. FedOpt's methods are safe for
// concurrent use.
type FedOpt struct {
	// Optimizer is OptAdam, OptYogi, OptAdagrad or OptAvgM; the
	// strategy's name.
	Optimizer string
	// Eta is the server learning rate η; 0 means DefaultEtaAdam (fedadam,
	// fedyogi), DefaultEtaAdagrad or DefaultEtaAvgM.
	Eta float64
	// Beta1 is β1, 0 ≤ β1 < 1 (not fedavgm); 0 means DefaultBeta1 for
	// fedadam and fedyogi and is 0 for fedadagrad.
	Beta1 float64
	// Beta2 is β2, 0 ≤ β2 < 1 (fedadam, fedyogi); 0 means DefaultBeta2.
	Beta2 float64
	// Tau is the adaptivity τ > 0 (not fedavgm); 0 means DefaultTau.
	Tau float64
	// Momentum is fedavgm's β, 0 ≤ β < 1; 0 means DefaultMomentum.
	Momentum float64
	// MaxFraction caps one update's weight in the mean, as in
	// [FedAvg.MaxFraction].
	MaxFraction float64
	// DP, when not nil, makes the mean DP-FedAvg's (see [DP]).
	DP *DP

	mu    sync.Mutex
	state *model.Weights // nil: the initial state
}

var (
	_ Strategy   = (*FedOpt)(nil)
	_ Stateful   = (*FedOpt)(nil)
	_ Randomized = (*FedOpt)(nil)
)

// Name returns Optimizer: "fedadam", "fedyogi", "fedadagrad" or "fedavgm".
func (o *FedOpt) Name() string { return o.Optimizer }

// Begin validates the settings, global and the state, and starts a round
// from the state. Under DP it draws a fresh seed for the noise, as
// [FedAvg.Begin] does.
func (o *FedOpt) Begin(global *model.Weights) (Round, error) {
	return o.BeginSeeded(global, freshSeed(), 0)
}

// BeginSeeded is [FedOpt.Begin] for round number round, whose DP noise is
// drawn from (seed, round) alone.
func (o *FedOpt) BeginSeeded(global *model.Weights, seed uint64, round int) (Round, error) {
	opt, err := o.settings()
	if err != nil {
		return nil, err
	}
	r, err := beginAvg(o.Optimizer, 1, o.MaxFraction, o.DP, global, seed, round)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	opt.state = o.state
	o.mu.Unlock()
	if opt.state != nil {
		if err := opt.checkState(opt.state, global); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrBadState, o.Optimizer, err)
		}
	}
	r.opt = opt
	return &optRound{r}, nil
}

// State returns a copy of the state the next round starts from, named
// "m/<tensor>" for every tensor of the model and then (not fedavgm)
// "v/<tensor>", or nil before any state was set.
func (o *FedOpt) State() *model.Weights {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.state == nil {
		return nil
	}
	return o.state.Clone()
}

// SetState replaces the state with a copy of w, after checking that it is
// consistent, finite, named as [FedOpt.State] names it and, for the
// adaptive optimizers, has no negative v. Begin checks it against the
// global model. The error wraps [ErrBadState].
func (o *FedOpt) SetState(w *model.Weights) error {
	opt, err := o.settings()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadState, err)
	}
	if err := opt.checkState(w, nil); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrBadState, o.Optimizer, err)
	}
	c := w.Clone()
	o.mu.Lock()
	o.state = c
	o.mu.Unlock()
	return nil
}

// settings returns the optimizer with defaults applied, or an error for a
// setting out of range.
func (o *FedOpt) settings() (*optimizer, error) {
	p := &optimizer{rule: o.Optimizer, eta: o.Eta, b1: o.Beta1, b2: o.Beta2, tau: o.Tau, mom: o.Momentum}
	switch o.Optimizer {
	case OptAdam, OptYogi:
		p.eta = or(p.eta, DefaultEtaAdam)
		p.b1 = or(p.b1, DefaultBeta1)
		p.b2 = or(p.b2, DefaultBeta2)
	case OptAdagrad:
		p.eta = or(p.eta, DefaultEtaAdagrad)
	case OptAvgM:
		p.eta = or(p.eta, DefaultEtaAvgM)
		p.mom = or(p.mom, DefaultMomentum)
	default:
		return nil, fmt.Errorf("fedopt: optimizer %q is not one of %s, %s, %s, %s", o.Optimizer, OptAdam, OptYogi, OptAdagrad, OptAvgM)
	}
	p.tau = or(p.tau, DefaultTau)
	in := func(v float64) bool { return v >= 0 && v < 1 }
	switch {
	case !(p.eta > 0) || math.IsInf(p.eta, 0):
		return nil, fmt.Errorf("%s: eta %v must be positive", o.Optimizer, o.Eta)
	case !in(p.b1) || !in(p.b2) || !in(p.mom):
		return nil, fmt.Errorf("%s: beta1 %v, beta2 %v and momentum %v must each be at least 0 and below 1", o.Optimizer, o.Beta1, o.Beta2, o.Momentum)
	case !(p.tau > 0) || math.IsInf(p.tau, 0):
		return nil, fmt.Errorf("%s: tau %v must be positive", o.Optimizer, o.Tau)
	}
	return p, nil
}

// or returns v, or def when v is 0.
func or(v, def float64) float64 {
	if v == 0 {
		return def
	}
	return v
}

// optimizer is a FedOpt round's settings and starting state.
type optimizer struct {
	rule             string
	eta, b1, b2, tau float64
	mom              float64
	state            *model.Weights // nil: m = 0, v = τ²
	nTensors         int            // the model's tensors: v/ starts here
	tauSq            float64
}

// hasV reports whether the rule keeps a second moment v.
func (p *optimizer) hasV() bool { return p.rule != OptAvgM }

// checkState checks w as a state of this optimizer: consistent, finite,
// named after the model's tensors (global's, when not nil), v ≥ 0.
func (p *optimizer) checkState(w *model.Weights, global *model.Weights) error {
	if err := w.Validate(); err != nil {
		return err
	}
	if err := w.CheckFinite(); err != nil {
		return err
	}
	parts := 1
	if p.hasV() {
		parts = 2
	}
	if len(w.Tensors)%parts != 0 {
		return fmt.Errorf("%d state tensors; want m/<tensor> for every tensor of the model then v/<tensor>", len(w.Tensors))
	}
	k := len(w.Tensors) / parts
	if global != nil && k != len(global.Tensors) {
		return fmt.Errorf("%d state tensors for a model of %d tensors; want %d", len(w.Tensors), len(global.Tensors), parts*len(global.Tensors))
	}
	for i, t := range w.Tensors {
		prefix, base := "m/", w.Tensors[i%k]
		if i >= k {
			prefix = "v/"
		}
		name, ok := strings.CutPrefix(t.Name, prefix)
		if !ok {
			return fmt.Errorf("state tensor %d is %q; want a name starting %q", i, t.Name, prefix)
		}
		if i >= k {
			if want := strings.TrimPrefix(base.Name, "m/"); name != want || !slices.Equal(t.Shape, base.Shape) {
				return fmt.Errorf("state tensor %q %v does not match %q %v", t.Name, t.Shape, base.Name, base.Shape)
			}
			for j, v := range t.Data {
				if v < 0 {
					return fmt.Errorf("state tensor %q holds %v at index %d; a second moment must not be negative", t.Name, v, j)
				}
			}
		}
		if global != nil {
			g := global.Tensors[i%k]
			if name != g.Name || !slices.Equal(t.Shape, g.Shape) {
				return fmt.Errorf("state tensor %q %v does not match the model's tensor %d, %q %v", t.Name, t.Shape, i%k, g.Name, g.Shape)
			}
		}
	}
	return nil
}

// zeros returns a zero state for global's tensors, to be filled by step.
func (p *optimizer) zeros(global *model.Weights) *model.Weights {
	p.nTensors = len(global.Tensors)
	p.tauSq = p.tau * p.tau
	out := &model.Weights{}
	prefixes := []string{"m/"}
	if p.hasV() {
		prefixes = append(prefixes, "v/")
	}
	for _, pre := range prefixes {
		for _, t := range global.Tensors {
			z := t
			z.Name = pre + t.Name
			z.Shape = append([]int(nil), t.Shape...)
			z.Data = make([]float32, len(t.Data))
			out.Tensors = append(out.Tensors, z)
		}
	}
	return out
}

// step moves coordinate i of tensor t from x to its next value given the
// round's mean, writing the next moments into next, and reports whether
// they stayed finite in float32.
func (p *optimizer) step(next *model.Weights, t, i int, x, mean float64) (float64, bool) {
	d := mean - x
	m, v := 0.0, p.tauSq
	if p.state != nil {
		m = float64(p.state.Tensors[t].Data[i])
		if p.hasV() {
			v = float64(p.state.Tensors[p.nTensors+t].Data[i])
		}
	}
	var out float64
	switch p.rule {
	case OptAvgM:
		m = p.mom*m + d
		out = x + p.eta*m
	default:
		m = p.b1*m + (1-p.b1)*d
		d2 := d * d
		switch p.rule {
		case OptAdam:
			v = p.b2*v + (1-p.b2)*d2
		case OptYogi:
			v -= (1 - p.b2) * d2 * sign(v-d2)
		case OptAdagrad:
			v += d2
		}
		out = x + p.eta*m/(math.Sqrt(v)+p.tau)
		vf := float32(v)
		next.Tensors[p.nTensors+t].Data[i] = vf
		if math.IsInf(float64(vf), 0) {
			return out, false
		}
	}
	mf := float32(m)
	next.Tensors[t].Data[i] = mf
	return out, !math.IsInf(float64(mf), 0)
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

// optRound is a FedOpt round: FedAvg's aggregate and the optimizer's step.
type optRound struct{ *avgRound }

var _ StatefulRound = optRound{}

// NextState returns the optimizer state that goes with the latest
// Result's model, newly allocated by that Result; nil before a Result, or
// after an Add that came since.
func (r optRound) NextState() *model.Weights { return r.nextState }
