//go:build linux && cgo

package energy

import (
	"context"
	"math"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestRealGPU runs on a machine with an NVIDIA GPU: it loads the real NVML
// (and skips where the library is missing), runs the load command in
// $COHORT_GPU_LOAD_CMD under a measurement, and checks that the energy
// counter and the integral of instant power agree within 5%.
func TestRealGPU(t *testing.T) {
	b, reason := defaultGPUs(os.Getenv("CUDA_VISIBLE_DEVICES"))
	if b == nil {
		t.Skipf("no GPU: %s", reason)
	}
	b.close()
	load := os.Getenv("COHORT_GPU_LOAD_CMD")
	if load == "" {
		t.Skip("set COHORT_GPU_LOAD_CMD to a command that loads the GPU for ~20 s")
	}
	m, err := NewMeter(Options{Interval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, s := range m.Sources() {
		t.Logf("source %s %s available=%v %s", s.Kind, s.Name, s.Available, s.Reason)
	}
	x, _ := m.Start(context.Background())
	cmd := exec.Command("sh", "-c", load)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		x.Stop()
		t.Fatalf("load command: %v", err)
	}
	r := x.Stop()
	for _, g := range r.GPUs {
		t.Logf("gpu %d %s %s driver %s: counter %.1f J (%s), integrated %s power %.1f J, avg %.1f W max %.1f W, util %.1f%%, mem max %.0f MiB, %d samples over %.2f s",
			g.Index, g.Name, g.UUID, g.DriverVersion, g.Joules, g.Method, g.PowerSource, g.IntegratedJ, g.PowerAvgW, g.PowerMaxW, g.UtilAvgPct, float64(g.MemMaxBytes)/(1<<20), g.Samples, r.Seconds)
		if g.Method == MethodCounter && g.Joules > 0 {
			if d := math.Abs(g.IntegratedJ-g.Joules) / g.Joules; d > 0.05 {
				t.Errorf("gpu %d: integrated %.1f J vs counter %.1f J differ by %.1f%%, want ≤ 5%%", g.Index, g.IntegratedJ, g.Joules, 100*d)
			} else {
				t.Logf("gpu %d: counter and integral agree within %.2f%%", g.Index, 100*d)
			}
		}
	}
	for _, c := range r.CPU {
		t.Logf("rapl %s: %.1f J", c.Name, c.Joules)
	}
	t.Logf("estimate: %.2f CPU s = %.1f J", r.Estimated.CPUSeconds, r.Estimated.Joules)
}

// BenchmarkNVMLSample is one sampling tick on the real GPUs.
func BenchmarkNVMLSample(b *testing.B) {
	m, _ := NewMeter(Options{})
	defer m.Close()
	if m.gpus == nil {
		b.Skip("no GPU")
	}
	x, _ := m.Start(context.Background())
	defer x.Stop()
	now := time.Now()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		x.sample(now)
	}
}

// BenchmarkNVMLEnergyCounter is one read of the total-energy counter.
func BenchmarkNVMLEnergyCounter(b *testing.B) {
	m, _ := NewMeter(Options{})
	defer m.Close()
	if m.gpus == nil {
		b.Skip("no GPU")
	}
	d := m.gpus.devices()[0]
	for b.Loop() {
		_, _ = d.energyMJ()
	}
}
