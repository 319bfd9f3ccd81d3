//go:build linux && cgo

package energy

import (
	"context"
	"math"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// These tests load the real NVML. They skip where libnvidia-ml is missing
// (nvml.ERROR_LIBRARY_NOT_FOUND) and run for real on a GPU machine; they
// print their figures with t.Logf (run with -test.v). Build them there
// with `go test -c -o energy.test ./energy`.

// realMeter opens the machine's own sources, or skips without NVML.
func realMeter(t testing.TB, o Options) *Meter {
	t.Helper()
	lib := nvml.New()
	switch ret := lib.Init(); ret {
	case nvml.SUCCESS:
		lib.Shutdown()
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		t.Skip("libnvidia-ml not found: not a GPU machine")
	default:
		t.Fatalf("libnvidia-ml is installed but NVML does not start: %v", ret)
	}
	m, err := NewMeter(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	if m.gpus == nil {
		t.Fatalf("NVML started but the meter has no GPU: %+v", m.Sources())
	}
	return m
}

func logReport(t *testing.T, r Report) {
	t.Helper()
	t.Logf("window %.3f s, interval %s, counters every %s, low confidence %v", r.Seconds, r.Interval, r.CounterInterval, r.LowConfidence)
	for _, g := range r.GPUs {
		gap := math.NaN()
		if g.Joules > 0 {
			gap = 100 * (g.IntegratedJ - g.Joules) / g.Joules
		}
		t.Logf("gpu %d %s %s driver %s: %.2f J by %s; ∫ %s power %.2f J (%+.2f%%); power avg %.1f W max %.1f W; util %.1f%%; memory max %.0f MiB; %d samples; shared %v; resets %d; notes %q",
			g.Index, g.Name, g.UUID, g.DriverVersion, g.Joules, g.Method, g.PowerSource, g.IntegratedJ, gap,
			g.PowerAvgW, g.PowerMaxW, g.UtilAvgPct, float64(g.MemMaxBytes)/(1<<20), g.Samples, g.Shared, g.Resets, g.Notes)
	}
	for _, c := range r.CPU {
		t.Logf("rapl %s: %.2f J by %s (%.1f W), %d wraps", c.Name, c.Joules, c.Method, c.Joules/r.Seconds, c.Wraps)
	}
	t.Logf("estimate: %.3f CPU s × %g W = %.2f J", r.Estimated.CPUSeconds, r.Estimated.WattsPerCore, r.Estimated.Joules)
}

// TestRealGPUIdle measures 3 s of whatever the GPUs are doing: every GPU
// reports a positive figure, a sane power and a full timeline.
func TestRealGPUIdle(t *testing.T) {
	m := realMeter(t, Options{})
	for _, s := range m.Sources() {
		t.Logf("source %s %q available=%v: %s", s.Kind, s.Name, s.Available, s.Reason)
	}
	x, err := m.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	r := x.Stop()
	logReport(t, r)
	for _, g := range r.GPUs {
		if g.Joules <= 0 || g.IntegratedJ <= 0 {
			t.Errorf("gpu %d: %.2f J by %s, ∫ %.2f J; want both positive", g.Index, g.Joules, g.Method, g.IntegratedJ)
		}
		if g.PowerAvgW <= 0 || g.PowerMaxW > 2000 {
			t.Errorf("gpu %d: power avg %.1f W max %.1f W, want within (0, 2000] W", g.Index, g.PowerAvgW, g.PowerMaxW)
		}
		if g.Samples < 20 { // 3 s at 100 ms is 31
			t.Errorf("gpu %d: %d samples over 3 s at 100 ms, want ≥ 20", g.Index, g.Samples)
		}
		if g.DriverVersion == "" || g.UUID == "" {
			t.Errorf("gpu %d: driver %q, UUID %q; want both", g.Index, g.DriverVersion, g.UUID)
		}
	}
}

// TestRealGPULoad runs $COHORT_GPU_LOAD_CMD (a command that keeps the GPU
// busy for ~20 s, e.g. PyTorch matmuls) under a measurement and checks
// that NVML's energy counter and the integral of instant power agree
// within 5%.
func TestRealGPULoad(t *testing.T) {
	load := os.Getenv("COHORT_GPU_LOAD_CMD")
	if load == "" {
		t.Skip("set COHORT_GPU_LOAD_CMD to a command that loads the GPU for ~20 s")
	}
	m := realMeter(t, Options{})
	x, err := m.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", load)
	cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
	runErr := cmd.Run()
	r := x.Stop()
	if runErr != nil {
		t.Fatalf("load command %q: %v", load, runErr)
	}
	logReport(t, r)
	busy := false
	for _, g := range r.GPUs {
		if g.UtilAvgPct < 10 {
			t.Logf("gpu %d: utilization %.1f%%: not the loaded GPU", g.Index, g.UtilAvgPct)
			continue
		}
		busy = true
		if g.Method != MethodCounter {
			t.Errorf("gpu %d: %s, want counter on Volta and later", g.Index, g.Method)
			continue
		}
		d := math.Abs(g.IntegratedJ-g.Joules) / g.Joules
		if d > 0.05 {
			t.Errorf("gpu %d: ∫ %s power %.1f J vs counter %.1f J: %.2f%% apart, want ≤ 5%%", g.Index, g.PowerSource, g.IntegratedJ, g.Joules, 100*d)
		} else {
			t.Logf("gpu %d: counter and ∫ %s power agree within %.2f%% over %.1f s", g.Index, g.PowerSource, 100*d, r.Seconds)
		}
	}
	if !busy {
		t.Error("no GPU was above 10% utilization: the load command did not load a GPU this meter sees")
	}
}

// TestRealGPUVisibleDevices selects the first GPU by UUID, as
// CUDA_VISIBLE_DEVICES=GPU-… would.
func TestRealGPUVisibleDevices(t *testing.T) {
	all := realMeter(t, Options{Devices: "all"})
	first := all.gpus.devices()[0].info().uuid
	one := realMeter(t, Options{Devices: first})
	if got := one.gpus.devices(); len(got) != 1 || got[0].info().uuid != first {
		t.Errorf("Devices=%q selects %d GPUs, want exactly %s", first, len(got), first)
	}
	none, err := NewMeter(Options{Devices: "-1"})
	if err != nil {
		t.Fatal(err)
	}
	defer none.Close()
	if none.gpus != nil || none.Sources()[0].Available {
		t.Errorf("Devices=-1 gives sources %+v, want NVML unavailable (no GPU visible)", none.Sources())
	}
}

// BenchmarkNVMLSample is the sampler's cost on the real GPUs (and RAPL
// where readable): one tick at 10 Hz, the energy counters every 10th.
func BenchmarkNVMLSample(b *testing.B) {
	benchTicks(b, realMeter(b, Options{}))
}

// BenchmarkNVMLEnergyCounter is one read of the first GPU's total-energy
// counter, with its CPU time.
func BenchmarkNVMLEnergyCounter(b *testing.B) {
	d := realMeter(b, Options{}).gpus.devices()[0]
	cpu0, n := processCPUTime(), 0
	for b.Loop() {
		if _, err := d.energyMJ(); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(processCPUTime()-cpu0)/float64(n), "cpu-ns/read")
}

// TestRealGPUShared runs $COHORT_GPU_LOAD_CMD under one measurement and a
// sleep under another, overlapping, each tracking its process, plus an
// untracked measurement: the three shares add up to the GPU's counter over
// the union of the windows, and the figures show how NVML's per-process
// utilization answered. It also measures idle power first.
func TestRealGPUShared(t *testing.T) {
	load := os.Getenv("COHORT_GPU_LOAD_CMD")
	if load == "" {
		t.Skip("set COHORT_GPU_LOAD_CMD to a command that loads the GPU for ~20 s")
	}
	m := realMeter(t, Options{})
	idle, err := m.Idle(context.Background(), 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("idle: %.1f W by %s; GPUs %+v; CPU %+v", idle.Watts, idle.Method, idle.GPUs, idle.CPU)
	if len(idle.GPUs) == 0 || idle.GPUs[0].Watts <= 0 {
		t.Errorf("idle GPUs = %+v, want a positive wattage", idle.GPUs)
	}
	run := func(cmdline string) (*Measurement, *exec.Cmd) {
		x, err := m.Start(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("sh", "-c", cmdline)
		cmd.Stdout, cmd.Stderr = t.Output(), t.Output()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		x.Track(cmd.Process.Pid)
		return x, cmd
	}
	untracked, err := m.Start(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	busy, bc := run(load)
	quiet, qc := run("sleep 10")
	_ = qc.Wait()
	rq := quiet.Stop()
	if err := bc.Wait(); err != nil {
		t.Fatalf("load command %q: %v", load, err)
	}
	rb := busy.Stop()
	ru := untracked.Stop()
	var sum float64
	for name, r := range map[string]Report{"busy": rb, "quiet": rq, "untracked": ru} {
		g := r.GPUs[0]
		t.Logf("%s: %.1f J of %.1f J device over %.1f s, %s; counter %.3f..%.3f J", name, g.Joules, g.DeviceJoules, r.Seconds, g.Attribution, g.CounterStartJ, g.CounterEndJ)
		sum += g.Joules
	}
	union := ru.GPUs[0].DeviceJoules // the untracked window spans the others
	if math.Abs(sum-union) > 1e-6*union {
		t.Errorf("shares sum to %.3f J, want the device's %.3f J over the union", sum, union)
	}
	t.Logf("above idle: %.1f J", union-idle.Watts*ru.Seconds)
}
