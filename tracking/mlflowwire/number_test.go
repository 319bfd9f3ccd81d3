package mlflowwire

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestInt64Unmarshal(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{in: `123`, want: 123},
		{in: `"123"`, want: 123},
		{in: `-7`, want: -7},
		{in: `"-7"`, want: -7},
		{in: `1700000000000`, want: 1700000000000},
		{in: `"1700000000000"`, want: 1700000000000},
		{in: `9223372036854775807`, want: math.MaxInt64},
		{in: `"-9223372036854775808"`, want: math.MinInt64},
		{in: `1e3`, want: 1000},
		{in: `5.0`, want: 5},
		{in: `4611686018427387904`, want: 1 << 62},
		{in: `9223372036854775808`, wantErr: true},   // MaxInt64+1
		{in: `"9223372036854775808"`, wantErr: true}, // as a string
		{in: `-9223372036854775809`, wantErr: true},  // MinInt64-1
		{in: `99999999999999999999`, wantErr: true},  // far out
		{in: `1e19`, wantErr: true},                  // beyond 2^62 as a float
		{in: `1.5`, wantErr: true},                   // a fraction
		{in: `"abc"`, wantErr: true},                 // a word
		{in: `""`, wantErr: true},                    // empty
		{in: `true`, wantErr: true},                  // a bool
		{in: `[1]`, wantErr: true},                   // a list
		{in: `"NaN"`, wantErr: true},                 // not an integer
	} {
		n := Int64(42)
		err := n.UnmarshalJSON([]byte(tt.in))
		if tt.wantErr {
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) || te.Value != tt.in || te.Type.Kind().String() != "int64" {
				t.Errorf("Int64.UnmarshalJSON(%s) = %d, %v; want a *json.UnmarshalTypeError naming %s and int64", tt.in, n, err, tt.in)
			}
			if n != 42 {
				t.Errorf("Int64.UnmarshalJSON(%s) failed but changed the value to %d", tt.in, n)
			}
			continue
		}
		if err != nil || int64(n) != tt.want {
			t.Errorf("Int64.UnmarshalJSON(%s) = %d, %v; want %d", tt.in, n, err, tt.want)
		}
	}
}

// TestInt64Overflow checks the refusal names the field and the value, as
// a server's error message needs them.
func TestInt64Overflow(t *testing.T) {
	var req SearchRuns
	err := json.Unmarshal([]byte(`{"experiment_ids": ["1"], "max_results": "18446744073709551616"}`), &req)
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		t.Fatalf("decoding max_results 2^64: %v; want a *json.UnmarshalTypeError", err)
	}
	if te.Field != "max_results" || te.Value != `"18446744073709551616"` {
		t.Errorf("error names field %q, value %s; want max_results, \"18446744073709551616\"", te.Field, te.Value)
	}
	if msg := err.Error(); !strings.Contains(msg, "max_results") || !strings.Contains(msg, "18446744073709551616") || !strings.Contains(msg, "int64") {
		t.Errorf("error %q does not name the field, the value and int64", msg)
	}
}

func TestInt64Null(t *testing.T) {
	n := Int64(42)
	if err := n.UnmarshalJSON([]byte(`null`)); err != nil || n != 42 {
		t.Errorf("Int64(42).UnmarshalJSON(null) = %d, %v; want 42 unchanged", n, err)
	}
	var req CreateRun
	if err := json.Unmarshal([]byte(`{"start_time": null}`), &req); err != nil || req.StartTime != nil {
		t.Errorf("start_time null = %v, %v; want absent (nil)", req.StartTime, err)
	}
}

func TestInt64Marshal(t *testing.T) {
	for n, want := range map[int64]string{0: `0`, 123: `123`, -5: `-5`, 1700000000000: `1700000000000`, math.MaxInt64: `9223372036854775807`, math.MinInt64: `-9223372036854775808`} {
		b, err := json.Marshal(Int64(n))
		if err != nil || string(b) != want {
			t.Errorf("json.Marshal(Int64(%d)) = %s, %v; want %s (a number, as MLflow writes int64)", n, b, err, want)
		}
	}
	b, err := json.Marshal(UpdateRun{RunRef: RunRef{RunID: "r"}, EndTime: NewInt64(1700000000123)})
	if want := `{"run_id":"r","end_time":1700000000123}`; err != nil || string(b) != want {
		t.Errorf("json.Marshal(UpdateRun) = %s, %v; want %s", b, err, want)
	}
}

func TestFloat64Unmarshal(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    float64
		wantErr bool
	}{
		{in: `"NaN"`, want: math.NaN()},
		{in: `"Infinity"`, want: math.Inf(1)},
		{in: `"-Infinity"`, want: math.Inf(-1)},
		{in: `"inf"`, want: math.Inf(1)},
		{in: `"Inf"`, want: math.Inf(1)},
		{in: `"-inf"`, want: math.Inf(-1)},
		{in: `"-Inf"`, want: math.Inf(-1)},
		{in: `1.5`, want: 1.5},
		{in: `"2.5"`, want: 2.5},
		{in: `-0`, want: 0},
		{in: `3`, want: 3},
		{in: `1e-300`, want: 1e-300},
		{in: `"1e3"`, want: 1000},
		{in: `1e400`, wantErr: true},   // beyond float64
		{in: `"1e400"`, wantErr: true}, // the same in a string
		{in: `"nan"`, wantErr: true},   // MLflow spells it NaN
		{in: `"infinity"`, wantErr: true},
		{in: `"lots"`, wantErr: true},
		{in: `""`, wantErr: true},
		{in: `true`, wantErr: true},
		{in: `{}`, wantErr: true},
	} {
		f := Float64(42)
		err := f.UnmarshalJSON([]byte(tt.in))
		if tt.wantErr {
			var te *json.UnmarshalTypeError
			if !errors.As(err, &te) || te.Value != tt.in || f != 42 {
				t.Errorf("Float64.UnmarshalJSON(%s) = %v, %v; want a *json.UnmarshalTypeError naming %s, value unchanged", tt.in, float64(f), err, tt.in)
			}
			continue
		}
		got := float64(f)
		if err != nil || !(got == tt.want || math.IsNaN(got) && math.IsNaN(tt.want)) {
			t.Errorf("Float64.UnmarshalJSON(%s) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestFloat64Marshal(t *testing.T) {
	for _, tt := range []struct {
		in   float64
		want string
	}{
		{math.NaN(), `"NaN"`},
		{math.Inf(1), `"Infinity"`},
		{math.Inf(-1), `"-Infinity"`},
		{1.5, `1.5`},
		{0, `0`},
		{-2, `-2`},
		{1e21, `1e+21`},
		{0.1, `0.1`},
	} {
		b, err := json.Marshal(Float64(tt.in))
		if err != nil || string(b) != tt.want {
			t.Errorf("json.Marshal(Float64(%v)) = %s, %v; want %s", tt.in, b, err, tt.want)
			continue
		}
		var back Float64
		if err := json.Unmarshal(b, &back); err != nil || !(float64(back) == tt.in || math.IsNaN(tt.in) && math.IsNaN(float64(back))) {
			t.Errorf("round trip of %v through %s = %v, %v", tt.in, b, float64(back), err)
		}
	}
	b, err := json.Marshal(Metric{Key: "loss", Value: Float64(math.NaN()), Timestamp: 1700000000000, Step: 3})
	if want := `{"key":"loss","value":"NaN","timestamp":1700000000000,"step":3}`; err != nil || string(b) != want {
		t.Errorf("json.Marshal(Metric) = %s, %v; want %s", b, err, want)
	}
}

func TestViewType(t *testing.T) {
	for _, tt := range []struct {
		in      string
		want    ViewType
		wantErr bool
	}{
		{in: `"ACTIVE_ONLY"`, want: ViewActiveOnly},
		{in: `"deleted_only"`, want: ViewDeletedOnly},
		{in: `"ALL"`, want: ViewAll},
		{in: `1`, want: ViewActiveOnly},
		{in: `2`, want: ViewDeletedOnly},
		{in: `"3"`, want: ViewAll},
		{in: `4`, wantErr: true},
		{in: `"SOME"`, wantErr: true},
		{in: `""`, wantErr: true},
	} {
		var v ViewType
		err := json.Unmarshal([]byte(tt.in), &v)
		if (err != nil) != tt.wantErr || v != tt.want {
			t.Errorf("ViewType from %s = %q, %v; want %q, error %v", tt.in, v, err, tt.want, tt.wantErr)
		}
	}
}
