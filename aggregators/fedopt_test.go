package aggregators

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cohortfl/cohort/model"
)

// optRoundOf runs one round of s from global over one update (1 sample,
// so the mean is the update) and returns the next model and state.
func optRoundOf(t *testing.T, s Strategy, global, u *model.Weights) (*model.Weights, *model.Weights) {
	t.Helper()
	r, err := s.Begin(global)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Add(u, 1); err != nil {
		t.Fatal(err)
	}
	next, m, err := r.Result()
	if err != nil {
		t.Fatal(err)
	}
	var pg float64
	for i, v := range flat(u) {
		d := float64(v) - float64(flat(global)[i])
		pg += d * d
	}
	if !cmp.Equal(m["pseudo_gradient_norm"], math.Sqrt(pg), cmpopts.EquateApprox(1e-9, 0)) {
		t.Errorf("pseudo_gradient_norm = %v, want %v", m["pseudo_gradient_norm"], math.Sqrt(pg))
	}
	return next, r.(StatefulRound).NextState()
}

// TestFedOptKnownNumbers runs two rounds of each optimizer on a
// three-parameter model from x0 = (0, 4, 0). Round 1's mean is (1, 3, 2),
// Δ1 = (1, −1, 2); round 2's mean is x1 + Δ2 with Δ2 = (1, 0, −1). With
// η = 1, β1 = 0.5, β2 = 0.75, τ = 1 (v0 = τ² = 1):
//
//	adam  round 1: m = (.5, −.5, 1), v = .75 + .25·Δ² = (1, 1, 1.75),
//	      x1 = x0 + m/(√v + 1) = (.25, 3.75, 1/(√1.75 + 1));
//	      round 2: m = (.75, −.25, 0), v = (1, .75, 1.5625),
//	      x2 = x1 + m/(√v + 1) = (.625, 3.75 − .25/(√.75 + 1), x1₃).
//	yogi  round 1: v = 1 − .25·Δ²·sign(1 − Δ²) = (1, 1, 2) (sign 0 twice),
//	      x1 = (.25, 3.75, 1/(√2 + 1));
//	      round 2: v = (1, 1, 2 − .25·sign(1)) = (1, 1, 1.75),
//	      x2 = (.625, 3.625, x1₃).
//	adagrad (β1 0: m = Δ) round 1: v = 1 + Δ² = (2, 2, 5),
//	      x1 = (1/(√2+1), 4 − 1/(√2+1), 2/(√5+1));
//	      round 2: v = (3, 2, 6), x2 = x1 + (1/(√3+1), 0, −1/(√6+1)).
//	avgm (η 1, β .5) round 1: m = Δ1, x1 = (1, 3, 2);
//	      round 2: m = .5·Δ1 + Δ2 = (1.5, −.5, 0), x2 = (2.5, 2.5, 2).
func TestFedOptKnownNumbers(t *testing.T) {
	adaptive := map[string]float64{"eta": 1, "beta1": 0.5, "beta2": 0.75, "tau": 1}
	x1adam := 1 / (math.Sqrt(1.75) + 1)
	x1yogi := 1 / (math.Sqrt(2) + 1)
	a := 1 / (math.Sqrt2 + 1)
	tests := []struct {
		name       string
		params     map[string]float64
		want1      []float64
		want2      []float64
		m2, v2     []float64 // the state after round 2
		stateNames []string
	}{
		{"fedadam", adaptive, []float64{.25, 3.75, x1adam}, []float64{.625, 3.75 - .25/(math.Sqrt(.75)+1), x1adam},
			[]float64{.75, -.25, 0}, []float64{1, .75, 1.5625}, []string{"m/w", "m/b", "v/w", "v/b"}},
		{"fedyogi", adaptive, []float64{.25, 3.75, x1yogi}, []float64{.625, 3.625, x1yogi},
			[]float64{.75, -.25, 0}, []float64{1, 1, 1.75}, []string{"m/w", "m/b", "v/w", "v/b"}},
		{"fedadagrad", map[string]float64{"eta": 1, "tau": 1}, []float64{a, 4 - a, 2 / (math.Sqrt(5) + 1)},
			[]float64{a + 1/(math.Sqrt(3)+1), 4 - a, 2/(math.Sqrt(5)+1) - 1/(math.Sqrt(6)+1)},
			[]float64{1, 0, -1}, []float64{3, 2, 6}, []string{"m/w", "m/b", "v/w", "v/b"}},
		{"fedavgm", map[string]float64{"server_lr": 1, "momentum": 0.5}, []float64{1, 3, 2}, []float64{2.5, 2.5, 2},
			[]float64{1.5, -.5, 0}, nil, []string{"m/w", "m/b"}},
	}
	near := cmpopts.EquateApprox(0, 1e-6)
	f64 := func(w *model.Weights) []float64 {
		var out []float64
		for _, v := range flat(w) {
			out = append(out, float64(v))
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.name, tt.params)
			if err != nil {
				t.Fatal(err)
			}
			st := s.(Stateful)
			if st.State() != nil {
				t.Fatalf("State() before any round = %v, want nil", st.State())
			}
			x0 := weights(0, 4, 0)
			x1, s1 := optRoundOf(t, s, x0, weights(1, 3, 2))
			if got := f64(x1); !cmp.Equal(got, tt.want1, near) {
				t.Errorf("round 1: %v, want %v", got, tt.want1)
			}
			var names []string
			for _, tn := range s1.Tensors {
				names = append(names, tn.Name)
			}
			if !cmp.Equal(names, tt.stateNames) {
				t.Errorf("state names %v, want %v", names, tt.stateNames)
			}
			if err := st.SetState(s1); err != nil {
				t.Fatal(err)
			}
			d2 := []float32{1, 0, -1}
			u2 := x1.Clone()
			for i := range d2 {
				u2.Tensors[i/2].Data[i%2] += d2[i]
			}
			// u2 − x1 is Δ2 up to float32 rounding of u2; want2 is for
			// Δ2 exactly, so allow for it.
			x2, s2 := optRoundOf(t, s, x1, u2)
			if got := f64(x2); !cmp.Equal(got, tt.want2, cmpopts.EquateApprox(0, 1e-6)) {
				t.Errorf("round 2: %v, want %v", got, tt.want2)
			}
			got := f64(s2)
			if want := append(append([]float64{}, tt.m2...), tt.v2...); !cmp.Equal(got, want, cmpopts.EquateApprox(0, 2e-6)) {
				t.Errorf("state after round 2: %v, want m %v v %v", got, tt.m2, tt.v2)
			}
		})
	}
}

// TestFedOptUncommittedRoundKeepsState: a round whose state is not set
// (it failed, or never committed) leaves the strategy where it was, and a
// rerun from the same state gives the same model bit for bit.
func TestFedOptUncommittedRoundKeepsState(t *testing.T) {
	s, _ := New("fedadam", nil)
	st := s.(Stateful)
	x0 := weights(0, 4, 0)
	x1, s1 := optRoundOf(t, s, x0, weights(1, 3, 2))
	if err := st.SetState(s1); err != nil {
		t.Fatal(err)
	}
	saved := st.State()
	// Round 2 runs twice without committing.
	a, na := optRoundOf(t, s, x1, weights(2, 2, 2))
	b, nb := optRoundOf(t, s, x1, weights(2, 2, 2))
	if !cmp.Equal(a, b) || !cmp.Equal(na, nb) {
		t.Errorf("a rerun of an uncommitted round differs: %v / %v", flat(a), flat(b))
	}
	if !cmp.Equal(st.State(), saved) {
		t.Errorf("an uncommitted round changed the state")
	}
	// A round that fails at Result does not change it either.
	r, _ := s.Begin(x1)
	if _, _, err := r.Result(); !errors.Is(err, ErrNoUpdates) {
		t.Fatalf("Result() of an empty round = %v", err)
	}
	if r.(StatefulRound).NextState() != nil {
		t.Error("NextState() without a Result is not nil")
	}
	if !cmp.Equal(st.State(), saved) {
		t.Errorf("a failed round changed the state")
	}
	// NextState goes with the latest Result: nil after a later Add.
	_ = r.Add(weights(2, 2, 2), 1)
	_, _, _ = r.Result()
	if r.(StatefulRound).NextState() == nil {
		t.Error("NextState() after Result is nil")
	}
	_ = r.Add(weights(3, 3, 3), 1)
	if r.(StatefulRound).NextState() != nil {
		t.Error("NextState() after an Add since the Result is not nil")
	}
}

// TestFedOptStateRoundTrip: a strategy resumed from State() continues bit
// for bit like the one it was saved from.
func TestFedOptStateRoundTrip(t *testing.T) {
	for _, name := range []string{"fedadam", "fedyogi", "fedadagrad", "fedavgm"} {
		a, _ := New(name, nil)
		x := weights(0.5, -1, 2)
		for i := range 3 {
			next, ns := optRoundOf(t, a, x, weights(float32(i)+0.3, 1.7, -float32(i)))
			if err := a.(Stateful).SetState(ns); err != nil {
				t.Fatal(err)
			}
			x = next
		}
		b, _ := New(name, nil)
		if err := b.(Stateful).SetState(a.(Stateful).State()); err != nil {
			t.Fatal(err)
		}
		u := weights(0.1, 0.2, 0.3)
		xa, sa := optRoundOf(t, a, x, u)
		xb, sb := optRoundOf(t, b, x, u)
		if !cmp.Equal(xa, xb) || !cmp.Equal(sa, sb) {
			t.Errorf("%s: resumed %v, original %v", name, flat(xb), flat(xa))
		}
	}
}

func TestFedOptBadState(t *testing.T) {
	s, _ := New("fedadam", nil)
	st := s.(Stateful)
	good := func() *model.Weights {
		return &model.Weights{Tensors: []model.Tensor{
			{Name: "m/w", Shape: []int{2}, Data: []float32{0, 0}}, {Name: "m/b", Shape: []int{1}, Data: []float32{0}},
			{Name: "v/w", Shape: []int{2}, Data: []float32{1, 1}}, {Name: "v/b", Shape: []int{1}, Data: []float32{1}},
		}}
	}
	tests := []struct {
		name   string
		change func(w *model.Weights)
		msg    string
	}{
		{"negative v", func(w *model.Weights) { w.Tensors[2].Data[1] = -1 }, "must not be negative"},
		{"nan", func(w *model.Weights) { w.Tensors[0].Data[0] = float32(math.NaN()) }, "NaN"},
		{"missing v", func(w *model.Weights) { w.Tensors = w.Tensors[:3] }, "3 state tensors"},
		{"wrong prefix", func(w *model.Weights) { w.Tensors[2].Name = "x/w" }, `want a name starting "v/"`},
		{"v does not match m", func(w *model.Weights) { w.Tensors[3].Name = "v/c" }, `"v/c" [1] does not match "m/b"`},
	}
	for _, tt := range tests {
		w := good()
		tt.change(w)
		if err := st.SetState(w); !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("SetState(%s) = %v, want ErrBadState mentioning %q", tt.name, err, tt.msg)
		}
	}
	if err := st.SetState(nil); !errors.Is(err, ErrBadState) {
		t.Errorf("SetState(nil) = %v, want ErrBadState", err)
	}
	if err := st.SetState(good()); err != nil {
		t.Fatal(err)
	}
	// Good in itself, but not for this model.
	if _, err := s.Begin(weights(1, 2)); !errors.Is(err, ErrBadState) || !strings.Contains(err.Error(), `"m/w" [2] does not match the model's tensor 0, "w" [1]`) {
		t.Errorf("Begin over another model = %v, want ErrBadState naming the tensor", err)
	}
	if _, err := s.Begin(weights(1, 2, 3)); err != nil {
		t.Errorf("Begin over the model = %v", err)
	}
	// fedavgm's state has no v.
	m, _ := New("fedavgm", nil)
	if err := m.(Stateful).SetState(good()); err != nil {
		// Four tensors are two m/ and two v/ to fedavgm's eyes only if
		// named so; "v/w" where m/ is due is refused.
		if !errors.Is(err, ErrBadState) {
			t.Errorf("fedavgm SetState(adam state) = %v, want ErrBadState", err)
		}
	} else {
		t.Error("fedavgm SetState(adam state) = nil, want ErrBadState")
	}
}

func TestFedOptSettings(t *testing.T) {
	tests := []struct {
		name string
		s    *FedOpt
		msg  string
	}{
		{"unknown", &FedOpt{Optimizer: "fedsgd"}, `optimizer "fedsgd"`},
		{"eta", &FedOpt{Optimizer: OptAdam, Eta: -1}, "eta -1 must be positive"},
		{"beta1", &FedOpt{Optimizer: OptYogi, Beta1: 1}, "must each be at least 0 and below 1"},
		{"momentum", &FedOpt{Optimizer: OptAvgM, Momentum: 1.5}, "must each be at least 0 and below 1"},
		{"tau", &FedOpt{Optimizer: OptAdagrad, Tau: math.Inf(1)}, "tau +Inf must be positive"},
	}
	for _, tt := range tests {
		if _, err := tt.s.Begin(weights(1, 1)); err == nil || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("Begin(%s) = %v, want an error mentioning %q", tt.name, err, tt.msg)
		}
	}
	// Defaults: one fedadam round from 0 to 1 with m0 = 0, v0 = τ²:
	// m = 0.1, v = 0.99·1e-6 + 0.01, x = 0.01·0.1/(√v + 1e-3).
	s, _ := New("fedadam", nil)
	next, _ := optRoundOf(t, s, weights(0, 0), weights(1, 1))
	v := 0.99*1e-6 + 0.01
	want := float32(0.01 * 0.1 / (math.Sqrt(v) + 1e-3))
	if !cmp.Equal(flat(next), []float32{want, want}, cmpopts.EquateApprox(0, 1e-7)) {
		t.Errorf("fedadam with defaults: %v, want %v", flat(next), want)
	}
	// fedavgm with η 1 and momentum 0.9: the first round is FedAvg.
	m, _ := New("fedavgm", nil)
	if next, _ := optRoundOf(t, m, weights(0, 0), weights(3, -2)); !cmp.Equal(flat(next), []float32{3, -2}) {
		t.Errorf("fedavgm round 1 = %v, want the mean [3 -2]", flat(next))
	}
	// An optimizer step past float32's range is an error, not ±Inf.
	big := &FedOpt{Optimizer: OptAvgM, Eta: 1e38}
	r, _ := big.Begin(weights(0, 0))
	_ = r.Add(weights(1e3, 1), 1)
	if _, _, err := r.Result(); err == nil || !strings.Contains(err.Error(), "float32's range") {
		t.Errorf("Result() past float32's range = %v, want an error", err)
	}
}
