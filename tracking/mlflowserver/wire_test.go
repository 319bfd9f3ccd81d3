package mlflowserver

import (
	"net/http"
	"strings"
	"testing"
)

// TestWireQuirks checks MLflow's number quirks end to end, through
// mlflowwire: values the schema lets through but the wire types refuse
// are reported under the parameter's JSON name, never a Go type's; NaN
// and ±Infinity are stored and given back as MLflow spells them.
func TestWireQuirks(t *testing.T) {
	f := newFixture(t, Config{})
	run := f.createRun("0", nil)
	for _, tt := range []struct {
		name, path, body, want string
	}{
		{"log-metric value nan", "runs/log-metric", `{"run_id": "` + run + `", "key": "k", "value": "nan", "timestamp": 1}`,
			`Invalid value "nan" for parameter 'value' supplied`},
		{"log-batch value infinity", "runs/log-batch", `{"run_id": "` + run + `", "metrics": [{"key": "k", "value": "infinity", "timestamp": 1}]}`,
			`Invalid value "infinity" for parameter 'metrics.value' supplied`},
		{"start_time past int64", "runs/create", `{"experiment_id": "0", "start_time": "99999999999999999999"}`,
			`Invalid value "99999999999999999999" for parameter 'start_time' supplied`},
		{"end_time a fraction", "runs/update", `{"run_id": "` + run + `", "end_time": 1.5}`,
			`Invalid value 1.5 for parameter 'end_time' supplied`},
		{"unknown view type", "runs/search", `{"experiment_ids": ["0"], "run_view_type": "SOME"}`,
			`Invalid value "SOME" for parameter 'run_view_type' supplied`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, out := f.call("POST", api+tt.path, tt.body)
			msg, _ := out["message"].(string)
			if st != http.StatusBadRequest || out["error_code"] != "INVALID_PARAMETER_VALUE" || !strings.Contains(msg, tt.want) {
				t.Fatalf("POST %s %s = %d %v %q; want 400 INVALID_PARAMETER_VALUE containing %q", tt.path, tt.body, st, out["error_code"], msg, tt.want)
			}
			if strings.Contains(msg, "mlflowwire") || strings.Contains(msg, "Metric.") || strings.Contains(msg, "RunRef") {
				t.Errorf("message names a Go type: %q", msg)
			}
		})
	}

	f.must("POST", api+"runs/log-batch", `{"run_id": "`+run+`", "metrics": [`+
		`{"key": "q", "value": "NaN", "timestamp": "1", "step": "0"}, {"key": "q", "value": "Infinity", "timestamp": 2, "step": 1}, `+
		`{"key": "q", "value": "-Infinity", "timestamp": 3, "step": 2}, {"key": "q", "value": "2.5", "timestamp": 4, "step": "3"}]}`)
	out := f.must("GET", api+"metrics/get-history?run_id="+run+"&metric_key=q", nil)
	ms, _ := out["metrics"].([]any)
	var got []any
	for _, m := range ms {
		got = append(got, m.(map[string]any)["value"])
	}
	want := []any{"NaN", "Infinity", "-Infinity", 2.5}
	if len(got) != len(want) {
		t.Fatalf("history values = %v; want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("history value %d = %#v; want %#v", i, got[i], want[i])
		}
	}
}
