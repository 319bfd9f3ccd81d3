//go:build !(linux && cgo)

package energy

// NVML stands in for go-nvml's nvml.Interface in builds without cgo (or
// not for Linux), where NVML cannot be loaded: a value in [Options.NVML]
// is ignored.
type NVML interface{}

// defaultGPUs reports that this build cannot read NVIDIA GPUs.
func defaultGPUs(NVML, string, bool) (gpuBackend, string) {
	return nil, "this cohort binary was built without cgo (or not for Linux), so it cannot load NVML; build it with CGO_ENABLED=1 on Linux to measure NVIDIA GPUs"
}
