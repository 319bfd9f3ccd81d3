//go:build unix

package energy

import (
	"syscall"
	"time"
)

// processCPUTime is this process's user plus system CPU time, all threads,
// plus that of its children that have been waited for: an external trainer
// (a PyTorch script the site runs per task) is reaped inside its task's
// window, so its CPU time counts toward that task.
func processCPUTime() time.Duration {
	var self, children syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		return 0
	}
	t := self.Utime.Nano() + self.Stime.Nano()
	if err := syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children); err == nil {
		t += children.Utime.Nano() + children.Stime.Nano()
	}
	return time.Duration(t)
}
