package energy

import (
	"bytes"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeGPU is a GPU whose counter and power the test drives.
type fakeGPU struct {
	mu      sync.Mutex
	inf     gpuInfo
	mj      uint64
	counter bool
	mw      uint32
	util    uint32
	mem     uint64
}

func (g *fakeGPU) info() gpuInfo { return g.inf }
func (g *fakeGPU) energyMJ() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.counter {
		return 0, errUnsupported
	}
	return g.mj, nil
}
func (g *fakeGPU) powerMW() (uint32, string, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mw, "instant", nil
}
func (g *fakeGPU) utilization() (uint32, error) { return g.util, nil }
func (g *fakeGPU) memoryUsed() (uint64, error)  { return g.mem, nil }
func (g *fakeGPU) set(mj uint64) {
	g.mu.Lock()
	g.mj = mj
	g.mu.Unlock()
}

type fakeBackend struct{ devs []gpuDevice }

func (b *fakeBackend) devices() []gpuDevice { return b.devs }
func (b *fakeBackend) driver() string       { return "550.54.15" }
func (b *fakeBackend) close()               {}

// powercap copies testdata/powercap into a temporary folder the test may
// change.
func powercap(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.Walk("testdata/powercap", func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel("testdata/powercap", p)
		if info.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o755)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

func write(t *testing.T, path string, v string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(v+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMeterCounterDifference(t *testing.T) {
	g := &fakeGPU{inf: gpuInfo{index: 0, uuid: "GPU-aaaa", name: "H100"}, mj: 5_000_000, counter: true, mw: 300_000, util: 90, mem: 1 << 30}
	cpu := time.Duration(0)
	var cpuMu sync.Mutex
	m, err := NewMeter(Options{Interval: 5 * time.Millisecond, PowercapRoot: t.TempDir(), gpus: &fakeBackend{devs: []gpuDevice{g}},
		CPUWattsPerCore: 10, CPUTime: func() time.Duration { cpuMu.Lock(); defer cpuMu.Unlock(); return cpu }})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := m.Start(context.Background())
	time.Sleep(30 * time.Millisecond) // let the sampler take a few samples
	g.set(5_000_000 + 123_456)        // 123.456 J
	cpuMu.Lock()
	cpu = 3 * time.Second
	cpuMu.Unlock()
	r := x.Stop()
	if len(r.GPUs) != 1 {
		t.Fatalf("GPUs = %d, want 1", len(r.GPUs))
	}
	gr := r.GPUs[0]
	if gr.Method != MethodCounter || math.Abs(gr.Joules-123.456) > 1e-9 {
		t.Errorf("GPU joules = %v by %s, want 123.456 by counter", gr.Joules, gr.Method)
	}
	if gr.PowerAvgW != 300 || gr.PowerMaxW != 300 || gr.UtilAvgPct != 90 || gr.MemMaxBytes != 1<<30 {
		t.Errorf("timeline = %+v, want 300 W avg/max, 90%%, 1 GiB", gr)
	}
	if gr.Samples < 2 || gr.DriverVersion != "550.54.15" || gr.UUID != "GPU-aaaa" {
		t.Errorf("report = %+v", gr)
	}
	if !r.LowConfidence {
		t.Error("a 30 ms window is not flagged low-confidence")
	}
	if r.Estimated.Joules != 30 || r.Estimated.Method != MethodEstimated {
		t.Errorf("estimate = %+v, want 3 CPU s × 10 W = 30 J", r.Estimated)
	}
	if r.MeasuredJoules() != gr.Joules || r.Method() != MethodMeasured {
		t.Errorf("MeasuredJoules = %v (%s), want the GPU's only, never the estimate", r.MeasuredJoules(), r.Method())
	}
	if again := x.Stop(); again.End != r.End {
		t.Error("a second Stop returned a different report")
	}
	if _, err := json.Marshal(r); err != nil {
		t.Errorf("report does not marshal: %v", err)
	}
}

func TestMeterIntegratesWithoutCounter(t *testing.T) {
	g := &fakeGPU{inf: gpuInfo{uuid: "GPU-old"}, mw: 200_000}
	m, _ := NewMeter(Options{Interval: 5 * time.Millisecond, PowercapRoot: t.TempDir(), gpus: &fakeBackend{devs: []gpuDevice{g}}})
	x, _ := m.Start(context.Background())
	time.Sleep(50 * time.Millisecond)
	r := x.Stop()
	gr := r.GPUs[0]
	// Constant 200 W: the trapezoid integral is 200 W × the sampled span.
	if gr.Method != MethodIntegrated || gr.Joules < 200*0.04 || gr.Joules > 200*r.Seconds+1e-9 {
		t.Errorf("integrated joules = %v by %s over %.3fs, want ≈ 200 W × span", gr.Joules, gr.Method, r.Seconds)
	}
}

func TestMeterCounterReset(t *testing.T) {
	g := &fakeGPU{inf: gpuInfo{uuid: "GPU-r"}, mj: 9_000_000, counter: true, mw: 100_000}
	m, _ := NewMeter(Options{Interval: 5 * time.Millisecond, PowercapRoot: t.TempDir(), gpus: &fakeBackend{devs: []gpuDevice{g}}})
	x, _ := m.Start(context.Background())
	time.Sleep(20 * time.Millisecond)
	g.set(10) // the driver was reloaded
	r := x.Stop()
	if gr := r.GPUs[0]; gr.Resets != 1 || gr.Method != MethodIntegrated {
		t.Errorf("after a counter reset: resets %d, method %s; want 1 and the integral", gr.Resets, gr.Method)
	}
}

func TestRAPLWrapAndDomains(t *testing.T) {
	root := powercap(t)
	m, _ := NewMeter(Options{Interval: 5 * time.Millisecond, CounterInterval: 5 * time.Millisecond, PowercapRoot: root, noGPU: true})
	x, _ := m.Start(context.Background())
	pkg := filepath.Join(root, "intel-rapl:0", "energy_uj")
	// package-0 goes near the top of its range, then wraps to 500 µJ.
	write(t, pkg, "262143000000")
	time.Sleep(30 * time.Millisecond)
	write(t, pkg, "500")
	write(t, filepath.Join(root, "intel-rapl:0", "intel-rapl:0:1", "energy_uj"), "3002000")
	r := x.Stop()
	got := map[string]DomainReport{}
	for _, d := range r.CPU {
		got[d.Name] = d
	}
	if len(got) != 3 {
		t.Fatalf("domains = %v, want package-0, package-0/dram, package-1 (core is inside the package)", r.CPU)
	}
	p := got["package-0"]
	// 1000 → 262143000000 → wrap at 262143328850 → 500.
	want := float64(262143000000-1000+(262143328850-262143000000)+500+1) / 1e6
	if p.Wraps != 1 || math.Abs(p.Joules-want) > 1e-6 {
		t.Errorf("package-0 = %+v, want 1 wrap and %.6f J", p, want)
	}
	if d := got["package-0/dram"]; d.Joules != 3 {
		t.Errorf("dram = %v J, want 3", d.Joules)
	}
	if r.Method() != MethodMeasured {
		t.Errorf("Method = %s, want measured", r.Method())
	}
}

func TestRAPLPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads files whatever their mode")
	}
	root := powercap(t)
	for _, z := range []string{"intel-rapl:0", "intel-rapl:0/intel-rapl:0:1", "intel-rapl:1"} {
		os.Chmod(filepath.Join(root, z, "energy_uj"), 0)
	}
	_, reason := openRAPL(root)
	if !strings.Contains(reason, "chmod") {
		t.Errorf("reason = %q, want the chmod fix", reason)
	}
}

func TestNoSourcesIsNormal(t *testing.T) {
	m, err := NewMeter(Options{PowercapRoot: t.TempDir(), noGPU: true})
	if err != nil {
		t.Fatal(err)
	}
	x, _ := m.Start(context.Background())
	r := x.Stop()
	if r.Method() != MethodNone || r.MeasuredJoules() != 0 || r.Estimated.Method != MethodEstimated {
		t.Errorf("report = %+v, want none measured and an estimate", r)
	}
	var rapl bool
	for _, s := range m.Sources() {
		if s.Kind == "rapl" && !s.Available && strings.Contains(s.Reason, "no RAPL zones") {
			rapl = true
		}
	}
	if !rapl {
		t.Errorf("Sources() = %+v, want rapl unavailable with its reason", m.Sources())
	}
}

func TestOverlapIsReported(t *testing.T) {
	m, _ := NewMeter(Options{PowercapRoot: t.TempDir(), noGPU: true})
	a, _ := m.Start(context.Background())
	b, _ := m.Start(context.Background())
	rb := b.Stop()
	ra := a.Stop()
	if ra.Concurrent != 1 || rb.Concurrent != 1 {
		t.Errorf("concurrent = %d, %d; want 1, 1", ra.Concurrent, rb.Concurrent)
	}
}

func TestVisibleFilter(t *testing.T) {
	tests := []struct {
		spec  string
		index int
		uuid  string
		want  bool
	}{
		{"", 3, "GPU-x", true},
		{"0,2", 2, "GPU-x", true},
		{"0,2", 1, "GPU-x", false},
		{"GPU-ab", 5, "GPU-abcd-1234", true},
		{"MIG-ff", 0, "GPU-abcd", false},
		{"-1", 0, "GPU-a", false},
	}
	for _, tt := range tests {
		if got := visibleFilter(tt.spec)(tt.index, tt.uuid); got != tt.want {
			t.Errorf("visible(%q)(%d, %q) = %v, want %v", tt.spec, tt.index, tt.uuid, got, tt.want)
		}
	}
}

func TestCO2Grams(t *testing.T) {
	// 3.6 MJ = 1 kWh; × PUE 1.5 × 400 g/kWh = 600 g.
	if got := CO2Grams(3.6e6, 1.5, 400); math.Abs(got-600) > 1e-9 {
		t.Errorf("CO2Grams = %v, want 600", got)
	}
}

func TestProbe(t *testing.T) {
	var out bytes.Buffer
	g := &fakeGPU{inf: gpuInfo{uuid: "GPU-p", name: "H100"}, counter: true, mw: 70_000}
	if err := Probe(context.Background(), &out, 20*time.Millisecond, Options{Interval: 5 * time.Millisecond, PowercapRoot: t.TempDir(), gpus: &fakeBackend{devs: []gpuDevice{g}}}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"nvml", "H100 GPU-p", "rapl", "no RAPL zones", "estimate", "measured energy: measured"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("probe output lacks %q:\n%s", want, out.String())
		}
	}
}

// BenchmarkSample is one 10 Hz tick's work: power, utilization and memory
// of one GPU (a fake: NVML's own cost is measured on the GPU machine) and
// the bookkeeping.
func BenchmarkSample(b *testing.B) {
	g := &fakeGPU{inf: gpuInfo{uuid: "GPU-b"}, counter: true, mw: 1}
	m, _ := NewMeter(Options{PowercapRoot: b.TempDir(), gpus: &fakeBackend{devs: []gpuDevice{g}}})
	x, _ := m.Start(context.Background())
	defer x.Stop()
	now := time.Now()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		x.sample(now)
	}
}

// TestCPUTimeIsShared: between Starts and Stops, the process's CPU time is
// split equally among the live measurements.
func TestCPUTimeIsShared(t *testing.T) {
	var cpu time.Duration
	m, _ := NewMeter(Options{PowercapRoot: t.TempDir(), noGPU: true, CPUWattsPerCore: 1, CPUTime: func() time.Duration { return cpu }})
	a, _ := m.Start(context.Background()) // cpu 0
	cpu = 2 * time.Second
	b, _ := m.Start(context.Background()) // a: 2
	cpu = 6 * time.Second
	rb := b.Stop() // a: 2+2, b: 2
	cpu = 7 * time.Second
	ra := a.Stop() // a: 4+1
	if ra.Estimated.CPUSeconds != 5 || rb.Estimated.CPUSeconds != 2 {
		t.Errorf("CPU seconds a=%v b=%v, want 5 and 2", ra.Estimated.CPUSeconds, rb.Estimated.CPUSeconds)
	}
	if ra.Estimated.Joules != 5 {
		t.Errorf("estimate = %v J, want 5 CPU s × 1 W", ra.Estimated.Joules)
	}
}
