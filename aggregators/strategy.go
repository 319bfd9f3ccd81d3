package aggregators

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/cohortfl/cohort/model"
)

// Errors returned by this package; match them with [errors.Is].
var (
	// ErrUnknownStrategy is returned by [New] for a name it does not know.
	ErrUnknownStrategy = errors.New("unknown strategy")
	// ErrBadParams is returned by [New] for a parameter the strategy does
	// not take or a value out of range.
	ErrBadParams = errors.New("bad strategy parameters")
	// ErrBadGlobal is returned by [Strategy.Begin] for a global model that
	// is nil, inconsistent or not finite.
	ErrBadGlobal = errors.New("bad global model")
	// ErrBadUpdate is returned by [Round.Add] for an update it refuses; the
	// aggregate is left untouched.
	ErrBadUpdate = errors.New("bad update")
	// ErrNoUpdates is returned by [Round.Result] when nothing was added.
	ErrNoUpdates = errors.New("no updates to aggregate")
	// ErrFinished is returned by a round's Add, Result and Finish after
	// [Finisher.Finish] ended it; begin the next round instead.
	ErrFinished = errors.New("round already finished")
	// ErrBadState is returned by [Stateful.SetState] and by Begin for
	// server state that is inconsistent, not finite, or does not match the
	// optimizer or the global model.
	ErrBadState = errors.New("bad server state")
)

// Strategy turns the updates of a round into the next global model.
// Implementations are safe for concurrent use: each [Round] holds its own
// state.
type Strategy interface {
	// Name is the strategy's name in job files ("fedavg").
	Name() string
	// Begin starts a round over the global model the sites trained from.
	// The round reads global until its last Result and never modifies it;
	// the caller must not modify it meanwhile either.
	Begin(global *model.Weights) (Round, error)
}

// Round is one round's running aggregate. It is not safe for concurrent
// use: the coordinator folds updates one at a time, and each Add already
// spreads its work over every core.
type Round interface {
	// Add folds one site's trained weights (its full local model, not a
	// delta) with the number of samples it trained on into the aggregate,
	// never modifying update nor keeping a reference to it (the robust
	// rules keep a copy). An update that does not match the global model
	// (names, order, shapes), holds NaN or ±Inf, has fewer than one
	// sample, or holds values large enough to overflow FedAvg's sum is
	// refused with an error wrapping [ErrBadUpdate], and the aggregate is
	// unchanged; so is one that would take a robust rule's held updates
	// past its memory budget.
	Add(update *model.Weights, numSamples int64) error
	// Result returns the next global model, newly allocated, and
	// server-side metrics: "updates" (how many were added), "samples"
	// (their total sample count) and "update_norm" (‖next − global‖₂);
	// krum and multi_krum add "selected" (how many updates they kept) and,
	// when that is one, "selected_index" (its position in the order of
	// Add). The FedAvg family (fedavg, fedprox and the [FedOpt]
	// optimizers) adds "max_weight_fraction" (the largest normalised
	// weight an update got) and "capped" (how many updates the weight cap
	// lowered), with a cap "cap_unmet" (1 when fewer than ⌈1/f⌉ updates
	// made the cap unattainable and every update weighed 1/n, else 0),
	// under DP "dp_clipped" (how many deltas were scaled down) and
	// "dp_noise_std" (σ·S/n), and for the optimizers
	// "pseudo_gradient_norm" (‖mean − global‖₂). It does not end the
	// round: a later Add is folded in and a later Result includes it.
	Result() (*model.Weights, map[string]float64, error)
}

// Finisher is implemented by rounds whose last Result can reuse the
// aggregate's own memory for the next model, so that committing a round
// costs no model's size more than the aggregate already holds (plain
// FedAvg and FedProx; with DP, a weight cap that binds or a server
// optimizer it allocates as Result does). Finish returns what Result would
// and ends the round, failed or not: an Add, Result or Finish after it
// returns [ErrFinished]. The coordinator calls it once, when it commits.
type Finisher interface {
	Finish() (*model.Weights, map[string]float64, error)
}

// WeightReporter is implemented by the rounds of the FedAvg family, which
// weight updates: Weights returns the normalised weight each added update
// gets in the aggregate, in the order of Add, after the weight cap (so the
// coordinator can log each site's weight fraction); they sum to 1, and nil
// before any update.
type WeightReporter interface {
	Weights() []float64
}

// Stateful strategies carry server state from round to round: the
// [FedOpt] optimizers' moments. The state is stored as weights, so it can
// be replicated and saved like a model. A round starts from the state the
// strategy holds at Begin and never changes it; the coordinator calls
// SetState(round.NextState()) (see [StatefulRound]) only when the round
// commits, so a failed round leaves the state as it was, and SetState
// with the stored state on resuming after a failover.
type Stateful interface {
	Strategy
	// State returns a copy of the state the next Begin starts from, nil
	// before any was set (the optimizer's initial state).
	State() *model.Weights
	// SetState replaces the state with a copy of w. An inconsistent,
	// non-finite or misnamed state is refused with an error wrapping
	// [ErrBadState]; Begin checks it against the global model.
	SetState(w *model.Weights) error
}

// StatefulRound is the round of a [Stateful] strategy.
type StatefulRound interface {
	Round
	// NextState returns the state after this round: the one that goes
	// with the latest Result's model, nil before a Result or after an Add
	// that came since. The caller owns it.
	NextState() *model.Weights
}

// Randomized is implemented by strategies whose rounds draw random numbers
// (the noise of [DP]). BeginSeeded starts round number round (≥ 0) over
// global; its draws are a function of seed and round alone, so a
// coordinator that replays round r after a failover with the same seed
// gets the same model bit for bit. The seed must stay secret — whoever
// knows it can subtract the noise — so it is not a job-file parameter:
// the coordinator draws it once per run (say with crypto/rand) and keeps
// it in its replicated state. A plain Begin draws a fresh seed from
// crypto/rand: private, but not replayable.
type Randomized interface {
	Strategy
	BeginSeeded(global *model.Weights, seed uint64, round int) (Round, error)
}

// BeginRound starts round number round of s over global: with
// BeginSeeded where s is [Randomized], else with Begin.
func BeginRound(s Strategy, global *model.Weights, seed uint64, round int) (Round, error) {
	if r, ok := s.(Randomized); ok {
		return r.BeginSeeded(global, seed, round)
	}
	return s.Begin(global)
}

// Names returns the names [New] knows, sorted.
func Names() []string {
	return []string{"fedadagrad", "fedadam", "fedavg", "fedavgm", "fedprox", "fedyogi", "krum", "median", "multi_krum", "trimmed_mean"}
}

// Params returns the parameters the strategy called name takes, sorted, or
// nil for a name [New] does not know.
func Params(name string) []string {
	switch name {
	case "fedavg":
		return []string{"dp_clip", "dp_noise", "max_weight_fraction", "server_lr"}
	case "fedprox":
		return []string{"dp_clip", "dp_noise", "max_weight_fraction", "mu", "server_lr"}
	case "fedadam", "fedyogi":
		return []string{"beta1", "beta2", "dp_clip", "dp_noise", "eta", "max_weight_fraction", "tau"}
	case "fedadagrad":
		return []string{"beta1", "dp_clip", "dp_noise", "eta", "max_weight_fraction", "tau"}
	case "fedavgm":
		return []string{"dp_clip", "dp_noise", "max_weight_fraction", "momentum", "server_lr"}
	case "median":
		return []string{"server_lr"}
	case "trimmed_mean":
		return []string{"beta", "server_lr"}
	case "krum":
		return []string{"f", "server_lr"}
	case "multi_krum":
		return []string{"f", "m", "server_lr"}
	}
	return nil
}

// maxCount bounds f and m: far beyond any federation's size, and exact in
// a float64.
const maxCount = 1 << 20

// New returns the strategy called name, configured from params:
//
//   - "server_lr" (all but fedadam, fedyogi, fedadagrad): the server
//     learning rate η in w ← w + η·(agg − w), for fedavgm in
//     w ← w + η·m; absent or 0 means 1, the aggregate itself.
//   - "max_weight_fraction" (fedavg, fedprox and the optimizers): the cap
//     f on one update's share of the round's weight, 0 < f ≤ 1 (see
//     [FedAvg.MaxFraction]); absent, 0 or 1 means no cap.
//   - "dp_clip", "dp_noise" (the same): DP-FedAvg's clip S > 0 and noise
//     multiplier σ ≥ 0 (see [DP]); absent or 0 clip means no DP, and
//     dp_noise needs a clip.
//   - "eta", "beta1", "beta2", "tau" (fedadam, fedyogi; fedadagrad takes
//     eta, beta1 and tau): the optimizer's η, β1, β2 and τ (see
//     [FedOpt]); absent or 0 means [DefaultEtaAdam] ([DefaultEtaAdagrad]
//     for fedadagrad), [DefaultBeta1] (0 for fedadagrad), [DefaultBeta2]
//     and [DefaultTau].
//   - "momentum" (fedavgm): the server momentum β, 0 ≤ β < 1; absent or 0
//     means [DefaultMomentum].
//   - "mu" (fedprox): the proximal coefficient μ ≥ 0 sent to the sites.
//     The other strategies accept mu only as 0.
//   - "beta" (trimmed_mean): the fraction trimmed at each end, 0 ≤ β <
//     0.5; absent means [DefaultBeta].
//   - "f" (krum, multi_krum): the number of Byzantine sites assumed, a
//     whole number ≥ 0; absent means [DefaultF].
//   - "m" (multi_krum): how many of the best-scored updates are averaged,
//     a whole number ≥ 0; absent or 0 means n − f.
//
// The robust strategies (median, trimmed_mean, krum, multi_krum) hold a
// round's updates in memory up to [DefaultMaxBytes]; set MaxBytes on the
// returned struct for another budget.
//
// An unknown name wraps [ErrUnknownStrategy] and lists the known ones; an
// unknown parameter or a value out of range wraps [ErrBadParams].
func New(name string, params map[string]float64) (Strategy, error) {
	if !slices.Contains(Names(), name) {
		return nil, fmt.Errorf("%w %q: known strategies are %s", ErrUnknownStrategy, name, strings.Join(Names(), ", "))
	}
	takes := Params(name)
	var problems []error
	bad := func(format string, a ...any) {
		problems = append(problems, fmt.Errorf("%w: strategy %s: "+format, append([]any{ErrBadParams, name}, a...)...))
	}
	for k, v := range params {
		finite := !math.IsNaN(v) && !math.IsInf(v, 0)
		if !slices.Contains(takes, k) && !slices.Contains(ClientParamNames(), k) {
			problems = append(problems, fmt.Errorf("%w: strategy %s has no parameter %q; it takes %s", ErrBadParams, name, k, strings.Join(takes, ", ")))
			continue
		}
		switch k {
		case "server_lr":
			if v < 0 || !finite {
				bad("server_lr %v must be positive (or 0 for the default, 1)", v)
			}
		case "eta":
			if v < 0 || !finite {
				bad("eta %v must be positive (or 0 for the default)", v)
			}
		case "beta1", "beta2", "momentum":
			if !(v >= 0 && v < 1) {
				bad("%s %v must be at least 0 and below 1 (0 for the default)", k, v)
			}
		case "tau":
			if v < 0 || !finite {
				bad("tau %v must be positive (or 0 for the default, %g)", v, DefaultTau)
			}
		case "max_weight_fraction":
			if !(v >= 0 && v <= 1) {
				bad("max_weight_fraction %v must be above 0 and at most 1 (0 or 1: no cap); 0.5 keeps any one site to half the weight", v)
			}
		case "dp_clip":
			if !(v >= 0 && v <= maxClip) {
				bad("dp_clip %v must be a positive L2 bound on each update's delta, at most %g (0: no DP)", v, float64(maxClip))
			}
		case "dp_noise":
			if v < 0 || !finite {
				bad("dp_noise %v must be a finite noise multiplier ≥ 0", v)
			} else if v > 0 && !(params["dp_clip"] > 0) {
				bad("dp_noise %v needs dp_clip, the bound the noise is scaled by; set dp_clip > 0", v)
			}
		case "mu":
			if v < 0 || !finite {
				bad("mu %v must be finite and ≥ 0", v)
			} else if name != "fedprox" && v != 0 {
				problems = append(problems, fmt.Errorf("%w: strategy %s takes no mu (got %v); use fedprox for a proximal term", ErrBadParams, name, v))
			}
		case "beta":
			if !(v >= 0 && v < 0.5) {
				bad("beta %v must be at least 0 and below 0.5 (the fraction trimmed at each end)", v)
			}
		case "f", "m":
			if !(v >= 0 && v <= maxCount) || v != math.Trunc(v) {
				bad("%s %v must be a whole number from 0 to %d", k, v, maxCount)
			}
		}
	}
	if len(problems) > 0 {
		slices.SortFunc(problems, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return nil, errors.Join(problems...)
	}
	lr := params["server_lr"]
	beta, ok := params["beta"]
	if !ok {
		beta = DefaultBeta
	}
	f, ok := params["f"]
	if !ok {
		f = DefaultF
	}
	var dp *DP
	if params["dp_clip"] > 0 {
		dp = &DP{Clip: params["dp_clip"], Noise: params["dp_noise"]}
	}
	avg := FedAvg{ServerLR: lr, MaxFraction: params["max_weight_fraction"], DP: dp}
	switch name {
	case "fedavg":
		return &avg, nil
	case "fedprox":
		return &FedProx{FedAvg: avg, Mu: params[ParamMu]}, nil
	case "fedadam", "fedyogi", "fedadagrad":
		return &FedOpt{Optimizer: name, Eta: params["eta"], Beta1: params["beta1"], Beta2: params["beta2"], Tau: params["tau"], MaxFraction: avg.MaxFraction, DP: dp}, nil
	case "fedavgm":
		return &FedOpt{Optimizer: name, Eta: lr, Momentum: params["momentum"], MaxFraction: avg.MaxFraction, DP: dp}, nil
	case "median":
		return &Median{ServerLR: lr}, nil
	case "trimmed_mean":
		return &TrimmedMean{Beta: beta, ServerLR: lr}, nil
	case "krum":
		return &Krum{F: int(f), ServerLR: lr}, nil
	case "multi_krum":
		return &MultiKrum{F: int(f), M: int(params["m"]), ServerLR: lr}, nil
	}
	panic("aggregators: New lacks a case for " + name) // Names and this switch disagree
}
