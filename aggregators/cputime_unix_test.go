//go:build unix

package aggregators

import (
	"syscall"
	"time"
)

// cpuTime is this process's user plus system CPU time, all threads.
func cpuTime() time.Duration {
	var self syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		return 0
	}
	return time.Duration(self.Utime.Nano() + self.Stime.Nano())
}
