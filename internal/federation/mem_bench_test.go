package federation

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"
)

// memParams is BenchmarkTransferMemory's model size in float32 parameters.
var memParams = flag.Int64("mem-params", 16<<20, "BenchmarkTransferMemory: the transfer model's parameters (4 bytes each)")

// BenchmarkTransferMemory runs what `cohort run` runs — a coordinator and
// four site agents in this process — for one FedAvg round of a
// transfer-only model (64 MiB by default; -mem-params N), and reports the
// heap's high-water mark as a multiple of the model's size: "peak-heap/model"
// (heap objects, live or not yet collected, sampled every millisecond: what
// RSS follows) and "peak-live/model" (the live heap the collector found,
// which does not depend on GOGC). Both count the coordinator and the sites
// together, above the heap before the run.
//
//	go test -run XXX -bench TransferMemory -benchtime 1x ./internal/federation
func BenchmarkTransferMemory(b *testing.B) {
	params := *memParams
	src := []byte(fmt.Sprintf(`
name: mem
seed: 1
data: {dataset: synthetic, test_fraction: 0, synthetic: {samples_per_site: 100}}
model: {kind: transfer, params: %d}
sites: {count: 4}
rounds: 1
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 10m}
`, params))
	modelBytes := float64(4 * params)
	var peakHeap, peakLive float64
	for b.Loop() {
		runtime.GC()
		base := readHeap()
		done := make(chan struct{})
		sampled := make(chan heapSample)
		go func() {
			tick := time.NewTicker(time.Millisecond)
			defer tick.Stop()
			var peak heapSample
			for {
				s := readHeap()
				peak.objects, peak.live = max(peak.objects, s.objects), max(peak.live, s.live)
				select {
				case <-done:
					sampled <- peak
					return
				case <-tick.C:
				}
			}
		}()
		_, err := Run(context.Background(), src, Options{DBPath: filepath.Join(b.TempDir(), "cohort.db")})
		close(done)
		peak := <-sampled
		if err != nil {
			b.Fatal(err)
		}
		peakHeap = max(peakHeap, float64(peak.objects-min(base.objects, peak.objects))/modelBytes)
		peakLive = max(peakLive, float64(peak.live-min(base.live, peak.live))/modelBytes)
	}
	b.ReportMetric(peakHeap, "peak-heap/model")
	b.ReportMetric(peakLive, "peak-live/model")
}

// heapSample is one reading of the heap, in bytes.
type heapSample struct{ objects, live uint64 }

// readHeap reads the heap's objects and its live size after the last GC.
func readHeap() heapSample {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/gc/heap/live:bytes"}}
	metrics.Read(s)
	return heapSample{objects: s[0].Value.Uint64(), live: s[1].Value.Uint64()}
}
