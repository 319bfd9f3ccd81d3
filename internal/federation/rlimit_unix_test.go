//go:build unix

package federation

import (
	"syscall"
	"testing"
)

// raiseOpenFiles raises this process's open-files limit to its hard
// limit: a scale benchmark holds a descriptor or two a site.
func raiseOpenFiles(tb testing.TB) {
	tb.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		tb.Logf("reading the open-files limit: %v", err)
		return
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			tb.Logf("raising the open-files limit to %d: %v", lim.Max, err)
		}
	}
}
