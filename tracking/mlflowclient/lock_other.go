//go:build !unix

package mlflowclient

import (
	"fmt"
	"os"
)

// lockDir opens the lock file; without flock, nothing stops a second
// process, so give each process its own SpoolDir.
func lockDir(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("locking: %w", err)
	}
	return f, nil
}

func unlockDir(f *os.File) error { return f.Close() }
