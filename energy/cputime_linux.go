//go:build linux

package energy

import (
	"syscall"
	"time"
)

const rusageThread = 1 // RUSAGE_THREAD

// ThreadCPUTime returns the calling OS thread's user plus system CPU time.
// A goroutine that locks itself to its thread (runtime.LockOSThread) can
// use it to meter its own work in a process that does other work too, as
// `cohort run`'s simulated sites do.
func ThreadCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return processCPUTime()
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
