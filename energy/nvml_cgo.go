//go:build linux && cgo

package energy

import (
	"fmt"
	"math"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is the NVIDIA Management Library as go-nvml exposes it; tests pass
// go-nvml's mock (github.com/NVIDIA/go-nvml/pkg/nvml/mock) in
// [Options.NVML]. In builds without cgo it is an empty interface that is
// ignored.
type NVML = nvml.Interface

// Symbols newer than the oldest drivers: go-nvml calls straight into the
// library, so calling one the installed driver lacks would crash the
// process. Each is looked up before its first call.
const (
	symEnergy      = "nvmlDeviceGetTotalEnergyConsumption" // Volta, R410
	symFieldValues = "nvmlDeviceGetFieldValues"
	symMigMode     = "nvmlDeviceGetMigMode" // R450
	symMigCount    = "nvmlDeviceGetMaxMigDeviceCount"
	symMigHandle   = "nvmlDeviceGetMigDeviceHandleByIndex"
	symProcUtil    = "nvmlDeviceGetProcessUtilization"
)

// openNVML initialises NVML (lib nil: the real library, loaded now) and
// returns the GPUs visible under spec (all of them when !limited), or the
// reason there are none. Nothing in go-nvml is called before a successful
// Init.
func openNVML(lib nvml.Interface, spec string, limited bool) (gpuBackend, string) {
	if lib == nil {
		lib = nvml.New()
	}
	switch ret := lib.Init(); ret {
	case nvml.SUCCESS:
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return nil, "libnvidia-ml.so.1 not found: no NVIDIA driver on this machine (if it has an NVIDIA GPU, install the driver; otherwise nothing to do)"
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return nil, "the NVIDIA kernel driver is not loaded (check `nvidia-smi`; in a container, run it with the NVIDIA runtime, e.g. `docker run --gpus all`)"
	case nvml.ERROR_NO_PERMISSION:
		return nil, "no permission to open the NVIDIA devices (/dev/nvidia*): add the site's user to their group"
	default:
		return nil, fmt.Sprintf("NVML init failed: %s", nvml.ErrorString(ret))
	}
	b := &nvmlBackend{lib: lib}
	has := func(sym string) bool { return lib.Extensions().LookupSymbol(sym) == nil }
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		b.drv = v
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Sprintf("counting GPUs through NVML: %s", nvml.ErrorString(ret))
	}
	var (
		devs []*nvmlDevice
		ids  []gpuID
	)
	for i := 0; i < n; i++ {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue // lost or not permitted: CUDA will not see it either
		}
		dev := &nvmlDevice{b: b, d: d, inf: gpuInfo{index: i, power: PowerAverage}}
		dev.inf.uuid, _ = d.GetUUID()
		dev.inf.name, _ = d.GetName()
		if m, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			dev.inf.memory = m.Total
		}
		if has(symEnergy) {
			_, ret := d.GetTotalEnergyConsumption()
			dev.inf.counter = ret == nvml.SUCCESS
		}
		if has(symFieldValues) {
			if _, ok := dev.instant(); ok {
				dev.inf.power = PowerInstant
			}
		}
		dev.procUtil = has(symProcUtil)
		if has(symMigMode) {
			if cur, _, ret := d.GetMigMode(); ret == nvml.SUCCESS && cur == nvml.DEVICE_MIG_ENABLE {
				dev.inf.mig = true
				if has(symMigCount) && has(symMigHandle) {
					dev.inf.migs = migUUIDs(d)
				}
			}
		}
		devs = append(devs, dev)
		ids = append(ids, gpuID{uuid: dev.inf.uuid, migs: dev.inf.migs})
	}
	picked := make([]selected, len(devs))
	for i := range devs {
		picked[i] = selected{pos: i}
	}
	stop := ""
	if limited {
		picked, stop = selectVisible(spec, ids)
	}
	for _, s := range picked {
		d := devs[s.pos]
		if len(s.migs) > 0 {
			d.inf.migs = s.migs // the instances this process was given
		}
		b.devs = append(b.devs, d)
	}
	if len(b.devs) == 0 {
		lib.Shutdown()
		why := fmt.Sprintf("NVML sees %d GPUs, none visible to this process (CUDA_VISIBLE_DEVICES=%q)", n, spec)
		if stop != "" {
			why += ": " + stop
		}
		return nil, why
	}
	return b, ""
}

// migUUIDs lists the UUIDs of a GPU's MIG devices.
func migUUIDs(d nvml.Device) []string {
	n, ret := d.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return nil
	}
	var out []string
	for i := 0; i < n; i++ {
		m, ret := d.GetMigDeviceHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue // an empty slot
		}
		if u, ret := m.GetUUID(); ret == nvml.SUCCESS {
			out = append(out, u)
		}
	}
	return out
}

// nvmlBackend is an initialised NVML. Its read lock is held around every
// device call so that close cannot unload the library under one.
type nvmlBackend struct {
	lib    nvml.Interface
	drv    string
	devs   []gpuDevice
	mu     sync.RWMutex
	closed bool
}

var _ gpuBackend = (*nvmlBackend)(nil)

func (b *nvmlBackend) devices() []gpuDevice { return b.devs }
func (b *nvmlBackend) driver() string       { return b.drv }

func (b *nvmlBackend) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		b.lib.Shutdown()
	}
}

// call runs f unless NVML is shut down.
func (b *nvmlBackend) call(f func() nvml.Return) error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return errClosed
	}
	return retErr(f())
}

type nvmlDevice struct {
	b        *nvmlBackend
	d        nvml.Device
	inf      gpuInfo // fixed once opened
	procUtil bool    // the driver has nvmlDeviceGetProcessUtilization
}

var _ gpuDevice = (*nvmlDevice)(nil)

func (d *nvmlDevice) info() gpuInfo { return d.inf }

func (d *nvmlDevice) energyMJ() (uint64, error) {
	if !d.inf.counter {
		return 0, errUnsupported
	}
	var v uint64
	err := d.b.call(func() (ret nvml.Return) { v, ret = d.d.GetTotalEnergyConsumption(); return ret })
	return v, err
}

func (d *nvmlDevice) powerMW() (uint32, error) {
	var v uint32
	err := d.b.call(func() nvml.Return {
		if d.inf.power == PowerInstant {
			mw, ok := d.instant()
			if !ok {
				return nvml.ERROR_UNKNOWN
			}
			v = uint32(math.Min(mw, math.MaxUint32))
			return nvml.SUCCESS
		}
		var ret nvml.Return
		v, ret = d.d.GetPowerUsage()
		return ret
	})
	return v, err
}

// instant reads FI_DEV_POWER_INSTANT in milliwatts.
func (d *nvmlDevice) instant() (float64, bool) {
	fv := []nvml.FieldValue{{FieldId: nvml.FI_DEV_POWER_INSTANT}}
	if ret := d.d.GetFieldValues(fv); ret != nvml.SUCCESS || nvml.Return(fv[0].NvmlReturn) != nvml.SUCCESS {
		return 0, false
	}
	v, ok := fieldValue(fv[0].ValueType, fv[0].Value)
	return v, ok && v >= 0
}

func (d *nvmlDevice) utilization() (uint32, error) {
	var v uint32
	err := d.b.call(func() nvml.Return { u, ret := d.d.GetUtilizationRates(); v = u.Gpu; return ret })
	return v, err
}

func (d *nvmlDevice) memoryUsed() (uint64, error) {
	var v uint64
	err := d.b.call(func() nvml.Return { m, ret := d.d.GetMemoryInfo(); v = m.Used; return ret })
	return v, err
}

func (d *nvmlDevice) processUtilization(since uint64) ([]procUtil, error) {
	if !d.procUtil {
		return nil, errUnsupported
	}
	var out []procUtil
	err := d.b.call(func() nvml.Return {
		samples, ret := d.d.GetProcessUtilization(since)
		for _, s := range samples {
			out = append(out, procUtil{pid: int(s.Pid), stamp: s.TimeStamp, smUtil: s.SmUtil})
		}
		return ret
	})
	return out, err
}

func retErr(ret nvml.Return) error {
	switch ret {
	case nvml.SUCCESS:
		return nil
	case nvml.ERROR_NOT_SUPPORTED, nvml.ERROR_FUNCTION_NOT_FOUND:
		return errUnsupported
	}
	return fmt.Errorf("nvml: %s", nvml.ErrorString(ret))
}

// defaultGPUs opens the real NVML, or lib when it is an nvml.Interface.
func defaultGPUs(lib NVML, spec string, limited bool) (gpuBackend, string) {
	return openNVML(lib, spec, limited)
}
