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
	// Add). It does not end the round: a later Add is folded in and a later
	// Result includes it.
	Result() (*model.Weights, map[string]float64, error)
}

// Names returns the names [New] knows, sorted.
func Names() []string {
	return []string{"fedavg", "fedprox", "krum", "median", "multi_krum", "trimmed_mean"}
}

// Params returns the parameters the strategy called name takes, sorted, or
// nil for a name [New] does not know.
func Params(name string) []string {
	switch name {
	case "fedavg", "median":
		return []string{"server_lr"}
	case "fedprox":
		return []string{"mu", "server_lr"}
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
//   - "server_lr" (all): the server learning rate η in
//     w ← w + η·(agg − w); absent or 0 means 1, the aggregate itself.
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
		if k != "mu" && !slices.Contains(takes, k) {
			problems = append(problems, fmt.Errorf("%w: strategy %s has no parameter %q; it takes %s", ErrBadParams, name, k, strings.Join(takes, ", ")))
			continue
		}
		switch k {
		case "server_lr":
			if v < 0 || !finite {
				bad("server_lr %v must be positive (or 0 for the default, 1)", v)
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
	switch name {
	case "fedprox":
		return &FedProx{FedAvg: FedAvg{ServerLR: lr}, Mu: params["mu"]}, nil
	case "median":
		return &Median{ServerLR: lr}, nil
	case "trimmed_mean":
		return &TrimmedMean{Beta: beta, ServerLR: lr}, nil
	case "krum":
		return &Krum{F: int(f), ServerLR: lr}, nil
	case "multi_krum":
		return &MultiKrum{F: int(f), M: int(params["m"]), ServerLR: lr}, nil
	}
	return &FedAvg{ServerLR: lr}, nil
}
