package aggregators

// ParamMu is FedProx's proximal coefficient μ, a client parameter.
const ParamMu = "mu"

// ClientSettings are what a strategy has every site train with, besides
// the job's train settings; the zero value is plain local SGD. They are
// the one description of a strategy's client side: [ClientParams] gives
// their values under a strategy, the coordinator sends them in each train
// task, and a site reads them back with [ReadClientSettings] for its
// trainer.
type ClientSettings struct {
	// Mu is the proximal coefficient μ ≥ 0 (parameter [ParamMu]): the
	// site's local objective adds μ/2·‖w − w_global‖² (FedProx).
	Mu float64
}

// ClientParamNames returns the parameters of [New] that are client
// settings, sorted: the sites train with them, the aggregation does not
// use them. Every strategy accepts each of them at its zero value; only
// those whose [Params] list one take another value.
func ClientParamNames() []string { return []string{ParamMu} }

// Params returns the settings by their parameter names
// ([ClientParamNames]), for recording with a run's parameters.
func (c ClientSettings) Params() map[string]float64 {
	return map[string]float64{ParamMu: c.Mu}
}

// ClientSide is implemented by strategies that have the sites train
// differently from plain local SGD ([FedProx]).
type ClientSide interface {
	Strategy
	// ClientSettings returns what every site must train with.
	ClientSettings() ClientSettings
}

// ClientParams returns the settings the sites must train with under s:
// its [ClientSide.ClientSettings], or the zero ClientSettings for a
// strategy with no client side.
func ClientParams(s Strategy) ClientSettings {
	if c, ok := s.(ClientSide); ok {
		return c.ClientSettings()
	}
	return ClientSettings{}
}

// TrainParams is how a task carries the client settings to a site: the
// getters of the wire's train parameters (cohort.v1.TrainParams implements
// it). It is declared here so that this package does not depend on the
// wire package.
type TrainParams interface {
	GetMu() float64
}

// ReadClientSettings returns the client settings a task's train
// parameters carry.
func ReadClientSettings(p TrainParams) ClientSettings {
	return ClientSettings{Mu: p.GetMu()}
}
