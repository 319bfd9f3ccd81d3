//go:build unix

package energy

import (
	"syscall"
	"time"
)

// processCPUTime is this process's user plus system CPU time, all threads.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
