//go:build !linux

package blobs

import "os"

// setDirect reports false: O_DIRECT is Linux's; elsewhere blobs are
// written through the page cache.
func setDirect(*os.File, bool) bool { return false }
