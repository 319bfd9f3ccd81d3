package mlflowwire_test

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// A client encodes a batch as MLflow takes it; a server decodes it,
// int64s sent as strings and NaN included, and reads tracking metrics
// back.
func Example() {
	batch := mlflowwire.LogBatch{RunRef: mlflowwire.RunRef{RunID: "r1"}}
	for _, m := range []tracking.Metric{{Key: "loss", Value: math.NaN(), Timestamp: 1700000000000, Step: 1}, {Key: "acc", Value: math.Inf(1), Timestamp: 1700000000000}} {
		batch.Metrics = append(batch.Metrics, mlflowwire.FromMetric(m))
	}
	b, _ := json.Marshal(batch)
	fmt.Println(string(b))

	var got mlflowwire.LogBatch
	if err := json.Unmarshal([]byte(`{"run_uuid": "r1", "metrics": [{"key": "loss", "value": "-Infinity", "timestamp": "1700000000000", "step": "2"}]}`), &got); err != nil {
		fmt.Println(err)
	}
	fmt.Println(got.ID(), got.Metrics[0].ToTracking())

	err := json.Unmarshal([]byte(`{"metrics": [{"timestamp": "9223372036854775808"}]}`), &got)
	fmt.Println(err)
	// Output:
	// {"run_id":"r1","metrics":[{"key":"loss","value":"NaN","timestamp":1700000000000,"step":1},{"key":"acc","value":"Infinity","timestamp":1700000000000,"step":0}]}
	// r1 {loss -Inf 1700000000000 2}
	// json: cannot unmarshal "9223372036854775808" into Go struct field Metric.metrics.timestamp of type int64
}
