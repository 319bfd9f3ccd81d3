//go:build linux && cgo

package energy

import (
	"encoding/binary"
	"math"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

func mockLib(devs ...*mock.Device) *mock.Interface {
	return &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { return nvml.SUCCESS },
		ErrorStringFunc:            func(r nvml.Return) string { return r.String() },
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "550.54.15", nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(n int) (nvml.Device, nvml.Return) { return devs[n], nvml.SUCCESS },
	}
}

func mockDevice(uuid string, instantMW float64, fieldOK bool) *mock.Device {
	return &mock.Device{
		GetUUIDFunc:                   func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
		GetNameFunc:                   func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		IsMigDeviceHandleFunc:         func() (bool, nvml.Return) { return false, nvml.SUCCESS },
		GetMemoryInfoFunc:             func() (nvml.Memory, nvml.Return) { return nvml.Memory{Total: 80 << 30, Used: 2 << 30}, nvml.SUCCESS },
		GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) { return 1_000_000, nvml.SUCCESS },
		GetUtilizationRatesFunc:       func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 97}, nvml.SUCCESS },
		GetPowerUsageFunc:             func() (uint32, nvml.Return) { return 250_000, nvml.SUCCESS },
		GetFieldValuesFunc: func(fv []nvml.FieldValue) nvml.Return {
			if !fieldOK {
				return nvml.ERROR_NOT_SUPPORTED
			}
			fv[0].ValueType = uint32(nvml.VALUE_TYPE_DOUBLE)
			binary.LittleEndian.PutUint64(fv[0].Value[:], math.Float64bits(instantMW))
			fv[0].NvmlReturn = uint32(nvml.SUCCESS)
			return nvml.SUCCESS
		},
	}
}

func TestOpenNVMLWithMock(t *testing.T) {
	lib := mockLib(mockDevice("GPU-0000", 312_000, true), mockDevice("GPU-1111", 0, false))
	b, reason := openNVML(lib, "")
	if b == nil {
		t.Fatalf("openNVML: %s", reason)
	}
	defer b.close()
	if b.driver() != "550.54.15" || len(b.devices()) != 2 {
		t.Fatalf("driver %q, %d devices", b.driver(), len(b.devices()))
	}
	d0, d1 := b.devices()[0], b.devices()[1]
	if mw, src, err := d0.powerMW(); err != nil || mw != 312_000 || src != "instant" {
		t.Errorf("GPU 0 power = %d %s %v, want 312000 mW from the instant field", mw, src, err)
	}
	if mw, src, err := d1.powerMW(); err != nil || mw != 250_000 || src != "average" {
		t.Errorf("GPU 1 power = %d %s %v, want the GetPowerUsage fallback 250000 mW", mw, src, err)
	}
	if v, err := d0.energyMJ(); err != nil || v != 1_000_000 {
		t.Errorf("energy = %d, %v", v, err)
	}
	if inf := d0.info(); inf.name != "NVIDIA H100 80GB HBM3" || inf.memory != 80<<30 {
		t.Errorf("info = %+v", inf)
	}
}

func TestOpenNVMLVisibleDevices(t *testing.T) {
	lib := mockLib(mockDevice("GPU-0000", 1, true), mockDevice("GPU-1111", 1, true))
	b, _ := openNVML(lib, "1")
	if b == nil || len(b.devices()) != 1 || b.devices()[0].info().uuid != "GPU-1111" {
		t.Fatalf("CUDA_VISIBLE_DEVICES=1 gave %v", b)
	}
	if b, reason := openNVML(mockLib(mockDevice("GPU-0000", 1, true)), "GPU-9"); b != nil || !strings.Contains(reason, "none visible") {
		t.Errorf("no visible device: backend %v, reason %q", b, reason)
	}
}

func TestOpenNVMLInitFailureIsAFact(t *testing.T) {
	lib := mockLib()
	lib.InitFunc = func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND }
	called := false
	lib.DeviceGetCountFunc = func() (int, nvml.Return) { called = true; return 0, nvml.SUCCESS }
	b, reason := openNVML(lib, "")
	if b != nil || !strings.Contains(reason, "libnvidia-ml not found") {
		t.Errorf("openNVML = %v, %q", b, reason)
	}
	if called {
		t.Error("called NVML after a failed Init")
	}
}
