package blobs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

const (
	defaultMinFree    = 1 << 30 // 1 GiB, or 5% of a smaller file system
	defaultGrace      = 10 * time.Minute
	defaultCheckEvery = 64 << 20
	blobDir, tmpDir   = "sha256", "tmp"
	tmpPattern        = "blob-*"
	minFreePercentage = 5
)

// Space is what a file system has: Free bytes available to this process
// and Total bytes. A negative Free means unknown: no check is made.
type Space struct {
	Free, Total int64
}

// Options configures a [Store]. The zero value is ready to use.
type Options struct {
	// MinFree is the reserve a write must leave free on the file system.
	// Zero means the smaller of 1 GiB and 5% of the file system; negative
	// disables the check. Free space is checked when a Writer is created
	// and every CheckEvery bytes, so the reserve may be undershot by up to
	// CheckEvery bytes per concurrent writer: keep MinFree well above that.
	MinFree int64
	// CheckEvery is how many bytes a Writer writes between free-space
	// checks; zero means 64 MiB.
	CheckEvery int64
	// MaxBytes, when positive, bounds the total size of the stored blobs.
	MaxBytes int64
	// Grace is how old a blob or temporary file must be before Collect
	// removes it, so that a blob just written and not yet referenced
	// survives; zero means 10 minutes. A Writer idle for longer loses its
	// temporary file to Collect, and its Commit fails.
	Grace time.Duration
	// Statfs reports the space of the file system holding a directory;
	// nil means the operating system's statfs. Tests inject faults here.
	Statfs func(dir string) (Space, error)
	// Now is the store's clock: Commit stamps a blob's modification time
	// with it, a Writer its last write, and Collect measures the grace by
	// it. Nil means time.Now.
	Now func() time.Time
	// Logger receives the store's logs; nil discards them.
	Logger *slog.Logger
}

// Store is a content-addressed blob store in one directory. Its methods
// are safe for concurrent use.
type Store struct {
	dir  string
	opts Options
	log  *slog.Logger

	// mu orders renames into the store with Collect's removals, so that a
	// blob committed again (its grace restarted) is never removed, and
	// guards live.
	mu sync.Mutex
	// live maps the temporary file of each Writer neither committed nor
	// aborted to it: Collect removes those idle for longer than the grace.
	live  map[string]*Writer
	total atomic.Int64 // bytes of committed blobs
}

// Open opens the store in dir, creating it if need be. It removes the
// temporary files a crashed writer left and sums the stored blobs' sizes.
func Open(dir string, opts Options) (*Store, error) {
	if opts.CheckEvery <= 0 {
		opts.CheckEvery = defaultCheckEvery
	}
	if opts.Grace <= 0 {
		opts.Grace = defaultGrace
	}
	if opts.Statfs == nil {
		opts.Statfs = statfs
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Store{dir: dir, opts: opts, log: log, live: make(map[string]*Writer)}
	for _, d := range []string{dir, s.path(blobDir), s.path(tmpDir)} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("opening blob store: %w", err)
		}
	}
	tmps, err := os.ReadDir(s.path(tmpDir))
	if err != nil {
		return nil, fmt.Errorf("opening blob store: %w", err)
	}
	for _, e := range tmps {
		if err := os.Remove(s.path(tmpDir, e.Name())); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("opening blob store: removing a crashed write's temporary file: %w", err)
		}
		log.Info("blob_tmp_removed", "file", e.Name())
	}
	var total int64
	err = s.walk(func(_ Digest, path string, info fs.FileInfo) error {
		total += info.Size()
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("opening blob store: %w", err)
	}
	s.total.Store(total)
	return s, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

// Size returns the total size of the stored blobs in bytes.
func (s *Store) Size() int64 { return s.total.Load() }

func (s *Store) path(elem ...string) string {
	return filepath.Join(append([]string{s.dir}, elem...)...)
}

// blobPath returns the file of the blob d.
func (s *Store) blobPath(d Digest) string {
	return s.path(blobDir, string(d[:2]), string(d))
}

// check returns d parsed, for methods that take a caller's digest.
func check(d Digest) (Digest, error) {
	return ParseDigest(string(d))
}

// Open opens the blob d for reading; its Stat gives the size, and it
// serves io.ReaderAt and io.Seeker for ranged downloads. The caller
// closes it. A blob removed (by Collect or Delete) while open stays
// readable through this file until it is closed: unix semantics, which
// this store relies on and Windows lacks.
func (s *Store) Open(d Digest) (*os.File, error) {
	d, err := check(d)
	if err != nil {
		return nil, err
	}
	f, err := os.Open(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("opening blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("opening blob %s: %w", d, err)
	}
	return f, nil
}

// Has reports whether the blob d is in the store.
func (s *Store) Has(d Digest) bool {
	_, err := s.Stat(d)
	return err == nil
}

// Stat returns the size of the blob d in bytes, or an error wrapping
// [ErrNotFound].
func (s *Store) Stat(d Digest) (int64, error) {
	d, err := check(d)
	if err != nil {
		return 0, err
	}
	info, err := os.Stat(s.blobPath(d))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("stat of blob %s: %w", d, ErrNotFound)
	}
	if err != nil {
		return 0, fmt.Errorf("stat of blob %s: %w", d, err)
	}
	return info.Size(), nil
}

// Verify rehashes the blob d and returns an error wrapping [ErrCorrupt]
// when its bytes no longer match its name.
func (s *Store) Verify(ctx context.Context, d Digest) error {
	f, err := s.Open(d)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, ctxReader{ctx, f}); err != nil {
		return fmt.Errorf("verifying blob %s: %w", d, err)
	}
	if got := digestOf(h); got != d {
		return fmt.Errorf("verifying blob %s: its bytes hash to %s; delete it (Store.Delete) and fetch it again: %w", d, got, ErrCorrupt)
	}
	return nil
}

// Delete removes the blob d; removing a missing blob is not an error.
// Readers that have it open keep reading it.
func (s *Store) Delete(d Digest) error {
	d, err := check(d)
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err = s.remove(s.blobPath(d))
	if err != nil {
		return fmt.Errorf("deleting blob %s: %w", d, err)
	}
	return nil
}

// remove removes a blob's file and takes its size off the total; s.mu is
// held. It returns the bytes freed.
func (s *Store) remove(path string) (int64, error) {
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if err := os.Remove(path); err != nil {
		return 0, err
	}
	s.total.Add(-info.Size())
	return info.Size(), nil
}

// Collect removes the blobs keep does not keep that are older than
// [Options.Grace] (a blob's age restarts when it is committed again), and
// the temporary files older than the grace that writers left behind. It
// returns the number of blobs removed and the bytes freed, temporary files
// included. keep is called without locks held; it must not call Collect.
func (s *Store) Collect(ctx context.Context, keep func(Digest) bool) (removed int, freed int64, err error) {
	cutoff := s.opts.Now().Add(-s.opts.Grace)
	err = s.walk(func(d Digest, path string, info fs.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !info.ModTime().Before(cutoff) || keep(d) {
			return nil
		}
		if testHookCollectSaw != nil {
			testHookCollectSaw(d)
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		// Look again under the lock: a commit of the same content may
		// have restarted the blob's grace since the walk saw it.
		info, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) || err == nil && !info.ModTime().Before(cutoff) {
			return nil
		}
		n, err := s.remove(path)
		if err != nil {
			return err
		}
		removed++
		freed += n
		s.log.Info("blob_collected", "digest", string(d), "bytes", n)
		return nil
	})
	if err != nil {
		return removed, freed, fmt.Errorf("collecting blobs: %w", err)
	}
	tmps, err := os.ReadDir(s.path(tmpDir))
	if err != nil {
		return removed, freed, fmt.Errorf("collecting temporary files: %w", err)
	}
	for _, e := range tmps {
		n, err := s.collectTmp(s.path(tmpDir, e.Name()), cutoff)
		if err != nil {
			return removed, freed, fmt.Errorf("collecting temporary files: %w", err)
		}
		freed += n
	}
	return removed, freed, nil
}

// collectTmp removes the temporary file path when its Writer (or, for a
// file no Writer owns, its modification) is older than cutoff, and
// returns the bytes freed.
func (s *Store) collectTmp(path string, cutoff time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	info, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil // committed or aborted meanwhile
	}
	if err != nil {
		return 0, err
	}
	last := info.ModTime()
	if w, ok := s.live[path]; ok {
		last = time.Unix(0, w.active.Load())
	}
	if !last.Before(cutoff) {
		return 0, nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, err
	}
	delete(s.live, path)
	s.log.Info("blob_tmp_collected", "file", filepath.Base(path), "bytes", info.Size())
	return info.Size(), nil
}

// testHookCollectSaw, when set by a test, is called when Collect has
// found a blob to remove and before it takes the lock to remove it.
var testHookCollectSaw func(Digest)

// walk calls fn for each stored blob; files whose names are not digests
// of their fan-out directory are skipped.
func (s *Store) walk(fn func(d Digest, path string, info fs.FileInfo) error) error {
	fans, err := os.ReadDir(s.path(blobDir))
	if err != nil {
		return err
	}
	for _, fan := range fans {
		if !fan.IsDir() {
			continue
		}
		files, err := os.ReadDir(s.path(blobDir, fan.Name()))
		if err != nil {
			return err
		}
		for _, f := range files {
			d, err := ParseDigest(f.Name())
			if err != nil || string(d[:2]) != fan.Name() || !f.Type().IsRegular() {
				continue
			}
			info, err := f.Info()
			if errors.Is(err, fs.ErrNotExist) {
				continue
			}
			if err != nil {
				return err
			}
			path := s.path(blobDir, fan.Name(), f.Name())
			if err := fn(d, path, info); err != nil {
				return err
			}
		}
	}
	return nil
}

// ctxReader stops reading once its context is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}
