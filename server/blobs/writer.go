package blobs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
)

// Writer streams one blob into the store; [Store.Create] returns it. It
// is an io.Writer that hashes as it writes into a temporary file; Commit
// puts the blob in place, Abort throws it away. A failed write (no space,
// a cancelled context, a disk error) removes the temporary file and is
// returned again by every later call. A Writer is not safe for concurrent
// use.
type Writer struct {
	s *Store
	// ctx is Create's: an io.Writer's Write takes no context, so the
	// Writer keeps the one it was created under and fails once it is done.
	ctx       context.Context
	f         *os.File
	direct    *directWriter // nil: writes go through the page cache
	h         hash.Hash
	n         int64 // bytes written
	unchecked int64 // bytes written since the last free-space check
	err       error // sticky: the write that failed, or ErrWriterDone
	// active is when the Writer was created or last wrote, in Unix
	// nanoseconds by Options.Now; Collect reads it.
	active atomic.Int64
}

var _ io.Writer = (*Writer)(nil)

// Create starts a blob, written through the page cache, where this node's
// readers of it find it. It fails with [ErrNoSpace] when the file system
// already has less than [Options.MinFree] bytes free. The Writer fails
// once ctx is done. The caller must Commit or Abort it; a Writer neither
// committed nor aborted leaves a temporary file that Collect removes
// after the grace.
func (s *Store) Create(ctx context.Context) (*Writer, error) { return s.create(ctx, false) }

// CreateCold starts a blob as Create does, for one this node keeps but is
// not about to read (a follower's copy of a model): written with
// O_DIRECT where the file system takes it (see direct.go), it costs
// neither the page cache nor the CPU copying into it. Until Commit, up to
// 8 MiB of it wait in the Writer's memory rather than in its file, and a
// goroutine writes it: the caller must Commit or Abort the Writer, which
// Collect cannot do for it.
func (s *Store) CreateCold(ctx context.Context) (*Writer, error) { return s.create(ctx, true) }

func (s *Store) create(ctx context.Context, cold bool) (*Writer, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("creating blob: %w", err)
	}
	if err := s.checkSpace(0, 0); err != nil {
		return nil, fmt.Errorf("creating blob: %w", err)
	}
	// Under the lock, so that Collect sees the file and its Writer together.
	s.mu.Lock()
	defer s.mu.Unlock()
	f, err := os.CreateTemp(s.path(tmpDir), tmpPattern)
	if err != nil {
		return nil, fmt.Errorf("creating blob: %w", err)
	}
	w := &Writer{s: s, ctx: ctx, f: f, h: sha256.New()}
	if cold {
		w.direct = newDirectWriter(f)
	}
	w.active.Store(s.opts.Now().UnixNano())
	s.live[f.Name()] = w
	return w, nil
}

// Write writes p to the blob. Every [Options.CheckEvery] bytes it checks
// that the file system keeps [Options.MinFree] bytes free after p, and it
// keeps the store within [Options.MaxBytes]; either failing returns an
// error wrapping [ErrNoSpace] and removes what was written.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if err := w.ctx.Err(); err != nil {
		return 0, w.fail(fmt.Errorf("writing blob: %w", err))
	}
	if m := w.s.opts.MaxBytes; m > 0 && w.s.total.Load()+w.n+int64(len(p)) > m {
		return 0, w.fail(fmt.Errorf("writing blob: %d bytes would take the store (%d bytes) above Options.MaxBytes (%d); collect unreferenced blobs (Store.Collect) or raise the bound: %w",
			w.n+int64(len(p)), w.s.total.Load(), m, ErrNoSpace))
	}
	if w.unchecked+int64(len(p)) > w.s.opts.CheckEvery {
		if err := w.s.checkSpace(w.n, int64(len(p))); err != nil {
			return 0, w.fail(fmt.Errorf("writing blob: %w", err))
		}
		w.unchecked = 0
	}
	n, err := w.write(p)
	w.n += int64(n)
	w.unchecked += int64(n)
	w.active.Store(w.s.opts.Now().UnixNano())
	if err != nil {
		return n, w.fail(fmt.Errorf("writing blob: %w", err))
	}
	return n, nil
}

// Expect announces the blob's size, an upload's Content-Length, before
// it is written: it fails at once with an error wrapping [ErrNoSpace]
// (and aborts the Writer) when the file system would keep less than
// [Options.MinFree] free after n more bytes or the store would grow above
// [Options.MaxBytes], rather than after most of the bytes have arrived.
func (w *Writer) Expect(n int64) error {
	if w.err != nil {
		return w.err
	}
	if m := w.s.opts.MaxBytes; m > 0 && w.s.total.Load()+w.n+n > m {
		return w.fail(fmt.Errorf("expecting a blob of %d bytes: it would take the store (%d bytes) above Options.MaxBytes (%d); collect unreferenced blobs (Store.Collect) or raise the bound: %w",
			n, w.s.total.Load(), m, ErrNoSpace))
	}
	if err := w.s.checkSpace(w.n, n); err != nil {
		return w.fail(fmt.Errorf("expecting a blob of %d bytes: %w", n, err))
	}
	return nil
}

// parallelHash is the write above which the Writer hashes p while the
// file system takes it, on another goroutine: SHA-256 and the write then
// overlap (BenchmarkWriteRead); below it, the goroutine costs more than it
// saves.
const parallelHash = 256 << 10

// write writes p to the file and the hash.
func (w *Writer) write(p []byte) (int, error) {
	var dst io.Writer = w.f
	if w.direct != nil {
		dst = w.direct
	}
	if len(p) < parallelHash {
		n, err := dst.Write(p)
		w.h.Write(p[:n])
		return n, err
	}
	done := make(chan struct{})
	go func() {
		w.h.Write(p)
		close(done)
	}()
	n, err := dst.Write(p)
	<-done
	// On a short write the hash covers more than the file holds; the
	// error fails the Writer, which is then never committed.
	return n, err
}

// Written returns the number of bytes written so far.
func (w *Writer) Written() int64 { return w.n }

// Commit puts the blob in the store and returns its digest. A non-empty
// want is the digest the caller expects: bytes hashing to anything else
// return an error wrapping [ErrDigestMismatch] and store nothing. When the
// store already holds the blob, Commit discards the copy, restarts the
// blob's grace for Collect and succeeds. Commit fsyncs the blob and its
// directory before it returns.
func (w *Writer) Commit(want Digest) (Digest, error) {
	if w.err != nil {
		return "", w.err
	}
	if want != "" {
		if _, err := ParseDigest(string(want)); err != nil {
			return "", w.fail(fmt.Errorf("committing blob: %w", err))
		}
	}
	got := digestOf(w.h)
	if want != "" && got != want {
		return "", w.fail(fmt.Errorf("committing blob: %d bytes written hash to %s, want %s; the upload was truncated or corrupted, send it again: %w", w.n, got, want, ErrDigestMismatch))
	}
	if w.direct != nil {
		if err := w.direct.finish(); err != nil {
			return "", w.fail(fmt.Errorf("committing blob %s: writing its last bytes: %w", got, err))
		}
	}
	if err := w.f.Sync(); err != nil {
		return "", w.fail(fmt.Errorf("committing blob %s: %w", got, err))
	}
	if err := w.f.Close(); err != nil {
		return "", w.fail(fmt.Errorf("committing blob %s: %w", got, err))
	}
	tmp := w.f.Name()
	w.err = ErrWriterDone
	if err := w.s.place(tmp, got, w.n); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("committing blob %s: %w", got, err)
	}
	return got, nil
}

// Abort throws the blob away. It may be called after Commit or a failed
// write, and more than once: then it does nothing.
func (w *Writer) Abort() error {
	if w.err != nil {
		return nil
	}
	w.err = ErrWriterDone
	return w.discard()
}

// fail records err, removes the temporary file and returns err.
func (w *Writer) fail(err error) error {
	w.discard()
	w.err = fmt.Errorf("%w (%w)", ErrWriterDone, err)
	return err
}

func (w *Writer) discard() error {
	if w.direct != nil {
		w.direct.release()
	}
	w.f.Close()
	w.s.mu.Lock()
	delete(w.s.live, w.f.Name())
	w.s.mu.Unlock()
	if err := os.Remove(w.f.Name()); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("aborting blob: %w", err)
	}
	return nil
}

// place renames the temporary file tmp of size bytes to the blob d, or
// discards it when the store has d already.
func (s *Store) place(tmp string, d Digest, size int64) error {
	dst := s.blobPath(d)
	fan := filepath.Dir(dst)
	if _, err := os.Stat(fan); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(fan, 0o755); err != nil {
			return err
		}
		if err := syncDir(filepath.Dir(fan)); err != nil { // the new fan-out directory survives a crash
			return err
		}
	}
	now := s.opts.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.live[tmp]; !ok {
		return fmt.Errorf("the writer was idle longer than Options.Grace and Collect removed its temporary file; write the blob again: %w", ErrWriterDone)
	}
	delete(s.live, tmp)
	if _, err := os.Lstat(dst); err == nil {
		if err := os.Remove(tmp); err != nil {
			return err
		}
		return os.Chtimes(dst, now, now) // restart its grace for Collect
	}
	if m := s.opts.MaxBytes; m > 0 && s.total.Load()+size > m {
		return fmt.Errorf("%d bytes would take the store (%d bytes) above Options.MaxBytes (%d); collect unreferenced blobs (Store.Collect) or raise the bound: %w", size, s.total.Load(), m, ErrNoSpace)
	}
	if err := os.Chtimes(tmp, now, now); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		return err
	}
	s.total.Add(size)
	return syncDir(fan)
}

// syncDir fsyncs a directory so that a rename into it survives a crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("fsync of %s: %w", dir, err)
	}
	return nil
}

// checkSpace returns an error wrapping ErrNoSpace when writing need more
// bytes (after written) would leave the file system below the reserve.
func (s *Store) checkSpace(written, need int64) error {
	reserve := s.opts.MinFree
	if reserve < 0 {
		return nil
	}
	sp, err := s.opts.Statfs(s.path(tmpDir))
	if err != nil {
		return fmt.Errorf("checking free space: %w", err)
	}
	if sp.Free < 0 {
		return nil
	}
	if reserve == 0 {
		reserve = defaultMinFree
		if sp.Total >= 0 && sp.Total*minFreePercentage/100 < reserve {
			reserve = sp.Total * minFreePercentage / 100
		}
	}
	if sp.Free-need < reserve {
		return fmt.Errorf("%s has %d bytes free; %d more bytes (after %d written) would leave less than the %d-byte reserve (Options.MinFree): free disk space, collect unreferenced blobs (Store.Collect) or move the store to a larger disk: %w",
			s.dir, sp.Free, need, written, reserve, ErrNoSpace)
	}
	return nil
}
