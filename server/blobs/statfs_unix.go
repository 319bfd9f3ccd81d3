//go:build linux || darwin || freebsd || netbsd || openbsd

package blobs

import (
	"fmt"
	"syscall"
)

// statfs returns the space of the file system holding dir.
func statfs(dir string) (Space, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		return Space{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := uint64(st.Bsize)
	return Space{Free: int64(uint64(st.Bavail) * bs), Total: int64(uint64(st.Blocks) * bs)}, nil
}
