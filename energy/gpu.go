package energy

import (
	"errors"
	"os"
	"strconv"
	"strings"
)

// errUnsupported is returned by a gpuDevice for a reading the device or
// driver does not offer.
var errUnsupported = errors.New("not supported by this device or driver")

// gpuDevice is one GPU as the Meter reads it.
type gpuDevice interface {
	info() gpuInfo
	// energyMJ returns the total-energy counter in millijoules.
	energyMJ() (uint64, error)
	// powerMW returns instant power in milliwatts and its source
	// ("instant" or "average").
	powerMW() (uint32, string, error)
	utilization() (uint32, error)
	memoryUsed() (uint64, error)
}

type gpuInfo struct {
	index  int
	uuid   string
	name   string
	memory uint64
	mig    bool
}

// gpuBackend opens the GPUs a process may use.
type gpuBackend interface {
	devices() []gpuDevice
	driver() string
	close()
}

// visibleFilter parses CUDA_VISIBLE_DEVICES: a comma-separated list of
// indices or UUIDs (GPU-…, MIG-…, or a unique prefix). It reports whether
// device (index, uuid) is visible. Empty means all; an entry that matches
// nothing hides the rest, as CUDA does.
func visibleFilter(spec string) func(index int, uuid string) bool {
	spec = strings.TrimSpace(spec)
	if spec == "" {
		return func(int, string) bool { return true }
	}
	var entries []string
	for _, e := range strings.Split(spec, ",") {
		if e = strings.TrimSpace(e); e != "" {
			entries = append(entries, e)
		}
	}
	return func(index int, uuid string) bool {
		for _, e := range entries {
			if n, err := strconv.Atoi(e); err == nil {
				if n < 0 {
					return false // CUDA stops at the first invalid entry
				}
				if n == index {
					return true
				}
				continue
			}
			if uuid != "" && strings.HasPrefix(uuid, e) {
				return true
			}
		}
		return false
	}
}

// lookupVisible returns *p, or $CUDA_VISIBLE_DEVICES when p is nil.
func lookupVisible(p *string) string {
	if p != nil {
		return *p
	}
	return os.Getenv("CUDA_VISIBLE_DEVICES")
}
