//go:build !unix

package aggregators

import "time"

// cpuTime is 0 where the process's CPU time is not read: the benchmarks'
// cpu-ms/op is then 0.
func cpuTime() time.Duration { return 0 }
