package mlflowwire

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// messages are every envelope a client or server decodes, each as a
// function returning a new zero value to decode into.
var messages = []func() any{
	func() any { return new(CreateExperiment) },
	func() any { return new(CreateExperimentResponse) },
	func() any { return new(ExperimentResponse) },
	func() any { return new(CreateRun) },
	func() any { return new(RunResponse) },
	func() any { return new(UpdateRun) },
	func() any { return new(UpdateRunResponse) },
	func() any { return new(LogBatch) },
	func() any { return new(LogInputs) },
	func() any { return new(SearchRuns) },
	func() any { return new(SearchRunsResponse) },
	func() any { return new(MetricHistoryResponse) },
	func() any { return new(RegisteredModelResponse) },
	func() any { return new(ModelVersionResponse) },
	func() any { return new(FileInfo) },
	func() any { return new(SearchExperimentsResponse) },
	func() any { return new(SearchRegisteredModelsResponse) },
	func() any { return new(ModelVersionsResponse) },
	func() any { return new(ListArtifactsResponse) },
	func() any { return new(ProxyListResponse) },
	func() any { return new(RunMetric) },
	func() any { return new(DatasetSummary) },
}

// equal compares decoded messages: NaN equals NaN, and an empty list
// equals an absent one (omitempty drops it when encoding).
var equal = []cmp.Option{
	cmp.Comparer(func(a, b Float64) bool { return a == b || a != a && b != b }),
	cmpopts.EquateEmpty(),
}

// FuzzDecode decodes any bytes into each envelope; what decodes must
// encode, and decode from that encoding to the same value.
func FuzzDecode(f *testing.F) {
	for _, seed := range []string{
		`{"name": "fmnist", "tags": [{"key": "a", "value": "b"}]}`,
		`{"experiment_id": "1", "user_id": "u", "run_name": "r", "start_time": "1700000000000", "tags": [{"key": "mlflow.parentRunId", "value": "p"}]}`,
		`{"run_id": "r", "run_uuid": "r", "status": "FINISHED", "end_time": 1700000000001}`,
		`{"run_id": "r", "metrics": [{"key": "loss", "value": "NaN", "timestamp": "1", "step": 2}, {"key": "acc", "value": "-Infinity", "timestamp": 1e3}], "params": [{"key": "lr", "value": "0.1"}]}`,
		`{"run_uuid": "r", "datasets": [{"tags": [{"key": "mlflow.data.context", "value": "training"}], "dataset": {"name": "d", "digest": "x", "source_type": "local", "source": "{}"}}]}`,
		`{"experiment_ids": ["0", "1"], "filter": "metrics.acc > 0.5", "run_view_type": 3, "max_results": "10", "order_by": ["start_time DESC"], "page_token": "t"}`,
		`{"run": {"info": {"run_id": "r", "start_time": 1, "end_time": "2", "status": "RUNNING"}, "data": {"metrics": [{"key": "a", "value": "Infinity", "timestamp": 1, "step": 0}]}, "inputs": {"dataset_inputs": [{"dataset": {"name": "d"}}]}}}`,
		`{"runs": [{"info": {"run_uuid": "u"}}], "next_page_token": "n"}`,
		`{"registered_model": {"name": "m", "creation_timestamp": "5", "latest_versions": [{"name": "m", "version": "1", "aliases": ["prod"]}], "aliases": [{"alias": "prod", "version": "1"}]}}`,
		`{"path": "model/MLmodel", "is_dir": false, "file_size": "123"}`,
		`{"max_results": 1.5}`, `{"start_time": 99999999999999999999}`, `{"metrics": [null]}`, `null`, `[]`, `"x"`, `{`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, newMsg := range messages {
			first := newMsg()
			if json.Unmarshal(b, first) != nil {
				continue
			}
			enc, err := json.Marshal(first)
			if err != nil {
				t.Fatalf("%T decoded from %q does not encode: %v", first, b, err)
			}
			second := newMsg()
			if err := json.Unmarshal(enc, second); err != nil {
				t.Fatalf("%T: %q decoded, encoded as %s, which does not decode: %v", first, b, enc, err)
			}
			if diff := cmp.Diff(first, second, equal...); diff != "" {
				t.Fatalf("%T: %q decoded, encoded as %s, decoded again differs (-first +second):\n%s", first, b, enc, diff)
			}
		}
	})
}

// TestMessagesCoverEnvelopes keeps messages in step with the package: a
// new exported struct that is neither an entity nor in messages fails.
func TestMessagesCoverEnvelopes(t *testing.T) {
	have := map[string]bool{}
	for _, m := range messages {
		have[reflect.TypeOf(m()).Elem().Name()] = true
	}
	for _, name := range []string{"CreateExperiment", "CreateRun", "UpdateRun", "LogBatch", "LogInputs", "SearchRuns", "RunResponse", "SearchRunsResponse"} {
		if !have[name] {
			t.Errorf("FuzzDecode does not decode %s; add it to messages", name)
		}
	}
	if len(have) != len(messages) {
		t.Errorf("messages lists a type twice: %v", fmt.Sprint(have))
	}
}
