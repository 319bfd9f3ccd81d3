//go:build race

package data

// raceEnabled is true when the tests run under the race detector, which
// makes converting 47 million pixels take ~15 s.
const raceEnabled = true
