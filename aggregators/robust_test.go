package aggregators

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/model"
)

func TestRobustKnownNumbers(t *testing.T) {
	ws := func(vs ...[2]float32) []*model.Weights {
		var out []*model.Weights
		for _, v := range vs {
			out = append(out, weights(v[0], v[1]))
		}
		return out
	}
	// Four honest sites near (1, 2) and one outlier at (100, −100).
	honest := ws([2]float32{1, 2}, [2]float32{1.1, 2}, [2]float32{0.9, 1.9}, [2]float32{1, 2.2}, [2]float32{100, -100})
	tests := []struct {
		name     string
		strategy string
		params   map[string]float64
		global   *model.Weights
		updates  []*model.Weights
		want     []float32
		selected float64 // krum: the "selected" metric
		index    float64 // krum: the "selected_index" metric, −1 for none
	}{
		// Sorted (1, 2, 7): 2; sorted (−4, 0, 5): 0.
		{"median odd", "median", nil, weights(0, 0), ws([2]float32{7, 0}, [2]float32{1, -4}, [2]float32{2, 5}), []float32{2, 0}, 0, -1},
		// Sorted (1, 2, 3, 10): (2 + 3)/2; sorted (−1, 0, 4, 8): (0 + 4)/2.
		{"median even", "median", nil, weights(0, 0), ws([2]float32{10, 0}, [2]float32{1, 8}, [2]float32{3, -1}, [2]float32{2, 4}), []float32{2.5, 2}, 0, -1},
		{"median one update", "median", nil, weights(9, 9), ws([2]float32{0.1, -7}), []float32{0.1, -7}, 0, -1},
		{"median ignores an outlier", "median", nil, weights(0, 0), honest, []float32{1, 2}, 0, -1},
		// β = 0.2 of 5 trims 1 at each end: (1 + 2 + 3)/3 = 2 and
		// (−1 + 0 + 4)/3 = 1.
		{"trimmed mean 1 of 5", "trimmed_mean", map[string]float64{"beta": 0.2}, weights(0, 0), ws([2]float32{1, 0}, [2]float32{100, -1}, [2]float32{2, 4}, [2]float32{3, 50}, [2]float32{-50, -9}), []float32{2, 1}, 0, -1},
		// β = 0.1 of 5 trims ⌊0.5⌋ = 0: the plain mean, (1+100+2+3−50)/5 = 11.2.
		{"trimmed mean default beta", "trimmed_mean", nil, weights(0, 0), ws([2]float32{1, 0}, [2]float32{100, 0}, [2]float32{2, 0}, [2]float32{3, 0}, [2]float32{-50, 0}), []float32{11.2, 0}, 0, -1},
		// f = 1, n = 5: each score sums the squared distances to the 2
		// closest others. (1, 2): 0.01 + 0.02; (1.1, 2): 0.01 + 0.05;
		// (0.9, 1.9): 0.02 + 0.05; (1, 2.2): 0.04 + 0.05; the outlier
		// scores about 4·10^4.
		{"krum picks an honest update", "krum", map[string]float64{"f": 1}, weights(0, 0), honest, []float32{1, 2}, 1, 0},
		// multi_krum, m = 2: the two best scores, (1, 2) and (1.1, 2),
		// averaged.
		{"multi krum averages m", "multi_krum", map[string]float64{"f": 1, "m": 2}, weights(0, 0), honest, []float32{1.05, 2}, 2, -1},
		// m = 0: n − f = 4, the four honest ones: (4/4, 8.1/4).
		{"multi krum default m", "multi_krum", map[string]float64{"f": 1}, weights(0, 0), honest, []float32{1, 2.025}, 4, -1},
		// server_lr 0.5: halfway from the global (2, 4) to the median (4, 8).
		{"median server lr", "median", map[string]float64{"server_lr": 0.5}, weights(2, 4), ws([2]float32{4, 8}, [2]float32{4, 8}, [2]float32{100, 100}), []float32{3, 6}, 0, -1},
		{"krum server lr", "krum", map[string]float64{"f": 0, "server_lr": 2}, weights(1, 1), ws([2]float32{2, 2}, [2]float32{2, 2}, [2]float32{2, 2}), []float32{3, 3}, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.strategy, tt.params)
			if err != nil {
				t.Fatal(err)
			}
			before := flat(tt.global)
			r, err := s.Begin(tt.global)
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range tt.updates {
				u = u.Clone()
				// Sample counts are ignored: a claim of 2^40 changes nothing.
				if err := r.Add(u, int64(1)<<(10*(i%5))); err != nil {
					t.Fatal(err)
				}
				u.Tensors[0].Data[0] = 1e9 // the round keeps its own copy
			}
			next, metrics, err := r.Result()
			if err != nil {
				t.Fatal(err)
			}
			if got := flat(next); !cmp.Equal(got, tt.want, cmp.Comparer(func(a, b float32) bool { return math.Abs(float64(a-b)) <= 1e-6 })) {
				t.Errorf("%s Result() = %v, want %v", tt.strategy, got, tt.want)
			}
			if got := flat(tt.global); !cmp.Equal(got, before) {
				t.Errorf("the global model changed to %v, was %v", got, before)
			}
			if metrics["updates"] != float64(len(tt.updates)) {
				t.Errorf("metrics[updates] = %v, want %d", metrics["updates"], len(tt.updates))
			}
			var norm float64
			for i, v := range flat(next) {
				d := float64(v) - float64(before[i])
				norm += d * d
			}
			if got := metrics["update_norm"]; math.Abs(got-math.Sqrt(norm)) > 1e-9 {
				t.Errorf("metrics[update_norm] = %v, want %v", got, math.Sqrt(norm))
			}
			if got := metrics["selected"]; got != tt.selected {
				t.Errorf("metrics[selected] = %v, want %v", got, tt.selected)
			}
			if got, ok := metrics["selected_index"]; (tt.index >= 0) != ok || ok && got != tt.index {
				t.Errorf("metrics[selected_index] = %v (present %v), want %v", got, ok, tt.index)
			}
		})
	}
}

func TestRobustErrors(t *testing.T) {
	reshaped := weights(1, 1, 1)
	for _, name := range []string{"median", "trimmed_mean", "krum", "multi_krum"} {
		s, _ := New(name, nil)
		r, err := s.Begin(weights(0, 0))
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := r.Result(); !errors.Is(err, ErrNoUpdates) {
			t.Errorf("%s: Result() with no updates = %v, want ErrNoUpdates", name, err)
		}
		for _, tt := range []struct {
			name string
			w    *model.Weights
			n    int64
			want error
			msg  string
		}{
			{"shape", reshaped, 1, model.ErrIncompatible, `"w" has shape [2], want [1]`},
			{"nan", weights(1, float32(math.NaN())), 1, model.ErrNotFinite, `"b" holds NaN at index 0`},
			{"inf", weights(float32(math.Inf(-1)), 1), 1, model.ErrNotFinite, "-Inf"},
			{"zero samples", weights(1, 1), 0, ErrBadUpdate, "0 samples"},
			{"nil", nil, 1, model.ErrIncompatible, "nil"},
		} {
			if err := r.Add(tt.w, tt.n); !errors.Is(err, ErrBadUpdate) || !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("%s: Add(%s) = %v, want ErrBadUpdate and %v mentioning %q", name, tt.name, err, tt.want, tt.msg)
			}
		}
		if _, _, err := r.Result(); !errors.Is(err, ErrNoUpdates) {
			t.Errorf("%s: Result() after refused updates = %v, want ErrNoUpdates", name, err)
		}
	}

	// Krum with f = 1 needs n ≥ 2f + 3 = 5.
	for _, name := range []string{"krum", "multi_krum"} {
		s, _ := New(name, map[string]float64{"f": 1})
		r, _ := s.Begin(weights(0, 0))
		for range 4 {
			_ = r.Add(weights(1, 1), 1)
		}
		if _, _, err := r.Result(); err == nil || !strings.Contains(err.Error(), "f = 1") || !strings.Contains(err.Error(), "n = 4") {
			t.Errorf("%s: Result() with f = 1 and 4 updates = %v, want an error naming f = 1 and n = 4", name, err)
		}
		_ = r.Add(weights(1, 1), 1)
		if _, _, err := r.Result(); err != nil {
			t.Errorf("%s: Result() with f = 1 and 5 updates = %v", name, err)
		}
	}
	s, _ := New("multi_krum", map[string]float64{"f": 0, "m": 4})
	r, _ := s.Begin(weights(0, 0))
	for range 3 {
		_ = r.Add(weights(1, 1), 1)
	}
	if _, _, err := r.Result(); err == nil || !strings.Contains(err.Error(), "m = 4") {
		t.Errorf("multi_krum: Result() with m = 4 of 3 updates = %v, want an error naming m", err)
	}

	// The memory budget: two 8-byte updates fit in 16 bytes, a third is
	// refused and the round is unchanged.
	r, _ = (&Median{MaxBytes: 16}).Begin(weights(0, 0))
	_ = r.Add(weights(1, 1), 1)
	_ = r.Add(weights(3, 3), 1)
	if err := r.Add(weights(5, 5), 1); !errors.Is(err, ErrBadUpdate) || !strings.Contains(err.Error(), "memory budget of 16 bytes") {
		t.Errorf("Add past the memory budget = %v, want ErrBadUpdate naming the budget", err)
	}
	if next, m, _ := r.Result(); !cmp.Equal(flat(next), []float32{2, 2}) || m["updates"] != 2 {
		t.Errorf("Result() after a refused Add = %v, %v, want [2 2] from 2 updates", flat(next), m)
	}

	for _, s := range []Strategy{&TrimmedMean{Beta: 0.5}, &TrimmedMean{Beta: -0.1}, &Krum{F: -1}, &MultiKrum{M: -1}, &Median{MaxBytes: -1}, &Median{ServerLR: -1}} {
		if _, err := s.Begin(weights(0, 0)); err == nil {
			t.Errorf("%+v.Begin = nil error, want one", s)
		}
	}
	if _, err := (&Median{}).Begin(weights(1, float32(math.NaN()))); !errors.Is(err, ErrBadGlobal) {
		t.Errorf("Median.Begin(NaN global) = %v, want ErrBadGlobal", err)
	}
}

// TestRobustMatchesNaive runs the robust rules on a model big enough to be
// split across workers and compares with a plain per-coordinate loop.
func TestRobustMatchesNaive(t *testing.T) {
	const p = 3*serialMax + 5
	global := &model.Weights{Tensors: []model.Tensor{{Name: "a", Shape: []int{p - 7}, Data: make([]float32, p-7)}, {Name: "b", Shape: []int{7}, Data: make([]float32, 7)}}}
	var us []*model.Weights
	for k := range 6 {
		u := global.ZerosLike()
		for i := range u.Tensors {
			for j := range u.Tensors[i].Data {
				u.Tensors[i].Data[j] = float32((j*(k+3))%11) - float32(k)
			}
		}
		us = append(us, u)
	}
	run := func(s Strategy) (*model.Weights, map[string]float64) {
		t.Helper()
		r, _ := s.Begin(global)
		for _, u := range us {
			if err := r.Add(u, 1); err != nil {
				t.Fatal(err)
			}
		}
		next, m, err := r.Result()
		if err != nil {
			t.Fatal(err)
		}
		return next, m
	}
	median, _ := run(&Median{})
	trimmed, _ := run(&TrimmedMean{Beta: 1.0 / 6})
	for i, tn := range median.Tensors {
		for j, got := range tn.Data {
			col := make([]float64, len(us))
			for k, u := range us {
				col[k] = float64(u.Tensors[i].Data[j])
			}
			sortSmall(col)
			if want := float32((col[2] + col[3]) / 2); got != want {
				t.Fatalf("median %s[%d] = %v, want %v", tn.Name, j, got, want)
			}
			if want := float32((col[1] + col[2] + col[3] + col[4]) / 4); trimmed.Tensors[i].Data[j] != want {
				t.Fatalf("trimmed mean %s[%d] = %v, want %v", tn.Name, j, trimmed.Tensors[i].Data[j], want)
			}
		}
	}
	// Krum over the same updates: scores from a naive pass over the flat
	// parameters must pick the same update.
	n, f := len(us), 1
	flats := make([][]float32, n)
	for k, u := range us {
		flats[k] = flat(u)
	}
	best, bestScore := -1, math.Inf(1)
	for a := range n {
		var ds []float64
		for b := range n {
			if b == a {
				continue
			}
			var d float64
			for j := range flats[a] {
				e := float64(flats[a][j]) - float64(flats[b][j])
				d += e * e
			}
			ds = append(ds, d)
		}
		sortSmall(ds)
		var score float64
		for _, d := range ds[:n-f-2] {
			score += d
		}
		if score < bestScore {
			best, bestScore = a, score
		}
	}
	krum, m := run(&Krum{F: f})
	if m["selected_index"] != float64(best) || !cmp.Equal(flat(krum), flats[best]) {
		t.Errorf("krum selected update %v, the naive scores pick %d", m["selected_index"], best)
	}
}

func TestNewRobust(t *testing.T) {
	tests := []struct {
		name   string
		params map[string]float64
		want   Strategy
		msg    string
	}{
		{"median", nil, &Median{}, ""},
		{"median", map[string]float64{"mu": 0, "server_lr": 0.5}, &Median{ServerLR: 0.5}, ""},
		{"trimmed_mean", nil, &TrimmedMean{Beta: 0.1}, ""},
		{"trimmed_mean", map[string]float64{"beta": 0}, &TrimmedMean{}, ""},
		{"krum", nil, &Krum{F: 1}, ""},
		{"krum", map[string]float64{"f": 0}, &Krum{}, ""},
		{"multi_krum", map[string]float64{"f": 2, "m": 3}, &MultiKrum{F: 2, M: 3}, ""},
		{"trimmed_mean", map[string]float64{"beta": 0.5}, nil, "beta 0.5 must be at least 0 and below 0.5"},
		{"trimmed_mean", map[string]float64{"beta": math.NaN()}, nil, "beta NaN"},
		{"krum", map[string]float64{"f": 1.5}, nil, "f 1.5 must be a whole number"},
		{"krum", map[string]float64{"f": -1}, nil, "f -1 must be a whole number"},
		{"multi_krum", map[string]float64{"m": math.Inf(1)}, nil, "m +Inf"},
		{"krum", map[string]float64{"m": 2}, nil, `strategy krum has no parameter "m"; it takes f, server_lr`},
		{"median", map[string]float64{"beta": 0.1}, nil, `no parameter "beta"; it takes server_lr`},
		{"fedavg", map[string]float64{"f": 1}, nil, `no parameter "f"`},
		{"median", map[string]float64{"mu": 0.1}, nil, "use fedprox"},
	}
	for _, tt := range tests {
		s, err := New(tt.name, tt.params)
		if tt.want != nil {
			if err != nil || !cmp.Equal(s, tt.want) || s.Name() != tt.name {
				t.Errorf("New(%q, %v) = %+v, %v, want %+v", tt.name, tt.params, s, err, tt.want)
			}
			continue
		}
		if !errors.Is(err, ErrBadParams) || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("New(%q, %v) = %v, want ErrBadParams mentioning %q", tt.name, tt.params, err, tt.msg)
		}
	}
	for _, name := range Names() {
		if Params(name) == nil {
			t.Errorf("Params(%q) = nil, want its parameters", name)
		}
	}
}

func TestTrimmedMeanTrimsFloorBetaN(t *testing.T) {
	tests := []struct {
		beta float64
		n    int
		want float64 // values 0 … n−1: the mean of those kept
	}{
		{0, 4, 1.5},
		{0.2, 5, 2},       // trims 1 at each end
		{0.29, 100, 49.5}, // trims 29, not 28
		{0.49, 3, 1},      // ⌊1.47⌋ = 1: only the middle one
		{0.1, 9, 4},       // ⌊0.9⌋ = 0
	}
	for _, tt := range tests {
		x := make([]float64, tt.n)
		for i := range x {
			x[i] = float64(i)
		}
		x[0] = -1e9 // an outlier the trimming must drop whenever it trims
		want := tt.want
		if k := int(math.Floor(tt.beta*float64(tt.n) + 1e-9)); k == 0 {
			want = (float64(tt.n*(tt.n-1))/2 - 1e9) / float64(tt.n)
		}
		if got := trimmedMeanOf(x, tt.beta); math.Abs(got-want) > 1e-9 {
			t.Errorf("trimmedMeanOf(%d values, %v) = %v, want %v", tt.n, tt.beta, got, want)
		}
	}
}
