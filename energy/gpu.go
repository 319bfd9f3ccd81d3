package energy

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// errUnsupported is returned by a gpuDevice for a reading the device or
// driver does not offer; errClosed after [Meter.Close].
var (
	errUnsupported = errors.New("not supported by this device or driver")
	errClosed      = errors.New("NVML was shut down (the meter is closed)")
)

// gpuDevice is one GPU as the Meter reads it. Its methods are safe for
// concurrent use: overlapping measurements read the same devices.
type gpuDevice interface {
	info() gpuInfo
	// energyMJ returns the total-energy counter in millijoules (since the
	// driver was loaded).
	energyMJ() (uint64, error)
	// powerMW returns the power draw in milliwatts.
	powerMW() (uint32, error)
	// utilization returns the percentage of the last sample period during
	// which a kernel ran.
	utilization() (uint32, error)
	// memoryUsed returns the device memory in use, in bytes.
	memoryUsed() (uint64, error)
	// processUtilization returns the per-process utilization samples NVML
	// took after since (a CPU timestamp in microseconds, as the samples'
	// own), as nvmlDeviceGetProcessUtilization does.
	processUtilization(since uint64) ([]procUtil, error)
}

// procUtil is one per-process utilization sample of a GPU.
type procUtil struct {
	pid    int
	stamp  uint64 // CPU timestamp, µs
	smUtil uint32 // percent of SM time the process's kernels used
}

// gpuInfo is what is known of a GPU once it is opened.
type gpuInfo struct {
	index   int    // NVML's index (PCI bus order)
	uuid    string // GPU-…
	name    string
	memory  uint64 // bytes in all
	counter bool   // the total-energy counter is readable
	power   string // PowerInstant or PowerAverage: where powerMW reads
	mig     bool   // MIG mode is on: the GPU is shared between instances
	migs    []string
}

// Power sources of a GPU's timeline, as GPUReport.PowerSource says.
const (
	// PowerInstant is NVML's FI_DEV_POWER_INSTANT field.
	PowerInstant = "instant"
	// PowerAverage is nvmlDeviceGetPowerUsage: a one-second average on
	// Ampere and later, used where the instant field is missing.
	PowerAverage = "average"
)

// gpuBackend is an opened NVML: the visible GPUs and the driver.
type gpuBackend interface {
	devices() []gpuDevice
	driver() string
	// close shuts NVML down; the devices then answer errClosed.
	close()
}

// visibleAll is the Options.Devices value that selects every GPU whatever
// $CUDA_VISIBLE_DEVICES says.
const visibleAll = "all"

// resolveVisible returns the CUDA_VISIBLE_DEVICES specification a meter
// applies: opt when set, else the environment's. ok is false when every GPU
// is visible (the variable is unset, or opt is "all").
func resolveVisible(opt string) (spec string, ok bool) {
	switch opt {
	case visibleAll:
		return "", false
	case "":
		return os.LookupEnv("CUDA_VISIBLE_DEVICES")
	}
	return opt, true
}

// gpuID is what CUDA_VISIBLE_DEVICES entries are matched against.
type gpuID struct {
	uuid string   // GPU-…
	migs []string // MIG-… UUIDs of the GPU's MIG devices
}

// selected is a GPU CUDA_VISIBLE_DEVICES selects: its position in the list
// given to selectVisible and the MIG instances named.
type selected struct {
	pos  int
	migs []string
}

// selectVisible applies a CUDA_VISIBLE_DEVICES specification to the GPUs
// in NVML order, as CUDA does: a comma-separated list of indices, GPU UUIDs
// (GPU-…, or a unique prefix, with or without "GPU-") and MIG devices
// (MIG-<uuid>, or the older MIG-GPU-<uuid>/<gi>/<ci>), read in order up to
// the first entry that names no GPU, which hides itself and the rest. An
// empty specification selects nothing. It returns the selected GPUs in
// NVML order and, when an entry stopped the list, why.
//
// Indices count in NVML's order, which is PCI bus order, as CUDA's does
// with CUDA_DEVICE_ORDER=PCI_BUS_ID; CUDA's default order puts the fastest
// GPU first, which differs only on machines with mixed GPUs (name GPUs by
// UUID there).
func selectVisible(spec string, gpus []gpuID) ([]selected, string) {
	chosen := make(map[int][]string)
	var order []int
	pick := func(pos int, mig string) {
		if _, ok := chosen[pos]; !ok {
			order = append(order, pos)
			chosen[pos] = nil
		}
		if mig != "" {
			chosen[pos] = append(chosen[pos], mig)
		}
	}
	stop := ""
	for _, raw := range strings.Split(spec, ",") {
		e := strings.TrimSpace(raw)
		if e == "" {
			continue
		}
		pos, mig, why := matchEntry(e, gpus)
		if why != "" {
			stop = fmt.Sprintf("CUDA_VISIBLE_DEVICES entry %q %s: it and the entries after it are ignored, as CUDA ignores them", e, why)
			break
		}
		pick(pos, mig)
	}
	out := make([]selected, 0, len(order))
	for pos := range gpus { // NVML order
		if migs, ok := chosen[pos]; ok {
			out = append(out, selected{pos: pos, migs: migs})
		}
	}
	return out, stop
}

// matchEntry finds the GPU one CUDA_VISIBLE_DEVICES entry names (and the
// MIG device, for a MIG entry), or says why it names none.
func matchEntry(e string, gpus []gpuID) (pos int, mig string, why string) {
	if n, err := strconv.Atoi(e); err == nil {
		if n < 0 || n >= len(gpus) {
			return 0, "", fmt.Sprintf("is not a GPU index (this machine has %d)", len(gpus))
		}
		return n, "", ""
	}
	gpuUUID := func(g gpuID) []string { return []string{g.uuid} }
	if rest, ok := strings.CutPrefix(e, "MIG-"); ok {
		if strings.HasPrefix(rest, "GPU-") { // MIG-GPU-<uuid>/<gi>/<ci>
			parent, _, _ := strings.Cut(rest, "/")
			p, _, why := uniquePrefix(parent, gpus, gpuUUID)
			return p, e, why
		}
		return uniquePrefix(e, gpus, func(g gpuID) []string { return g.migs })
	}
	if !strings.HasPrefix(e, "GPU-") {
		e = "GPU-" + e
	}
	p, _, why := uniquePrefix(e, gpus, gpuUUID)
	return p, "", why
}

// uniquePrefix returns the GPU with exactly one of its ids (as ids lists
// them) starting with prefix, and that id.
func uniquePrefix(prefix string, gpus []gpuID, ids func(gpuID) []string) (int, string, string) {
	found, match := -1, ""
	for i, g := range gpus {
		for _, id := range ids(g) {
			if strings.HasPrefix(id, prefix) {
				if found >= 0 {
					return 0, "", "matches more than one device"
				}
				found, match = i, id
			}
		}
	}
	if found < 0 {
		return 0, "", "matches no GPU or MIG device on this machine"
	}
	return found, match, ""
}
