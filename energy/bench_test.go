package energy

import (
	"context"
	"os"
	"testing"
	"time"
)

// benchTicks runs b.N sampling ticks of a measurement on m as its sampler
// does at a 100 ms interval: every tick samples the GPUs' power,
// utilization and memory, every 10th also reads the energy counters (NVML
// and RAPL). It reports the process CPU time per tick (cpu-ns/tick) and
// what that costs at 10 Hz as a percentage of one core (core-%@10Hz).
func benchTicks(b *testing.B, m *Meter) {
	x, err := m.Start(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	x.cancel() // the benchmark is the sampler
	<-x.done
	defer x.Stop()
	now := time.Now()
	cpu0 := processCPUTime()
	n := 0
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		x.mu.Lock()
		x.sample(now)
		x.mu.Unlock()
		if n%10 == 9 {
			x.readCounters(now)
		}
		n++
	}
	perTick := float64(processCPUTime()-cpu0) / float64(n)
	b.ReportMetric(perTick, "cpu-ns/tick")
	b.ReportMetric(perTick*10/1e9*100, "core-%@10Hz")
}

// BenchmarkSample is the sampler's cost for one GPU (a fake: NVML's own
// calls are measured by BenchmarkNVMLSample on a GPU machine) and the
// three RAPL domains of testdata/powercap (real file reads).
func BenchmarkSample(b *testing.B) {
	g := newFakeGPU("GPU-bench", true)
	m, err := NewMeter(Options{gpus: gpus(g), powercap: os.DirFS("testdata/powercap"), PowercapRoot: "testdata/powercap"})
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	if len(m.rapl) != 3 {
		b.Fatalf("%d RAPL domains in testdata, want 3", len(m.rapl))
	}
	benchTicks(b, m)
}
