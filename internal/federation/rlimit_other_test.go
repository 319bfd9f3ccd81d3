//go:build !unix

package federation

import "testing"

// raiseOpenFiles does nothing where there is no RLIMIT_NOFILE.
func raiseOpenFiles(testing.TB) {}
