package energy

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeGPU is a GPU whose counter, power and failures the test drives.
type fakeGPU struct {
	inf gpuInfo

	mu          sync.Mutex
	mj          uint64
	counterErr  error
	mw          uint32
	util        uint32
	mem         uint64
	energyReads int
	utilOn      bool       // per-process utilization is supported
	samples     []procUtil // what it returns, after since
}

func newFakeGPU(uuid string, counter bool) *fakeGPU {
	return &fakeGPU{inf: gpuInfo{uuid: uuid, name: "NVIDIA H100 80GB HBM3", counter: counter, power: PowerInstant}}
}

func (g *fakeGPU) info() gpuInfo { return g.inf }

func (g *fakeGPU) energyMJ() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.energyReads++
	if !g.inf.counter {
		return 0, errUnsupported
	}
	return g.mj, g.counterErr
}

func (g *fakeGPU) powerMW() (uint32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mw, nil
}

func (g *fakeGPU) utilization() (uint32, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.util, nil
}

func (g *fakeGPU) memoryUsed() (uint64, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mem, nil
}

// errNotFound is what NVML's ERROR_NOT_FOUND becomes: no sample since.
var errNotFound = errors.New("nvml: Not Found")

func (g *fakeGPU) processUtilization(since uint64) ([]procUtil, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.utilOn {
		return nil, errUnsupported
	}
	var out []procUtil
	for _, s := range g.samples {
		if s.stamp > since {
			out = append(out, s)
		}
	}
	if len(out) == 0 {
		return nil, errNotFound
	}
	return out, nil
}

func (g *fakeGPU) set(f func(g *fakeGPU)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	f(g)
}

func (g *fakeGPU) reads() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.energyReads
}

type fakeBackend struct {
	devs   []gpuDevice
	mu     sync.Mutex
	closed int
}

func (b *fakeBackend) devices() []gpuDevice { return b.devs }
func (b *fakeBackend) driver() string       { return "550.54.15" }
func (b *fakeBackend) close() {
	b.mu.Lock()
	b.closed++
	b.mu.Unlock()
}

func gpus(devs ...*fakeGPU) *fakeBackend {
	b := &fakeBackend{}
	for _, d := range devs {
		b.devs = append(b.devs, d)
	}
	return b
}

// rig drives a Meter deterministically: a fake clock, and ticks the test
// sends one at a time, each handled before tick returns.
type rig struct {
	t     *testing.T
	mu    sync.Mutex
	now   time.Time
	cpu   time.Duration
	ticks chan time.Time
	done  chan struct{}
}

func newRig(t *testing.T) *rig {
	return &rig{t: t, now: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), ticks: make(chan time.Time), done: make(chan struct{})}
}

func (r *rig) clock() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.now
}

func (r *rig) cpuTime() time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cpu
}

func (r *rig) setCPU(d time.Duration) {
	r.mu.Lock()
	r.cpu = d
	r.mu.Unlock()
}

// advance moves the clock by d without a tick.
func (r *rig) advance(d time.Duration) {
	r.mu.Lock()
	r.now = r.now.Add(d)
	r.mu.Unlock()
}

// tick moves the clock by d and has the sampler handle a tick then.
func (r *rig) tick(d time.Duration) {
	r.t.Helper()
	r.advance(d)
	select {
	case r.ticks <- r.clock():
	case <-time.After(10 * time.Second):
		r.t.Fatal("the sampler took no tick in 10 s")
	}
	<-r.done
}

// options returns Options wired to the rig, with no NVML and no RAPL.
func (r *rig) options() Options {
	return Options{
		PowercapRoot: "/nonexistent", powercap: emptyFS{}, noGPU: true,
		CPUTime: r.cpuTime, clock: r.clock, ticks: r.ticks, tickDone: r.done,
		Logger: slog.New(slog.NewTextHandler(r.t.Output(), nil)),
	}
}

type emptyFS struct{}

func (emptyFS) Open(name string) (fs.File, error) {
	return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
}

func start(t *testing.T, m *Meter, opts ...TaskOption) *Measurement {
	t.Helper()
	x, err := m.Start(context.Background(), opts...)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	return x
}

func newMeter(t *testing.T, o Options) *Meter {
	t.Helper()
	m, err := NewMeter(o)
	if err != nil {
		t.Fatalf("NewMeter: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

func TestCounterDifference(t *testing.T) {
	r := newRig(t)
	g := newFakeGPU("GPU-aaaa", true)
	g.set(func(g *fakeGPU) { g.mj, g.mw, g.util, g.mem = 5_000_000, 300_000, 90, 1<<30 })
	o := r.options()
	o.gpus = gpus(g)
	m := newMeter(t, o)
	x := start(t, m)
	for i := 0; i < 14; i++ {
		r.tick(100 * time.Millisecond)
	}
	g.set(func(g *fakeGPU) { g.mj = 5_000_000 + 423_456 })
	r.setCPU(3 * time.Second)
	r.advance(50 * time.Millisecond)
	rep := x.Stop()

	want := GPUReport{
		UUID: "GPU-aaaa", Name: "NVIDIA H100 80GB HBM3", Joules: 423.456, DeviceJoules: 423.456, Method: MethodCounter,
		Attribution: AttributionExclusive, CounterStartJ: 5000, CounterEndJ: 5423.456,
		PowerAvgW: 300, PowerMaxW: 300, IntegratedJ: 300 * 1.45, PowerSource: PowerInstant,
		UtilAvgPct: 90, MemMaxBytes: 1 << 30, Samples: 16, Interval: DefaultInterval, DriverVersion: "550.54.15",
	}
	if len(rep.GPUs) != 1 {
		t.Fatalf("Stop() has %d GPUs, want 1", len(rep.GPUs))
	}
	if diff := cmp.Diff(want, rep.GPUs[0], cmpFloat); diff != "" {
		t.Errorf("GPU report (-want +got):\n%s", diff)
	}
	if math.Abs(rep.Seconds-1.45) > 1e-12 || rep.LowConfidence || rep.Measurements != 1 {
		t.Errorf("window = %vs, low confidence %v, measurements %d; want 1.45s, false, 1", rep.Seconds, rep.LowConfidence, rep.Measurements)
	}
	if e := rep.Estimated; e.Joules != 30 || e.CPUSeconds != 3 || e.Method != MethodEstimated {
		t.Errorf("Estimated = %+v, want 3 CPU s × 10 W = 30 J, estimated", e)
	}
	if got := rep.MeasuredJoules(); got != rep.GPUs[0].Joules || rep.Method() != MethodMeasured {
		t.Errorf("MeasuredJoules() = %v (%s), want the GPU's %v only, never the estimate", got, rep.Method(), rep.GPUs[0].Joules)
	}
	if again := x.Stop(); !cmp.Equal(again, rep) {
		t.Error("a second Stop returned a different report")
	}
}

var cmpFloat = cmp.Comparer(func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(a)) })

// The energy counter is read at the window's ends and every
// CounterInterval, never at the sampling rate.
func TestCounterReadsAreRare(t *testing.T) {
	r := newRig(t)
	g := newFakeGPU("GPU-c", true)
	o := r.options()
	o.gpus = gpus(g)
	m := newMeter(t, o)
	x := start(t, m)
	var got []int
	for i := 1; i <= 25; i++ {
		r.tick(100 * time.Millisecond)
		got = append(got, g.reads())
	}
	x.Stop()
	// NewMeter read nothing (the fake's counter flag is set); Start read
	// once; ticks 10 and 20 read once each.
	want := []int{1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("counter reads after each tick (-want +got):\n%s", diff)
	}
	if n := g.reads(); n != 4 {
		t.Errorf("counter reads after Stop = %d, want 4 (start, 1 s, 2 s, stop)", n)
	}
}

func TestIntegratedWithoutCounter(t *testing.T) {
	r := newRig(t)
	g := newFakeGPU("GPU-old", false)
	g.inf.power = PowerAverage
	g.set(func(g *fakeGPU) { g.mw = 100_000 })
	o := r.options()
	o.gpus = gpus(g)
	m := newMeter(t, o)
	x := start(t, m) // 100 W at 0 s
	g.set(func(g *fakeGPU) { g.mw = 200_000 })
	r.tick(time.Second) // 200 W at 1 s: 150 J
	r.advance(time.Second)
	rep := x.Stop() // 200 W at 2 s: 200 J
	gr := rep.GPUs[0]
	if gr.Method != MethodIntegrated || math.Abs(gr.Joules-350) > 1e-9 || gr.Joules != gr.IntegratedJ {
		t.Errorf("joules = %v by %s (∫ %v), want 350 by integrated", gr.Joules, gr.Method, gr.IntegratedJ)
	}
	if gr.PowerAvgW != 175 || gr.PowerMaxW != 200 || gr.Samples != 3 || gr.PowerSource != PowerAverage {
		t.Errorf("timeline = avg %v max %v, %d samples from %s; want 175 W, 200 W, 3, average", gr.PowerAvgW, gr.PowerMaxW, gr.Samples, gr.PowerSource)
	}
}

// A counter that goes backwards is a driver reset: the span around it is
// integrated, the rest stays by counter.
func TestCounterReset(t *testing.T) {
	r := newRig(t)
	g := newFakeGPU("GPU-r", true)
	g.set(func(g *fakeGPU) { g.mj, g.mw = 9_000_000, 100_000 })
	o := r.options()
	o.gpus = gpus(g)
	m := newMeter(t, o)
	x := start(t, m)
	g.set(func(g *fakeGPU) { g.mj += 100_000 })
	r.tick(time.Second) // +100 J by counter
	g.set(func(g *fakeGPU) { g.mj = 50_000 })
	r.tick(time.Second) // reset: 1 s × 100 W = 100 J from the timeline
	g.set(func(g *fakeGPU) { g.mj += 50_000 })
	r.advance(500 * time.Millisecond)
	rep := x.Stop() // +50 J by counter
	gr := rep.GPUs[0]
	if gr.Resets != 1 || gr.Method != MethodCounter || math.Abs(gr.Joules-250) > 1e-9 {
		t.Errorf("after a reset: %v J by %s, %d resets; want 250 J by counter, 1 reset", gr.Joules, gr.Method, gr.Resets)
	}
	if len(gr.Notes) != 1 || !strings.Contains(gr.Notes[0], "driver reset") {
		t.Errorf("Notes = %q, want one about the driver reset", gr.Notes)
	}
}

func TestCounterFailures(t *testing.T) {
	boom := errors.New("nvml: GPU is lost")
	tests := []struct {
		name       string
		startErr   bool // the counter fails from the start
		wantMethod string
		wantJ      float64
		wantNote   string
	}{
		// 100 J by counter to 1 s, then 1 s × 100 W from the timeline.
		{"last read fails", false, MethodCounter, 200, "energy counter read failed: nvml: GPU is lost"},
		{"unreadable from the start", true, MethodIntegrated, 200, "energy counter unreadable at the start"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t)
			g := newFakeGPU("GPU-f", true)
			g.set(func(g *fakeGPU) { g.mj, g.mw = 1_000_000, 100_000 })
			if tt.startErr {
				g.set(func(g *fakeGPU) { g.counterErr = boom })
			}
			o := r.options()
			o.gpus = gpus(g)
			x := start(t, newMeter(t, o))
			g.set(func(g *fakeGPU) { g.mj += 100_000 })
			r.tick(time.Second)
			g.set(func(g *fakeGPU) { g.counterErr = boom })
			r.advance(time.Second)
			gr := x.Stop().GPUs[0]
			if gr.Method != tt.wantMethod || math.Abs(gr.Joules-tt.wantJ) > 1e-9 {
				t.Errorf("joules = %v by %s, want %v by %s", gr.Joules, gr.Method, tt.wantJ, tt.wantMethod)
			}
			if !strings.Contains(strings.Join(gr.Notes, "|"), tt.wantNote) {
				t.Errorf("Notes = %q, want one containing %q", gr.Notes, tt.wantNote)
			}
		})
	}
}

// powercap copies testdata/powercap into a temporary folder the test may
// change.
func powercap(t *testing.T) string {
	t.Helper()
	dst := t.TempDir()
	if err := os.CopyFS(dst, os.DirFS("testdata/powercap")); err != nil {
		t.Fatalf("copying the fake powercap tree: %v", err)
	}
	return dst
}

func write(t *testing.T, path string, v uint64) {
	t.Helper()
	if err := os.WriteFile(path, fmt.Appendf(nil, "%d\n", v), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestRAPLDomainsAndWrap(t *testing.T) {
	r := newRig(t)
	root := powercap(t)
	o := r.options()
	o.PowercapRoot, o.powercap = root, os.DirFS(root)
	m := newMeter(t, o)
	var names []string
	for _, s := range m.Sources() {
		if s.Kind == SourceRAPL && s.Available {
			names = append(names, s.Name)
		}
	}
	if diff := cmp.Diff([]string{"package-0", "package-0/dram", "package-1"}, names); diff != "" {
		t.Errorf("RAPL sources (-want +got), core, psys and mmio must be left out:\n%s", diff)
	}

	x := start(t, m)
	pkg := filepath.Join(root, "intel-rapl:0", "energy_uj")
	const top = 262143328850 // package-0's max_energy_range_uj
	write(t, pkg, top-1000)
	r.tick(time.Second) // read: 1000 → top-1000
	write(t, pkg, 500)  // wrapped
	write(t, filepath.Join(root, "intel-rapl:0", "intel-rapl:0:1", "energy_uj"), 3_002_000)
	write(t, filepath.Join(root, "intel-rapl:1", "energy_uj"), 3000+7_500_000)
	r.advance(time.Second)
	rep := x.Stop()
	want := []DomainReport{
		{Name: "package-0", Joules: float64(top-1000-1000+1000+1+500) / 1e6, Method: MethodCounter, Wraps: 1},
		{Name: "package-0/dram", Joules: 3, Method: MethodCounter},
		{Name: "package-1", Joules: 7.5, Method: MethodCounter},
	}
	for i := range want {
		want[i].DeviceJoules, want[i].Attribution = want[i].Joules, AttributionExclusive
	}
	if diff := cmp.Diff(want, rep.CPU, cmpFloat); diff != "" {
		t.Errorf("RAPL domains (-want +got):\n%s", diff)
	}
	if rep.Method() != MethodMeasured || math.Abs(rep.CPUJoules()-(want[0].Joules+10.5)) > 1e-6 {
		t.Errorf("Method() = %s, CPUJoules() = %v; want measured, the domains' sum", rep.Method(), rep.CPUJoules())
	}
}

func TestRAPLDelta(t *testing.T) {
	tests := []struct {
		last, now, max, want uint64
	}{
		{100, 250, 1000, 150},
		{900, 100, 1000, 201}, // 900 → 1000 → 0 → 100
		{1000, 0, 1000, 1},
		{900, 100, 0, 100},     // unknown range: only what is past the wrap
		{2000, 100, 1000, 100}, // inconsistent range: the same
	}
	for _, tt := range tests {
		if got := raplDelta(tt.last, tt.now, tt.max); got != tt.want {
			t.Errorf("raplDelta(%d, %d, %d) = %d, want %d", tt.last, tt.now, tt.max, got, tt.want)
		}
	}
}

// deniedFS answers permission denied for every energy_uj, as sysfs does
// for a non-root user since Linux 5.10.
type deniedFS struct{ fs.FS }

func (d deniedFS) Open(name string) (fs.File, error) {
	if filepath.Base(name) == "energy_uj" {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrPermission}
	}
	return d.FS.Open(name)
}

func TestRAPLReasons(t *testing.T) {
	root := powercap(t)
	onlyPsys := t.TempDir()
	if err := os.CopyFS(filepath.Join(onlyPsys, "intel-rapl:2"), os.DirFS(filepath.Join(root, "intel-rapl:2"))); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		fsys fs.FS
		want []string
	}{
		{"permission denied", deniedFS{os.DirFS(root)}, []string{"permission denied", "intel-rapl:0/energy_uj", "sudo chmod a+r", "udev", "CVE-2020-8694"}},
		{"no zones", emptyFS{}, []string{"no RAPL zones under /sys/x", "VM"}},
		{"platform zone only", os.DirFS(onlyPsys), []string{"no RAPL package or DRAM zone"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doms, reason := openRAPL(tt.fsys, "/sys/x")
			if len(doms) != 0 {
				t.Errorf("openRAPL() = %d domains, want none", len(doms))
			}
			for _, w := range tt.want {
				if !strings.Contains(reason, w) {
					t.Errorf("openRAPL() reason = %q, want it to mention %q", reason, w)
				}
			}
		})
	}
}

func TestNoSourcesIsNormal(t *testing.T) {
	r := newRig(t)
	m := newMeter(t, r.options())
	x := start(t, m)
	r.setCPU(2 * time.Second)
	r.advance(3 * time.Second)
	rep := x.Stop()
	want := Report{
		Start: r.clock().Add(-3 * time.Second), End: r.clock(), Seconds: 3, Measurements: 1,
		Interval: DefaultInterval, CounterInterval: DefaultCounterInterval,
		Estimated: Estimate{CPUSeconds: 2, WattsPerCore: DefaultCPUWattsPerCore, Joules: 20, Method: MethodEstimated},
	}
	if diff := cmp.Diff(want, rep); diff != "" {
		t.Errorf("report with no sources (-want +got):\n%s", diff)
	}
	if rep.Method() != MethodNone || rep.MeasuredJoules() != 0 {
		t.Errorf("Method() = %s, MeasuredJoules() = %v; want none, 0", rep.Method(), rep.MeasuredJoules())
	}
	kinds := map[string]bool{}
	for _, s := range m.Sources() {
		kinds[s.Kind] = s.Available
		if !s.Available && s.Reason == "" {
			t.Errorf("source %+v is unavailable with no reason", s)
		}
	}
	if diff := cmp.Diff(map[string]bool{SourceNVML: false, SourceRAPL: false, SourceEstimate: true}, kinds); diff != "" {
		t.Errorf("Sources() availability (-want +got):\n%s", diff)
	}
}

func TestTaskOptions(t *testing.T) {
	r := newRig(t)
	m := newMeter(t, r.options())
	tests := []struct {
		opts         []TaskOption
		wantInterval time.Duration
		wantWatts    float64
	}{
		{nil, DefaultInterval, DefaultCPUWattsPerCore},
		{[]TaskOption{WithInterval(250 * time.Millisecond), WithCPUWattsPerCore(4.5)}, 250 * time.Millisecond, 4.5},
		{[]TaskOption{WithInterval(0), WithCPUWattsPerCore(0)}, DefaultInterval, 0},
		{[]TaskOption{WithInterval(time.Nanosecond), WithCPUWattsPerCore(math.NaN())}, MinInterval, 0},
	}
	for i, tt := range tests {
		r.setCPU(0)
		x := start(t, m, tt.opts...)
		r.setCPU(2 * time.Second)
		rep := x.Stop()
		if rep.Interval != tt.wantInterval || rep.Estimated.WattsPerCore != tt.wantWatts || rep.Estimated.Joules != 2*tt.wantWatts {
			t.Errorf("case %d: interval %s, estimate %+v; want %s, %g W a core × 2 s", i, rep.Interval, rep.Estimated, tt.wantInterval, tt.wantWatts)
		}
	}
}

func TestOptionsValidation(t *testing.T) {
	tests := []struct {
		o    Options
		want string
	}{
		{Options{Interval: -time.Second}, "Interval -1s is shorter than 1ms"},
		{Options{Interval: time.Microsecond}, "Interval 1µs is shorter than 1ms"},
		{Options{CounterInterval: -1}, "CounterInterval -1ns is negative"},
		{Options{CPUWattsPerCore: math.Inf(1)}, "CPUWattsPerCore +Inf is not a number of watts"},
	}
	for _, tt := range tests {
		_, err := NewMeter(tt.o)
		if !errors.Is(err, ErrInvalidOptions) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("NewMeter(%+v) = %v, want ErrInvalidOptions mentioning %q", tt.o, err, tt.want)
		}
	}
	m, err := NewMeter(Options{CPUWattsPerCore: -1, noGPU: true, powercap: emptyFS{}})
	if err != nil {
		t.Fatalf("NewMeter(CPUWattsPerCore: -1) = %v, want the estimate off", err)
	}
	x := start(t, m)
	if e := x.Stop().Estimated; e.WattsPerCore != 0 || e.Joules != 0 {
		t.Errorf("estimate with CPUWattsPerCore -1 = %+v, want 0 W, 0 J", e)
	}
}

func TestOverlapAndCPUShare(t *testing.T) {
	r := newRig(t)
	o := r.options()
	o.CPUWattsPerCore = 1
	m := newMeter(t, o)
	a := start(t, m) // cpu 0
	r.setCPU(2 * time.Second)
	b := start(t, m) // a: 2
	r.setCPU(6 * time.Second)
	rb := b.Stop() // a: 2+2, b: 2
	r.setCPU(7 * time.Second)
	ra := a.Stop() // a: 4+1
	if ra.Estimated.CPUSeconds != 5 || rb.Estimated.CPUSeconds != 2 || ra.Estimated.Joules != 5 {
		t.Errorf("CPU seconds a=%v b=%v (a %v J); want 5, 2 (5 J at 1 W)", ra.Estimated.CPUSeconds, rb.Estimated.CPUSeconds, ra.Estimated.Joules)
	}
	if ra.Concurrent != 1 || rb.Concurrent != 1 {
		t.Errorf("Concurrent = %d, %d; want 1, 1", ra.Concurrent, rb.Concurrent)
	}
	c := start(t, m)
	if rc := c.Stop(); rc.Concurrent != 0 {
		t.Errorf("a measurement alone has Concurrent %d, want 0", rc.Concurrent)
	}
}

// Many measurements start and stop at once over shared devices, with real
// tickers (run with -race).
func TestConcurrentMeasurements(t *testing.T) {
	g := newFakeGPU("GPU-k", true)
	g.set(func(g *fakeGPU) { g.mw = 50_000 })
	m := newMeter(t, Options{Interval: time.Millisecond, CounterInterval: 2 * time.Millisecond, gpus: gpus(g), powercap: emptyFS{}})
	var wg sync.WaitGroup
	reports := make([]Report, 16)
	for i := range reports {
		wg.Go(func() {
			x, err := m.Start(context.Background())
			if err != nil {
				t.Error(err)
				return
			}
			for range 5 {
				g.set(func(g *fakeGPU) { g.mj += 10 })
				time.Sleep(time.Millisecond)
			}
			reports[i] = x.Stop()
		})
	}
	wg.Wait()
	for i, rep := range reports {
		if len(rep.GPUs) != 1 || rep.GPUs[0].Method != MethodCounter || rep.GPUs[0].Samples < 2 {
			t.Errorf("report %d = %+v, want one GPU by counter with samples", i, rep.GPUs)
		}
	}
}

func TestContextEndsSampler(t *testing.T) {
	g := newFakeGPU("GPU-x", true)
	m := newMeter(t, Options{Interval: time.Millisecond, gpus: gpus(g), powercap: emptyFS{}})
	ctx, cancel := context.WithCancel(context.Background())
	x, err := m.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	<-x.done // the sampler returns without Stop
	rep := x.Stop()
	if len(rep.GPUs) != 1 || rep.GPUs[0].Samples < 2 {
		t.Fatalf("Stop after ctx ended = %+v, want a report with the start and stop samples", rep.GPUs)
	}
	if n := rep.GPUs[0].Notes; len(n) != 1 || !strings.Contains(n[0], "context ended") {
		t.Errorf("Notes = %q, want one saying the sampler stopped with the context", n)
	}
}

func TestClose(t *testing.T) {
	r := newRig(t)
	b := gpus(newFakeGPU("GPU-z", true))
	o := r.options()
	o.gpus = b
	m, err := NewMeter(o)
	if err != nil {
		t.Fatal(err)
	}
	x := start(t, m)
	for range 2 {
		if err := m.Close(); err != nil {
			t.Errorf("Close() = %v, want nil", err)
		}
	}
	if b.closed != 1 {
		t.Errorf("NVML shut down %d times, want once", b.closed)
	}
	if _, err := m.Start(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close = %v, want ErrClosed", err)
	}
	if rep := x.Stop(); len(rep.GPUs) != 1 {
		t.Errorf("Stop after Close = %+v, want its report", rep)
	}
}

func TestCO2Grams(t *testing.T) {
	tests := []struct{ joules, pue, g, want float64 }{
		{3.6e6, 1.5, 400, 600}, // 1 kWh × 1.5 × 400 g
		{3.6e6, 1, 475, 475},
		{0, 1.2, 475, 0},
		{1000, 1, 0, 0},
	}
	for _, tt := range tests {
		if got := CO2Grams(tt.joules, tt.pue, tt.g); math.Abs(got-tt.want) > 1e-9 {
			t.Errorf("CO2Grams(%g, %g, %g) = %g, want %g", tt.joules, tt.pue, tt.g, got, tt.want)
		}
	}
}

// A RAPL counter that becomes unreadable mid-window is a note, not a
// failure: the domain keeps what it counted.
func TestRAPLReadFailsMidWindow(t *testing.T) {
	r := newRig(t)
	root := powercap(t)
	o := r.options()
	o.PowercapRoot, o.powercap = root, os.DirFS(root)
	x := start(t, newMeter(t, o))
	pkg1 := filepath.Join(root, "intel-rapl:1", "energy_uj")
	write(t, pkg1, 3000+2_000_000)
	r.tick(time.Second)
	if err := os.Remove(pkg1); err != nil {
		t.Fatal(err)
	}
	r.advance(time.Second)
	rep := x.Stop()
	var got DomainReport
	for _, d := range rep.CPU {
		if d.Name == "package-1" {
			got = d
		}
	}
	if got.Joules != 2 || len(got.Notes) != 1 || !strings.Contains(got.Notes[0], "counter reads failed: 1") {
		t.Errorf("package-1 = %+v, want the 2 J counted before the file went, and a note of the failed read", got)
	}
}
