package aggregators

import (
	"errors"
	"maps"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestNewOptionsAndOptimizers(t *testing.T) {
	tests := []struct {
		name   string
		params map[string]float64
		want   Strategy // nil: an ErrBadParams error mentioning msg
		msg    string
	}{
		{"fedavg", map[string]float64{"max_weight_fraction": 0.5}, &FedAvg{MaxFraction: 0.5}, ""},
		{"fedprox", map[string]float64{"mu": 0.1, "dp_clip": 2, "dp_noise": 1.1}, &FedProx{FedAvg: FedAvg{DP: &DP{Clip: 2, Noise: 1.1}}, Mu: 0.1}, ""},
		{"fedadam", map[string]float64{"eta": 0.05, "beta1": 0.8, "beta2": 0.9, "tau": 1e-4, "max_weight_fraction": 0.3}, &FedOpt{Optimizer: OptAdam, Eta: 0.05, Beta1: 0.8, Beta2: 0.9, Tau: 1e-4, MaxFraction: 0.3}, ""},
		{"fedyogi", nil, &FedOpt{Optimizer: OptYogi}, ""},
		{"fedadagrad", map[string]float64{"eta": 0.2}, &FedOpt{Optimizer: OptAdagrad, Eta: 0.2}, ""},
		{"fedavgm", map[string]float64{"server_lr": 0.7, "momentum": 0.5}, &FedOpt{Optimizer: OptAvgM, Eta: 0.7, Momentum: 0.5}, ""},
		{"fedavg", map[string]float64{"max_weight_fraction": 1.5}, nil, "max_weight_fraction 1.5 must be above 0 and at most 1"},
		{"fedavg", map[string]float64{"max_weight_fraction": -0.5}, nil, "max_weight_fraction -0.5"},
		{"fedavg", map[string]float64{"dp_noise": 1}, nil, "dp_noise 1 needs dp_clip"},
		{"fedavg", map[string]float64{"dp_clip": -1}, nil, "dp_clip -1 must be a positive L2 bound"},
		{"fedavg", map[string]float64{"dp_clip": 1, "dp_noise": math.NaN()}, nil, "dp_noise NaN"},
		{"fedadam", map[string]float64{"beta1": 1}, nil, "beta1 1 must be at least 0 and below 1"},
		{"fedyogi", map[string]float64{"beta2": -0.1}, nil, "beta2 -0.1"},
		{"fedadagrad", map[string]float64{"beta2": 0.9}, nil, `no parameter "beta2"; it takes beta1, dp_clip, dp_noise, eta, max_weight_fraction, tau`},
		{"fedadam", map[string]float64{"eta": -1}, nil, "eta -1 must be positive"},
		{"fedadam", map[string]float64{"tau": math.Inf(1)}, nil, "tau +Inf"},
		{"fedadam", map[string]float64{"server_lr": 1}, nil, `no parameter "server_lr"`},
		{"fedavgm", map[string]float64{"momentum": 1}, nil, "momentum 1 must be at least 0 and below 1"},
		{"fedadam", map[string]float64{"mu": 0.1}, nil, "use fedprox"},
		{"median", map[string]float64{"max_weight_fraction": 0.5}, nil, `no parameter "max_weight_fraction"`},
		{"krum", map[string]float64{"dp_clip": 1}, nil, `no parameter "dp_clip"`},
	}
	for _, tt := range tests {
		s, err := New(tt.name, tt.params)
		if tt.want == nil {
			if !errors.Is(err, ErrBadParams) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("New(%q, %v) = %v, want ErrBadParams mentioning %q", tt.name, tt.params, err, tt.msg)
			}
			continue
		}
		if err != nil {
			t.Errorf("New(%q, %v) = %v", tt.name, tt.params, err)
			continue
		}
		if !cmp.Equal(s, tt.want, cmpopts.IgnoreUnexported(FedOpt{})) || s.Name() != tt.name {
			t.Errorf("New(%q, %v) = %+v, want %+v", tt.name, tt.params, s, tt.want)
		}
	}
}

// TestEveryNameTakesZeros: the coordinator passes every parameter
// Params names, 0 where the job file has none; each strategy takes that.
func TestEveryNameTakesZeros(t *testing.T) {
	for _, name := range Names() {
		params := map[string]float64{"mu": 0}
		for _, k := range Params(name) {
			params[k] = 0
		}
		s, err := New(name, params)
		if err != nil {
			t.Errorf("New(%q, zeros) = %v", name, err)
			continue
		}
		r, err := s.Begin(weights(1, 2))
		if err != nil {
			t.Errorf("%s: Begin = %v", name, err)
			continue
		}
		for range 5 {
			if err := r.Add(weights(2, 3), 10); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := r.Result(); err != nil {
			t.Errorf("%s: Result = %v", name, err)
		}
		if Params(name) == nil {
			t.Errorf("Params(%q) = nil", name)
		}
	}
	if Params("fedsgd") != nil {
		t.Error(`Params("fedsgd") is not nil`)
	}
}

// TestClientParams: every strategy's client settings, with the client
// parameters set (where the strategy takes them) and left out; every
// strategy accepts each client parameter at 0 and refuses it otherwise
// unless its Params list it.
func TestClientParams(t *testing.T) {
	want := map[string]ClientSettings{"fedprox": {Mu: 0.25}}
	set := map[string]float64{ParamMu: 0.25}
	for _, name := range Names() {
		t.Run(name, func(t *testing.T) {
			params := map[string]float64{}
			for _, k := range ClientParamNames() {
				if slices.Contains(Params(name), k) {
					params[k] = set[k]
				}
			}
			s, err := New(name, params)
			if err != nil {
				t.Fatal(err)
			}
			if got := ClientParams(s); got != want[name] {
				t.Errorf("ClientParams(New(%s, %v)) = %+v, want %+v", name, params, got, want[name])
			}
			if _, ok := s.(ClientSide); ok != (want[name] != ClientSettings{}) {
				t.Errorf("New(%s) implements ClientSide: %v; want it to exactly when it has client settings", name, ok)
			}
			for _, k := range ClientParamNames() {
				zero, err := New(name, map[string]float64{k: 0})
				if err != nil {
					t.Errorf("New(%s, %s: 0) = %v, want accepted", name, k, err)
				} else if got := ClientParams(zero); got != (ClientSettings{}) {
					t.Errorf("ClientParams(New(%s, %s: 0)) = %+v, want zero", name, k, got)
				}
				_, err = New(name, map[string]float64{k: set[k]})
				if takes := slices.Contains(Params(name), k); (err == nil) != takes {
					t.Errorf("New(%s, %s: %v) = %v; Params lists it: %v", name, k, set[k], err, takes)
				}
			}
		})
	}
}

// TestClientSettingsParams: the settings by name cover exactly
// ClientParamNames, each field under its own name, and round-trip through
// the wire's getters.
func TestClientSettingsParams(t *testing.T) {
	cs := ClientSettings{Mu: 0.125}
	got := cs.Params()
	want := map[string]float64{ParamMu: 0.125}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ClientSettings.Params() mismatch (-want +got):\n%s", diff)
	}
	names := slices.Sorted(maps.Keys(got))
	if !slices.Equal(names, ClientParamNames()) {
		t.Errorf("ClientSettings.Params() names %v, ClientParamNames() %v; want them equal", names, ClientParamNames())
	}
	if !slices.IsSorted(ClientParamNames()) {
		t.Errorf("ClientParamNames() = %v, not sorted", ClientParamNames())
	}
	if back := ReadClientSettings(wireParams{mu: 0.125}); back != cs {
		t.Errorf("ReadClientSettings(mu 0.125) = %+v, want %+v", back, cs)
	}
}

// wireParams stands in for the wire's TrainParams.
type wireParams struct{ mu float64 }

func (w wireParams) GetMu() float64 { return w.mu }

// TestBeginRoundWithoutRandomness: a strategy that draws nothing is begun
// with Begin.
func TestBeginRoundWithoutRandomness(t *testing.T) {
	r, err := BeginRound(&Median{}, weights(1, 1), 9, 9)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := r.(*heldRound); !ok {
		t.Errorf("BeginRound(median) = %T, want a median round", r)
	}
	if _, ok := r.(WeightReporter); ok {
		t.Error("a median round reports weights")
	}
}
