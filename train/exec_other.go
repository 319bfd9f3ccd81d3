//go:build !linux

package train

// waitExited reports that it cannot wait without reaping on this system:
// the caller reaps the process first, then kills what is left of its
// group.
func waitExited(pid int) bool { return false }

// procCPUSeconds reports that it cannot read a process's CPU time here.
func procCPUSeconds(pid int) (float64, bool) { return 0, false }
