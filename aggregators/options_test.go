package aggregators

import (
	"errors"
	"math"
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

func TestClientMu(t *testing.T) {
	for _, tt := range []struct {
		name   string
		params map[string]float64
		want   float64
	}{
		{"fedprox", map[string]float64{"mu": 0.25}, 0.25},
		{"fedprox", nil, 0},
		{"fedavg", map[string]float64{"mu": 0}, 0},
		{"fedadam", nil, 0},
		{"median", nil, 0},
	} {
		s, err := New(tt.name, tt.params)
		if err != nil {
			t.Fatal(err)
		}
		if got := ClientMu(s); got != tt.want {
			t.Errorf("ClientMu(%s %v) = %v, want %v", tt.name, tt.params, got, tt.want)
		}
	}
}

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
