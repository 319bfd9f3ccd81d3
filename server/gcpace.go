package server

import (
	"runtime/debug"
	"sync"

	"github.com/cohortfl/cohort/model"
)

// A round of a large model makes garbage at the rate updates arrive (each
// received chunk is a new buffer), while what it keeps alive is about the
// model's size (the sum). With Go's default GOGC of 100 the heap grows to
// twice the live heap before a collection, so the coordinator would peak
// near twice the model beyond it. For such a round the collector's target
// is lowered so that the garbage between two collections is about a
// quarter of the model (64 MiB at least): the heap is mostly noscan
// float32s, so a collection costs little however often it runs.

// gcMu serialises the rounds' changes to the process's GC target.
var (
	gcMu     sync.Mutex
	gcPaced  int // rounds pacing the collector now
	gcBefore int // the percent before the first of them
)

// gcPercentFor is the GC percent for a round of a model of size bytes, or
// 0 where the default suits it (a model below model.CollectAfterBytes).
func gcPercentFor(size int64) int {
	if size < model.CollectAfterBytes {
		return 0
	}
	headroom := max(int64(64<<20), size/4)
	return int(min(100, max(10, 100*headroom/size)))
}

// paceGC lowers the GC percent for a round of a model of size bytes and
// returns what restores it once the round is over. It leaves a process
// whose collector is off (GOGC=off) or already below that target alone.
func paceGC(size int64) (restore func()) {
	p := gcPercentFor(size)
	if p == 0 {
		return func() {}
	}
	gcMu.Lock()
	defer gcMu.Unlock()
	prev := debug.SetGCPercent(p)
	if prev < 0 || (gcPaced == 0 && prev <= p) || (gcPaced > 0 && prev < p) {
		debug.SetGCPercent(prev) // off, or lower already
		return func() {}
	}
	if gcPaced == 0 {
		gcBefore = prev
	}
	gcPaced++
	var once sync.Once
	return func() {
		once.Do(func() {
			gcMu.Lock()
			defer gcMu.Unlock()
			if gcPaced--; gcPaced == 0 {
				debug.SetGCPercent(gcBefore)
			}
		})
	}
}
