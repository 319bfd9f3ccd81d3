package server

import (
	"fmt"
	"math"
	"strings"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/model"
	"github.com/cohortfl/cohort/privacy"
	"github.com/cohortfl/cohort/tracking"
)

// MetricDPEpsilon is the ε of the (ε, δ) central differential privacy a
// DP-FedAvg arm has spent after each round, at the job's dp.delta.
const MetricDPEpsilon = tracking.MetricDPEpsilon

// weightFractions is each aggregated update's share of the round's
// weight, by site; nil where the strategy does not report it.
func (x *roundExec) weightFractions() map[string]float64 {
	if len(x.weights) != len(x.added) || len(x.added) == 0 {
		return nil
	}
	out := make(map[string]float64, len(x.added))
	for i, site := range x.added {
		out[site] = x.weights[i]
	}
	return out
}

// epsilon returns the privacy a DP-FedAvg arm has spent after r rounds:
// the sampled Gaussian mechanism with each site sampled with probability
// sites per round ÷ sites (site-level privacy).
func (a *armRun) epsilon(r int) (float64, bool) {
	st := a.arm.Strategy
	if st == nil || st.DP == nil || st.DP.NoiseMultiplier <= 0 {
		return 0, false
	}
	s := a.j.spec.Sites
	q := float64(s.PerRound()) / float64(max(s.Count, 1))
	eps, _, err := privacy.Epsilon(q, st.DP.NoiseMultiplier, r, st.DP.Delta)
	if err != nil || math.IsInf(eps, 0) {
		return 0, false
	}
	return eps, true
}

// stateTensor prefixes the tensors of a stateful strategy's server state
// where they travel with the global model in the cluster's store.
const stateTensor = "cohort.server_state/"

// withState returns the global model with the strategy's server state
// appended (the tensors renamed under stateTensor), or global alone.
func withState(global *model.Weights, s aggregators.Strategy) *model.Weights {
	st, ok := s.(aggregators.Stateful)
	if !ok || st.State() == nil {
		return global
	}
	w := &model.Weights{Tensors: append([]model.Tensor(nil), global.Tensors...)}
	for _, t := range st.State().Tensors {
		t.Name = stateTensor + t.Name
		w.Tensors = append(w.Tensors, t)
	}
	return w
}

// splitState separates what withState joined.
func splitState(w *model.Weights) (global, state *model.Weights) {
	global = &model.Weights{}
	for _, t := range w.Tensors {
		if name, ok := strings.CutPrefix(t.Name, stateTensor); ok {
			if state == nil {
				state = &model.Weights{}
			}
			t.Name = name
			state.Tensors = append(state.Tensors, t)
			continue
		}
		global.Tensors = append(global.Tensors, t)
	}
	return global, state
}

// restoreState hands a resumed arm's strategy its server state.
func (a *armRun) restoreState(state *model.Weights) error {
	st, ok := a.strategy.(aggregators.Stateful)
	switch {
	case state == nil:
		return nil
	case !ok:
		return fmt.Errorf("the committed round carries server state, but strategy %s keeps none", a.strategy.Name())
	}
	return st.SetState(state)
}
