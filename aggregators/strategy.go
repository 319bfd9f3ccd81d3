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
	// reading update without keeping it. An update that does not match the
	// global model (names, order, shapes), holds NaN or ±Inf, has fewer
	// than one sample, or holds values large enough to overflow the sum is
	// refused with an error wrapping [ErrBadUpdate], and the aggregate is
	// unchanged.
	Add(update *model.Weights, numSamples int64) error
	// Result returns the next global model, newly allocated, and
	// server-side metrics: "updates" (how many were added), "samples"
	// (their total sample count) and "update_norm" (‖next − global‖₂). It
	// does not end the round: a later Add is folded in and a later Result
	// includes it.
	Result() (*model.Weights, map[string]float64, error)
}

// Names returns the names [New] knows, sorted.
func Names() []string { return []string{"fedavg", "fedprox"} }

// New returns the strategy called name, configured from params:
//
//   - "server_lr" (both): the server learning rate η in
//     w ← w + η·(avg − w); absent or 0 means 1, plain averaging.
//   - "mu" (fedprox): the proximal coefficient μ ≥ 0 sent to the sites.
//     fedavg accepts mu only as 0.
//
// An unknown name wraps [ErrUnknownStrategy] and lists the known ones; an
// unknown parameter or a value out of range wraps [ErrBadParams].
func New(name string, params map[string]float64) (Strategy, error) {
	if !slices.Contains(Names(), name) {
		return nil, fmt.Errorf("%w %q: known strategies are %s", ErrUnknownStrategy, name, strings.Join(Names(), ", "))
	}
	var problems []error
	for k, v := range params {
		switch k {
		case "server_lr":
			if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				problems = append(problems, fmt.Errorf("%w: strategy %s: server_lr %v must be positive (or 0 for the default, 1)", ErrBadParams, name, v))
			}
		case "mu":
			if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
				problems = append(problems, fmt.Errorf("%w: strategy %s: mu %v must be finite and ≥ 0", ErrBadParams, name, v))
			} else if name != "fedprox" && v != 0 {
				problems = append(problems, fmt.Errorf("%w: strategy %s takes no mu (got %v); use fedprox for a proximal term", ErrBadParams, name, v))
			}
		default:
			problems = append(problems, fmt.Errorf("%w: strategy %s has no parameter %q; it takes %s", ErrBadParams, name, k, knownParams(name)))
		}
	}
	if len(problems) > 0 {
		slices.SortFunc(problems, func(a, b error) int { return strings.Compare(a.Error(), b.Error()) })
		return nil, errors.Join(problems...)
	}
	avg := FedAvg{ServerLR: params["server_lr"]}
	if name == "fedprox" {
		return &FedProx{FedAvg: avg, Mu: params["mu"]}, nil
	}
	return &avg, nil
}

func knownParams(name string) string {
	if name == "fedprox" {
		return "mu, server_lr"
	}
	return "server_lr"
}
