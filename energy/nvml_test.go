//go:build linux && cgo

package energy

import (
	"encoding/binary"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/google/go-cmp/cmp"
)

// mockGPU describes one GPU for mockLib.
type mockGPU struct {
	uuid      string
	noCounter bool     // GetTotalEnergyConsumption is not supported
	noInstant bool     // FI_DEV_POWER_INSTANT is not supported
	migs      []string // MIG mode on, with these MIG devices
}

// mockNVML is go-nvml's mock set up as a driver with the given GPUs; a
// method the code should not call is left nil, so that calling it panics.
type mockNVML struct {
	*mock.Interface
	missing map[string]bool // symbols the "driver" lacks

	mu       sync.Mutex
	energyMJ uint64
	shutdown int
	// procUtil answers GetProcessUtilization (nil: NOT_SUPPORTED).
	procUtil func(since uint64) ([]nvml.ProcessUtilizationSample, nvml.Return)
}

func newMockNVML(gpus ...mockGPU) *mockNVML {
	l := &mockNVML{missing: map[string]bool{}, energyMJ: 1_000_000}
	devs := make([]nvml.Device, len(gpus))
	for i, g := range gpus {
		devs[i] = l.device(g)
	}
	l.Interface = &mock.Interface{
		InitFunc: func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc: func() nvml.Return {
			l.mu.Lock()
			l.shutdown++
			l.mu.Unlock()
			return nvml.SUCCESS
		},
		ExtensionsFunc: func() nvml.ExtendedInterface {
			return &mock.ExtendedInterface{LookupSymbolFunc: func(s string) error {
				if l.missing[s] {
					return errors.New("undefined symbol: " + s)
				}
				return nil
			}}
		},
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "550.54.15", nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(n int) (nvml.Device, nvml.Return) {
			if n < 0 || n >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[n], nvml.SUCCESS
		},
	}
	return l
}

func (l *mockNVML) addEnergy(mj uint64) {
	l.mu.Lock()
	l.energyMJ += mj
	l.mu.Unlock()
}

func (l *mockNVML) device(g mockGPU) *mock.Device {
	d := &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return g.uuid, nvml.SUCCESS },
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 80 << 30, Used: 2 << 30}, nvml.SUCCESS
		},
		GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) {
			if g.noCounter {
				return 0, nvml.ERROR_NOT_SUPPORTED
			}
			l.mu.Lock()
			defer l.mu.Unlock()
			return l.energyMJ, nvml.SUCCESS
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 97}, nvml.SUCCESS },
		GetProcessUtilizationFunc: func(since uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
			l.mu.Lock()
			f := l.procUtil
			l.mu.Unlock()
			if f == nil {
				return nil, nvml.ERROR_NOT_SUPPORTED
			}
			return f(since)
		},
		GetPowerUsageFunc: func() (uint32, nvml.Return) { return 250_000, nvml.SUCCESS },
		GetFieldValuesFunc: func(fv []nvml.FieldValue) nvml.Return {
			if len(fv) != 1 || fv[0].FieldId != nvml.FI_DEV_POWER_INSTANT {
				return nvml.ERROR_INVALID_ARGUMENT
			}
			if g.noInstant {
				fv[0].NvmlReturn = uint32(nvml.ERROR_NOT_SUPPORTED)
				return nvml.SUCCESS // per-field failure, as the driver reports it
			}
			fv[0].ValueType = uint32(nvml.VALUE_TYPE_UNSIGNED_INT)
			binary.LittleEndian.PutUint32(fv[0].Value[:], 312_000)
			fv[0].NvmlReturn = uint32(nvml.SUCCESS)
			return nvml.SUCCESS
		},
		GetMigModeFunc: func() (int, int, nvml.Return) {
			if len(g.migs) > 0 {
				return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, nvml.SUCCESS
			}
			return nvml.DEVICE_MIG_DISABLE, nvml.DEVICE_MIG_DISABLE, nvml.SUCCESS
		},
		GetMaxMigDeviceCountFunc: func() (int, nvml.Return) { return 7, nvml.SUCCESS },
		GetMigDeviceHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i >= len(g.migs) {
				return nil, nvml.ERROR_NOT_FOUND
			}
			u := g.migs[i]
			return &mock.Device{GetUUIDFunc: func() (string, nvml.Return) { return u, nvml.SUCCESS }}, nvml.SUCCESS
		},
	}
	return d
}

func open(t *testing.T, l *mockNVML, spec string, limited bool) gpuBackend {
	t.Helper()
	b, reason := openNVML(l, spec, limited)
	if b == nil {
		t.Fatalf("openNVML: %s", reason)
	}
	t.Cleanup(b.close)
	return b
}

func TestOpenNVML(t *testing.T) {
	l := newMockNVML(mockGPU{uuid: "GPU-0000"}, mockGPU{uuid: "GPU-1111", noCounter: true, noInstant: true})
	b := open(t, l, "", false)
	if b.driver() != "550.54.15" || len(b.devices()) != 2 {
		t.Fatalf("openNVML() = driver %q, %d devices; want 550.54.15, 2", b.driver(), len(b.devices()))
	}
	var infos []gpuInfo
	for _, d := range b.devices() {
		infos = append(infos, d.info())
	}
	want := []gpuInfo{
		{index: 0, uuid: "GPU-0000", name: "NVIDIA H100 80GB HBM3", memory: 80 << 30, counter: true, power: PowerInstant},
		{index: 1, uuid: "GPU-1111", name: "NVIDIA H100 80GB HBM3", memory: 80 << 30, power: PowerAverage},
	}
	if diff := cmp.Diff(want, infos, cmp.AllowUnexported(gpuInfo{})); diff != "" {
		t.Errorf("device infos (-want +got):\n%s", diff)
	}
	d0, d1 := b.devices()[0], b.devices()[1]
	if mw, err := d0.powerMW(); err != nil || mw != 312_000 {
		t.Errorf("GPU 0 powerMW() = %d, %v; want 312000 from FI_DEV_POWER_INSTANT", mw, err)
	}
	if mw, err := d1.powerMW(); err != nil || mw != 250_000 {
		t.Errorf("GPU 1 powerMW() = %d, %v; want 250000 from GetPowerUsage", mw, err)
	}
	if v, err := d0.energyMJ(); err != nil || v != 1_000_000 {
		t.Errorf("GPU 0 energyMJ() = %d, %v; want 1000000", v, err)
	}
	if _, err := d1.energyMJ(); !errors.Is(err, errUnsupported) {
		t.Errorf("GPU 1 energyMJ() error = %v, want errUnsupported", err)
	}
	if u, err := d0.utilization(); err != nil || u != 97 {
		t.Errorf("utilization() = %d, %v; want 97", u, err)
	}
	if m, err := d0.memoryUsed(); err != nil || m != 2<<30 {
		t.Errorf("memoryUsed() = %d, %v; want 2 GiB", m, err)
	}
}

// A driver older than a function: the function is looked up, found
// missing and never called (the mock panics if it is).
func TestOpenNVMLGuardsNewerFunctions(t *testing.T) {
	l := newMockNVML(mockGPU{uuid: "GPU-0000", migs: []string{"MIG-aaaa"}})
	for _, s := range []string{symEnergy, symFieldValues, symMigMode} {
		l.missing[s] = true
	}
	d := l.Interface.DeviceGetHandleByIndexFunc
	l.Interface.DeviceGetHandleByIndexFunc = func(n int) (nvml.Device, nvml.Return) {
		dev, ret := d(n)
		md := dev.(*mock.Device)
		md.GetTotalEnergyConsumptionFunc, md.GetFieldValuesFunc, md.GetMigModeFunc = nil, nil, nil
		return md, ret
	}
	b := open(t, l, "", false)
	inf := b.devices()[0].info()
	if inf.counter || inf.power != PowerAverage || inf.mig {
		t.Errorf("info = %+v, want no counter, average power, no MIG on a driver without them", inf)
	}
	if _, err := b.devices()[0].energyMJ(); !errors.Is(err, errUnsupported) {
		t.Errorf("energyMJ() error = %v, want errUnsupported", err)
	}
}

func TestOpenNVMLInitFailureIsAFact(t *testing.T) {
	tests := []struct {
		ret  nvml.Return
		want string
	}{
		{nvml.ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1 not found"},
		{nvml.ERROR_DRIVER_NOT_LOADED, "kernel driver is not loaded"},
		{nvml.ERROR_NO_PERMISSION, "no permission"},
		{nvml.ERROR_UNKNOWN, "NVML init failed"},
	}
	for _, tt := range tests {
		// Only Init is mocked: any other call panics.
		lib := &mock.Interface{InitFunc: func() nvml.Return { return tt.ret }}
		b, reason := openNVML(lib, "", false)
		if b != nil || !strings.Contains(reason, tt.want) {
			t.Errorf("openNVML() with Init = %v: backend %v, reason %q; want none and %q", tt.ret, b, reason, tt.want)
		}
	}
}

func TestOpenNVMLVisibleDevices(t *testing.T) {
	gpus := []mockGPU{{uuid: "GPU-0000-aa"}, {uuid: "GPU-1111-bb", migs: []string{"MIG-9999-x", "MIG-8888-y"}}}
	type pick struct {
		UUID string
		MIG  []string
	}
	tests := []struct {
		spec string
		want []pick
	}{
		{"1", []pick{{UUID: "GPU-1111-bb", MIG: []string{"MIG-9999-x", "MIG-8888-y"}}}},
		{"GPU-0000", []pick{{UUID: "GPU-0000-aa"}}},
		{"MIG-8888", []pick{{UUID: "GPU-1111-bb", MIG: []string{"MIG-8888-y"}}}},
		{"1,0", []pick{{UUID: "GPU-0000-aa"}, {UUID: "GPU-1111-bb", MIG: []string{"MIG-9999-x", "MIG-8888-y"}}}},
	}
	for _, tt := range tests {
		b := open(t, newMockNVML(gpus...), tt.spec, true)
		var got []pick
		for _, d := range b.devices() {
			got = append(got, pick{UUID: d.info().uuid, MIG: d.info().migs})
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("CUDA_VISIBLE_DEVICES=%q (-want +got):\n%s", tt.spec, diff)
		}
	}
	for _, spec := range []string{"", "7", "GPU-5"} {
		l := newMockNVML(gpus...)
		b, reason := openNVML(l, spec, true)
		if b != nil || !strings.Contains(reason, "none visible") || l.shutdown != 1 {
			t.Errorf("CUDA_VISIBLE_DEVICES=%q: backend %v, reason %q, %d shutdowns; want none visible, NVML shut down", spec, b, reason, l.shutdown)
		}
	}
}

// After close, devices answer errClosed without calling the library
// (which go-nvml has unloaded).
func TestNVMLClosed(t *testing.T) {
	l := newMockNVML(mockGPU{uuid: "GPU-0000"})
	b, _ := openNVML(l, "", false)
	d := b.devices()[0]
	b.close()
	b.close()
	if l.shutdown != 1 {
		t.Errorf("Shutdown called %d times, want once", l.shutdown)
	}
	md := l.Interface.DeviceGetHandleByIndexFunc
	dev, _ := md(0)
	calls := len(dev.(*mock.Device).GetPowerUsageCalls()) + len(dev.(*mock.Device).GetFieldValuesCalls())
	if _, err := d.powerMW(); !errors.Is(err, errClosed) {
		t.Errorf("powerMW() after close = %v, want errClosed", err)
	}
	if _, err := d.energyMJ(); !errors.Is(err, errClosed) {
		t.Errorf("energyMJ() after close = %v, want errClosed", err)
	}
	if after := len(dev.(*mock.Device).GetPowerUsageCalls()) + len(dev.(*mock.Device).GetFieldValuesCalls()); after != calls {
		t.Errorf("the library was called %d times after close, want 0", after-calls)
	}
}

// The whole path through a Meter with go-nvml's mock in Options.NVML.
func TestMeterWithMockNVML(t *testing.T) {
	r := newRig(t)
	l := newMockNVML(mockGPU{uuid: "GPU-0000", migs: []string{"MIG-aaaa"}})
	o := r.options()
	o.noGPU, o.NVML, o.Devices = false, l, "all"
	m, err := NewMeter(o)
	if err != nil {
		t.Fatal(err)
	}
	x := start(t, m)
	l.addEnergy(250_000)
	r.tick(time.Second)
	l.addEnergy(62_000)
	r.advance(250 * time.Millisecond)
	rep := x.Stop()
	m.Close()
	if len(rep.GPUs) != 1 {
		t.Fatalf("report has %d GPUs, want 1", len(rep.GPUs))
	}
	g := rep.GPUs[0]
	if g.UUID != "GPU-0000" || g.Method != MethodCounter || math.Abs(g.Joules-312) > 1e-9 || !g.Shared || g.DriverVersion != "550.54.15" {
		t.Errorf("GPU report = %+v; want GPU-0000, 312 J by counter, shared (MIG), driver 550.54.15", g)
	}
	if math.Abs(g.IntegratedJ-312*1.25) > 1e-9 || g.PowerSource != PowerInstant {
		t.Errorf("integrated = %v J from %s power, want 390 J (312 W × 1.25 s) from instant", g.IntegratedJ, g.PowerSource)
	}
	if l.shutdown != 1 {
		t.Errorf("Close called Shutdown %d times, want 1", l.shutdown)
	}
}

// Per-process utilization through go-nvml: NOT_FOUND (no sample since the
// last call, as H200s answer at times) splits equally; samples split by
// SM utilization; a driver without the function is never asked.
func TestMeterAttributionWithMockNVML(t *testing.T) {
	r := newRig(t)
	l := newMockNVML(mockGPU{uuid: "GPU-0000"})
	o := r.options()
	o.noGPU, o.NVML, o.Devices = false, l, "all"
	o.proc = newFakeProc(proc(1, 0), proc(21, 1), proc(22, 1))
	m := newMeter(t, o)
	var sinces []uint64
	answer := func(samples []nvml.ProcessUtilizationSample, ret nvml.Return) {
		l.mu.Lock()
		l.procUtil = func(since uint64) ([]nvml.ProcessUtilizationSample, nvml.Return) {
			sinces = append(sinces, since)
			return samples, ret
		}
		l.mu.Unlock()
	}
	answer(nil, nvml.ERROR_NOT_FOUND)
	a, b := start(t, m), start(t, m)
	a.Track(21)
	b.Track(22)
	r.advance(time.Second)
	l.addEnergy(100_000)
	stamp := uint64(r.clock().UnixMicro())
	r.tick(0) // NOT_FOUND: 50 J each
	answer([]nvml.ProcessUtilizationSample{{Pid: 21, TimeStamp: stamp + 1, SmUtil: 75}, {Pid: 22, TimeStamp: stamp + 2, SmUtil: 25}}, nvml.SUCCESS)
	r.advance(time.Second)
	l.addEnergy(200_000) // 150 J to A, 50 J to B
	ra, rb := a.Stop(), b.Stop()
	if ga, gb := ra.GPUs[0], rb.GPUs[0]; !approx(ga.Joules, 200) || !approx(gb.Joules, 100) || ga.Attribution != AttributionUtilization || ga.DeviceJoules != 300 {
		t.Errorf("A %v J (%s, device %v J), B %v J; want 200 J (%s, device 300 J), 100 J", ga.Joules, ga.Attribution, ga.DeviceJoules, gb.Joules, AttributionUtilization)
	}
	t0 := uint64(r.clock().Add(-2 * time.Second).UnixMicro())
	if diff := cmp.Diff([]uint64{t0, t0}, sinces); diff != "" {
		t.Errorf("GetProcessUtilization's lastSeenTimeStamp (-want +got): a NOT_FOUND leaves it where it was:\n%s", diff)
	}

	l.missing[symProcUtil] = true
	m2 := newMeter(t, o)
	answer(nil, nvml.ERROR_UNKNOWN)
	sinces = nil
	c, d := start(t, m2), start(t, m2)
	c.Track(21)
	d.Track(22)
	r.advance(time.Second)
	l.addEnergy(10_000)
	if rc := c.Stop(); rc.GPUs[0].Attribution != AttributionEqual || !approx(rc.GPUs[0].Joules, 5) {
		t.Errorf("without the function: %v J, %s; want 5 J, %s", rc.GPUs[0].Joules, rc.GPUs[0].Attribution, AttributionEqual)
	}
	d.Stop()
	if len(sinces) != 0 {
		t.Errorf("GetProcessUtilization called %d times on a driver without it", len(sinces))
	}
}
