//go:build !linux

package energy

import "time"

// ThreadCPUTime falls back to the process's CPU time where per-thread
// accounting is unavailable.
func ThreadCPUTime() time.Duration { return processCPUTime() }
