//go:build linux && cgo

package energy

import (
	"fmt"
	"math"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// openNVML initialises NVML (lib nil: the real library, loaded now) and
// returns the visible GPUs, or the reason there are none. Nothing in
// go-nvml is called before a successful Init.
func openNVML(lib nvml.Interface, visible string) (gpuBackend, string) {
	if lib == nil {
		lib = nvml.New()
	}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		if ret == nvml.ERROR_LIBRARY_NOT_FOUND {
			return nil, "libnvidia-ml not found: no NVIDIA driver on this machine"
		}
		return nil, fmt.Sprintf("NVML init failed: %s", lib.ErrorString(ret))
	}
	b := &nvmlBackend{lib: lib}
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		b.drv = v
	}
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		lib.Shutdown()
		return nil, fmt.Sprintf("NVML device count: %s", lib.ErrorString(ret))
	}
	show := visibleFilter(visible)
	for i := 0; i < n; i++ {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			continue
		}
		info := gpuInfo{index: i}
		info.uuid, _ = d.GetUUID()
		info.name, _ = d.GetName()
		if m, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			info.memory = m.Total
		}
		if mig, ret := d.IsMigDeviceHandle(); ret == nvml.SUCCESS {
			info.mig = mig
		}
		if !show(i, info.uuid) {
			continue
		}
		b.devs = append(b.devs, &nvmlDevice{d: d, inf: info})
	}
	if len(b.devs) == 0 {
		lib.Shutdown()
		return nil, fmt.Sprintf("NVML sees %d GPUs, none visible (CUDA_VISIBLE_DEVICES=%q)", n, visible)
	}
	return b, ""
}

type nvmlBackend struct {
	lib  nvml.Interface
	drv  string
	devs []gpuDevice
}

func (b *nvmlBackend) devices() []gpuDevice { return b.devs }
func (b *nvmlBackend) driver() string       { return b.drv }
func (b *nvmlBackend) close()               { b.lib.Shutdown() }

type nvmlDevice struct {
	d       nvml.Device
	inf     gpuInfo
	noField bool // FI_DEV_POWER_INSTANT unsupported: fall back to GetPowerUsage
}

func (d *nvmlDevice) info() gpuInfo { return d.inf }

func (d *nvmlDevice) energyMJ() (uint64, error) {
	v, ret := d.d.GetTotalEnergyConsumption()
	if ret != nvml.SUCCESS {
		return 0, retErr(ret)
	}
	return v, nil
}

func (d *nvmlDevice) powerMW() (uint32, string, error) {
	if !d.noField {
		fv := []nvml.FieldValue{{FieldId: nvml.FI_DEV_POWER_INSTANT}}
		if ret := d.d.GetFieldValues(fv); ret == nvml.SUCCESS && nvml.Return(fv[0].NvmlReturn) == nvml.SUCCESS {
			if v, ok := fieldValue(fv[0]); ok {
				return uint32(v), "instant", nil
			}
		}
		d.noField = true
	}
	v, ret := d.d.GetPowerUsage()
	if ret != nvml.SUCCESS {
		return 0, "", retErr(ret)
	}
	return v, "average", nil
}

func (d *nvmlDevice) utilization() (uint32, error) {
	u, ret := d.d.GetUtilizationRates()
	if ret != nvml.SUCCESS {
		return 0, retErr(ret)
	}
	return u.Gpu, nil
}

func (d *nvmlDevice) memoryUsed() (uint64, error) {
	m, ret := d.d.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return 0, retErr(ret)
	}
	return m.Used, nil
}

func retErr(ret nvml.Return) error {
	if ret == nvml.ERROR_NOT_SUPPORTED || ret == nvml.ERROR_FUNCTION_NOT_FOUND {
		return errUnsupported
	}
	return fmt.Errorf("nvml: %s", nvml.ErrorString(ret))
}

// fieldValue decodes a field value (milliwatts for power fields).
func fieldValue(f nvml.FieldValue) (float64, bool) {
	b := f.Value
	le := func(n int) uint64 {
		var v uint64
		for i := n - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		return v
	}
	switch nvml.ValueType(f.ValueType) {
	case nvml.VALUE_TYPE_DOUBLE:
		return math.Float64frombits(le(8)), true
	case nvml.VALUE_TYPE_UNSIGNED_INT:
		return float64(uint32(le(4))), true
	case nvml.VALUE_TYPE_UNSIGNED_LONG, nvml.VALUE_TYPE_UNSIGNED_LONG_LONG:
		return float64(le(8)), true
	case nvml.VALUE_TYPE_SIGNED_LONG_LONG:
		return float64(int64(le(8))), true
	case nvml.VALUE_TYPE_SIGNED_INT:
		return float64(int32(uint32(le(4)))), true
	case nvml.VALUE_TYPE_UNSIGNED_SHORT:
		return float64(uint16(le(2))), true
	}
	return 0, false
}

// defaultGPUs opens the real NVML.
func defaultGPUs(visible string) (gpuBackend, string) { return openNVML(nil, visible) }
