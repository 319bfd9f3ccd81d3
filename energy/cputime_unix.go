//go:build unix

package energy

import (
	"syscall"
	"time"
)

// processCPUTime is this process's user plus system CPU time, all threads.
// Its children's is not: a persistent trainer is reaped long after the
// tasks it served (when its arm ends), and would land its whole CPU time
// on whatever was measured then. A trainer's CPU time reaches its task's
// estimate through [Measurement.AddCPUTime] instead.
func processCPUTime() time.Duration {
	var self syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &self); err != nil {
		return 0
	}
	return time.Duration(self.Utime.Nano() + self.Stime.Nano())
}
