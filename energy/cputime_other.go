//go:build !unix

package energy

import "time"

// processCPUTime is unknown on this platform: the estimate reads 0 unless
// Options.CPUTime supplies it.
func processCPUTime() time.Duration { return 0 }
