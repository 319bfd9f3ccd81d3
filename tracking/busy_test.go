package tracking

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"
)

// busyError returns the error SQLite gives a connection that may not wait
// for a write lock another connection holds.
func busyError(t *testing.T) error {
	t.Helper()
	path := filepath.Join(t.TempDir(), "busy.db")
	holder, err := sql.Open("sqlite", "file:"+path+"?_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { holder.Close() })
	tx, err := holder.Begin()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tx.Rollback() })
	other, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(0)&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	tx2, err := other.Begin()
	if err == nil {
		tx2.Rollback()
		t.Fatal("a second writer began while the first held the lock")
	}
	return err
}

// TestRetryBusy: retryBusy tries again while SQLite answers busy (as it
// does, at once, to one of several processes switching the same new file
// to WAL: open's first connection goes through it), and not on any other
// error. open's use of it is one line, not tested here.
func TestRetryBusy(t *testing.T) {
	busy := busyError(t)
	if !isBusy(busy) || !isBusy(fmt.Errorf("opening: %w", busy)) {
		t.Fatalf("isBusy(%v) = false", busy)
	}
	ctx := context.Background()
	tries := 0
	err := retryBusy(ctx, time.Minute, func() error {
		if tries++; tries < 3 {
			return busy
		}
		return nil
	})
	if err != nil || tries != 3 {
		t.Errorf("busy twice, then open: err %v after %d tries, want nil after 3", err, tries)
	}
	other := errors.New("no such directory")
	tries = 0
	if err := retryBusy(ctx, time.Minute, func() error { tries++; return other }); err != other || tries != 1 {
		t.Errorf("another error: %v after %d tries, want it after 1", err, tries)
	}
	tries = 0
	if err := retryBusy(ctx, 3*busyRetry, func() error { tries++; return busy }); !isBusy(err) || tries < 2 {
		t.Errorf("busy past the limit: %v after %d tries, want busy after more than one", err, tries)
	}
}
