//go:build !(linux && cgo)

package energy

// defaultGPUs reports that this build cannot read NVIDIA GPUs.
func defaultGPUs(visible string) (gpuBackend, string) {
	return nil, "built without cgo (or not for Linux): NVML is unavailable in this binary"
}
