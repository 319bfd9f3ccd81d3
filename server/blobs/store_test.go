package blobs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// noCheck is a Statfs reporting the space unknown, for tests that are not
// about space.
func noCheck(string) (Space, error) { return Space{Free: -1, Total: -1}, nil }

func open(t *testing.T, opts Options) *Store {
	t.Helper()
	if opts.Statfs == nil {
		opts.Statfs = noCheck
	}
	opts.Logger = slog.New(slog.NewTextHandler(t.Output(), nil))
	s, err := Open(t.TempDir(), opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// put writes data in chunks of 1000 bytes and commits it.
func put(t *testing.T, s *Store, data []byte) Digest {
	t.Helper()
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for c := range chunks(data, 1000) {
		if _, err := w.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	d, err := w.Commit(Sum(data))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func chunks(b []byte, n int) func(func([]byte) bool) {
	return func(yield func([]byte) bool) {
		for len(b) > 0 {
			c := b[:min(n, len(b))]
			b = b[len(c):]
			if !yield(c) {
				return
			}
		}
	}
}

func content(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31) ^ seed
	}
	return b
}

// files returns the names of the files under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			names = append(names, filepath.ToSlash(rel))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestWriteRead(t *testing.T) {
	s := open(t, Options{})
	data := content(10_001, 7)
	d := put(t, s, data)
	if d != Sum(data) {
		t.Fatalf("Commit = %s, want %s", d, Sum(data))
	}
	want := []string{"sha256/" + string(d[:2]) + "/" + string(d)}
	if got := files(t, s.Dir()); strings.Join(got, ",") != want[0] {
		t.Errorf("files in the store = %v, want %v", got, want)
	}
	if n, err := s.Stat(d); n != int64(len(data)) || err != nil {
		t.Errorf("Stat = %d, %v, want %d, nil", n, err, len(data))
	}
	if !s.Has(d) || s.Has(Sum([]byte("other"))) {
		t.Errorf("Has(stored), Has(other) = %v, %v, want true, false", s.Has(d), s.Has(Sum([]byte("other"))))
	}
	if got := s.Size(); got != int64(len(data)) {
		t.Errorf("Size = %d, want %d", got, len(data))
	}
	f, err := s.Open(d)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(got, data) {
		t.Errorf("reading the blob = %d bytes, %v; want the %d bytes written", len(got), err, len(data))
	}
	if err := s.Verify(t.Context(), d); err != nil {
		t.Errorf("Verify = %v, want nil", err)
	}
	// Reopening counts the stored blob.
	s2, err := Open(s.Dir(), Options{Statfs: noCheck})
	if err != nil {
		t.Fatal(err)
	}
	if got := s2.Size(); got != int64(len(data)) {
		t.Errorf("Size after reopening = %d, want %d", got, len(data))
	}
}

func TestEmptyBlob(t *testing.T) {
	s := open(t, Options{})
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	d, err := w.Commit("")
	if err != nil || d != Sum(nil) {
		t.Fatalf("Commit(\"\") of nothing = %s, %v, want %s", d, err, Sum(nil))
	}
	if n, err := s.Stat(d); n != 0 || err != nil {
		t.Errorf("Stat = %d, %v, want 0, nil", n, err)
	}
}

// TestWriteErrors checks that each failed write returns its error and
// leaves the store empty.
func TestWriteErrors(t *testing.T) {
	data := content(5000, 1)
	wrong := Sum([]byte("something else"))
	tests := []struct {
		name    string
		opts    Options
		write   func(ctx context.Context, cancel func(), w *Writer) (Digest, error)
		wantErr error
		wantMsg []string
	}{
		{
			name: "digest mismatch",
			write: func(_ context.Context, _ func(), w *Writer) (Digest, error) {
				w.Write(data)
				return w.Commit(wrong)
			},
			wantErr: ErrDigestMismatch,
			wantMsg: []string{string(Sum(data)), string(wrong), "5000 bytes", "send it again"},
		},
		{
			name: "truncated upload",
			write: func(_ context.Context, _ func(), w *Writer) (Digest, error) {
				w.Write(data[:4999])
				return w.Commit(Sum(data))
			},
			wantErr: ErrDigestMismatch,
			wantMsg: []string{"4999 bytes"},
		},
		{
			name: "malformed want",
			write: func(_ context.Context, _ func(), w *Writer) (Digest, error) {
				w.Write(data)
				return w.Commit("sha256:abc")
			},
			wantErr: ErrBadDigest,
		},
		{
			name: "context cancelled mid-write",
			write: func(_ context.Context, cancel func(), w *Writer) (Digest, error) {
				w.Write(data[:100])
				cancel()
				if _, err := w.Write(data[100:]); !errors.Is(err, context.Canceled) {
					return "", err
				}
				return w.Commit("")
			},
			wantErr: ErrWriterDone,
			wantMsg: []string{"context canceled"},
		},
		{
			name: "store above MaxBytes",
			opts: Options{MaxBytes: 4096},
			write: func(_ context.Context, _ func(), w *Writer) (Digest, error) {
				if _, err := w.Write(data); err != nil {
					return "", err
				}
				return w.Commit("")
			},
			wantErr: ErrNoSpace,
			wantMsg: []string{"5000 bytes", "Options.MaxBytes (4096)", "Store.Collect"},
		},
		{
			name: "commit after abort",
			write: func(_ context.Context, _ func(), w *Writer) (Digest, error) {
				w.Write(data)
				w.Abort()
				return w.Commit("")
			},
			wantErr: ErrWriterDone,
		},
		{
			name: "commit twice",
			write: func(_ context.Context, _ func(), w *Writer) (Digest, error) {
				w.Write(data)
				if _, err := w.Commit(""); err != nil {
					return "", err
				}
				return w.Commit("")
			},
			wantErr: ErrWriterDone,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t, tt.opts)
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			w, err := s.Create(ctx)
			if err != nil {
				t.Fatal(err)
			}
			d, err := tt.write(ctx, cancel, w)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error = %v, want %v", err, tt.wantErr)
			}
			if d != "" {
				t.Errorf("digest = %s, want none", d)
			}
			for _, m := range tt.wantMsg {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("error %q does not say %q", err, m)
				}
			}
			if _, err := w.Write(data); !errors.Is(err, ErrWriterDone) {
				t.Errorf("Write after the failure = %v, want ErrWriterDone", err)
			}
			if err := w.Abort(); err != nil {
				t.Errorf("Abort after the failure = %v, want nil", err)
			}
			want := ""
			if tt.name == "commit twice" {
				want = "sha256/" + string(Sum(data)[:2]) + "/" + string(Sum(data))
			}
			if got := strings.Join(files(t, s.Dir()), ","); got != want {
				t.Errorf("files in the store = %q, want %q", got, want)
			}
		})
	}
}

func TestReadErrors(t *testing.T) {
	s := open(t, Options{})
	missing := Sum([]byte("missing"))
	for _, tt := range []struct {
		d    Digest
		want error
	}{
		{missing, ErrNotFound},
		{"../../etc/passwd", ErrBadDigest},
		{Digest(strings.ToUpper(string(missing))), ErrBadDigest},
	} {
		if _, err := s.Open(tt.d); !errors.Is(err, tt.want) {
			t.Errorf("Open(%.20s) = %v, want %v", tt.d, err, tt.want)
		}
		if _, err := s.Stat(tt.d); !errors.Is(err, tt.want) {
			t.Errorf("Stat(%.20s) = %v, want %v", tt.d, err, tt.want)
		}
		if err := s.Verify(t.Context(), tt.d); !errors.Is(err, tt.want) {
			t.Errorf("Verify(%.20s) = %v, want %v", tt.d, err, tt.want)
		}
		if s.Has(tt.d) {
			t.Errorf("Has(%.20s) = true, want false", tt.d)
		}
	}
	if err := s.Delete(missing); err != nil {
		t.Errorf("Delete(missing) = %v, want nil", err)
	}
	if err := s.Delete("x"); !errors.Is(err, ErrBadDigest) {
		t.Errorf("Delete(x) = %v, want ErrBadDigest", err)
	}
}

// TestConcurrentSameContent writes the same content from many writers at
// once: all commits succeed and the store holds one blob.
func TestConcurrentSameContent(t *testing.T) {
	s := open(t, Options{})
	data := content(256<<10, 3)
	const writers = 16
	var wg sync.WaitGroup
	digests := make([]Digest, writers)
	errs := make([]error, writers)
	for i := range writers {
		wg.Go(func() {
			w, err := s.Create(t.Context())
			if err != nil {
				errs[i] = err
				return
			}
			for c := range chunks(data, 4096) {
				if _, err := w.Write(c); err != nil {
					errs[i] = err
					return
				}
			}
			digests[i], errs[i] = w.Commit(Sum(data))
		})
	}
	wg.Wait()
	for i := range writers {
		if errs[i] != nil || digests[i] != Sum(data) {
			t.Errorf("writer %d: Commit = %s, %v, want %s, nil", i, digests[i], errs[i], Sum(data))
		}
	}
	if got := files(t, s.Dir()); len(got) != 1 {
		t.Errorf("files in the store = %v, want the one blob", got)
	}
	if got := s.Size(); got != int64(len(data)) {
		t.Errorf("Size = %d, want %d", got, len(data))
	}
	if err := s.Verify(t.Context(), Sum(data)); err != nil {
		t.Error(err)
	}
}

// TestOpenRemovesCrashedWrite simulates a crash mid-write: a temporary
// file is left; Open removes it and keeps the committed blobs.
func TestOpenRemovesCrashedWrite(t *testing.T) {
	s := open(t, Options{})
	data := content(3000, 9)
	d := put(t, s, data)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	w.Write(content(2000, 1))
	w.f.Close() // the process dies: no Commit, no Abort
	if err := os.WriteFile(filepath.Join(s.Dir(), "tmp", "blob-123"), []byte("partial"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 2 {
		t.Fatalf("temporary files before reopening = %v, want 2", got)
	}
	s2, err := Open(s.Dir(), Options{Statfs: noCheck})
	if err != nil {
		t.Fatal(err)
	}
	if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
		t.Errorf("temporary files after reopening = %v, want none", got)
	}
	if !s2.Has(d) || s2.Size() != int64(len(data)) {
		t.Errorf("after reopening: Has = %v, Size = %d, want true, %d", s2.Has(d), s2.Size(), len(data))
	}
}

// fakeFS is a Statfs whose free space a test sets.
type fakeFS struct {
	free, total atomic.Int64
	err         error
	calls       atomic.Int64
}

func (f *fakeFS) statfs(string) (Space, error) {
	f.calls.Add(1)
	return Space{Free: f.free.Load(), Total: f.total.Load()}, f.err
}

// TestNoSpaceMidWrite lets the disk fill while a blob is written: the
// write fails with ErrNoSpace, naming the free bytes, and the store is
// unchanged.
func TestNoSpaceMidWrite(t *testing.T) {
	fs := &fakeFS{}
	fs.free.Store(100 << 20)
	fs.total.Store(1 << 40)
	s := open(t, Options{Statfs: fs.statfs, MinFree: 1 << 20, CheckEvery: 1 << 20})
	kept := put(t, s, content(100, 0))
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	chunk := content(256<<10, 5)
	for range 8 { // 2 MiB: checks after the first MiB
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	calls := fs.calls.Load()
	fs.free.Store(1<<20 + 100<<10) // 1.1 MiB free: the next chunk would go below the reserve
	var werr error
	for i := 0; i < 8 && werr == nil; i++ {
		_, werr = w.Write(chunk)
	}
	if !errors.Is(werr, ErrNoSpace) {
		t.Fatalf("Write with the disk nearly full = %v, want ErrNoSpace", werr)
	}
	if fs.calls.Load() <= calls {
		t.Errorf("Statfs calls = %d, want more than %d: space is checked while writing", fs.calls.Load(), calls)
	}
	for _, m := range []string{"1150976 bytes free", "262144 more bytes", "1048576-byte reserve", "Store.Collect"} {
		if !strings.Contains(werr.Error(), m) {
			t.Errorf("error %q does not say %q", werr, m)
		}
	}
	if _, err := w.Commit(""); !errors.Is(err, ErrWriterDone) || !errors.Is(err, ErrNoSpace) {
		t.Errorf("Commit after ErrNoSpace = %v, want ErrWriterDone wrapping ErrNoSpace", err)
	}
	want := "sha256/" + string(kept[:2]) + "/" + string(kept)
	if got := strings.Join(files(t, s.Dir()), ","); got != want {
		t.Errorf("files in the store = %q, want only %q", got, want)
	}
	if s.Size() != 100 {
		t.Errorf("Size = %d, want 100", s.Size())
	}
}

func TestCreateRefusesWhenFull(t *testing.T) {
	const GiB = 1 << 30
	statErr := errors.New("statfs broke")
	tests := []struct {
		name        string
		minFree     int64
		free, total int64
		err         error
		want        error
	}{
		{"plenty", 0, 10 * GiB, 100 * GiB, nil, nil},
		{"below the 1 GiB default", 0, GiB - 1, 100 * GiB, nil, ErrNoSpace},
		{"5% of a small disk is the default", 0, 600 << 20, 10 * GiB, nil, nil},
		{"below 5% of a small disk", 0, 500<<20 - 1, 10 * GiB, nil, ErrNoSpace},
		{"explicit reserve", 2 * GiB, 2*GiB - 1, 100 * GiB, nil, ErrNoSpace},
		{"check disabled", -1, 0, 100 * GiB, nil, nil},
		{"space unknown", 0, -1, -1, nil, nil},
		{"statfs fails", 0, 10 * GiB, 100 * GiB, statErr, statErr},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &fakeFS{err: tt.err}
			fs.free.Store(tt.free)
			fs.total.Store(tt.total)
			s := open(t, Options{Statfs: fs.statfs, MinFree: tt.minFree})
			w, err := s.Create(t.Context())
			if !errors.Is(err, tt.want) {
				t.Fatalf("Create = %v, want %v", err, tt.want)
			}
			if err == nil {
				w.Abort()
			}
			if got := files(t, s.Dir()); len(got) != 0 {
				t.Errorf("files in the store = %v, want none", got)
			}
		})
	}
}

func TestVerifyDetectsCorruption(t *testing.T) {
	s := open(t, Options{})
	data := content(4096, 2)
	d := put(t, s, data)
	path := filepath.Join(s.Dir(), "sha256", string(d[:2]), string(d))
	bad := bytes.Clone(data)
	bad[1000] ^= 1
	if err := os.WriteFile(path, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	err := s.Verify(t.Context(), d)
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), string(Sum(bad))) || !strings.Contains(err.Error(), "Store.Delete") {
		t.Fatalf("Verify of a corrupted blob = %v, want ErrCorrupt naming %s and the fix", err, Sum(bad))
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := s.Verify(ctx, d); !errors.Is(err, context.Canceled) {
		t.Errorf("Verify with a cancelled context = %v, want context.Canceled", err)
	}
	if err := s.Delete(d); err != nil || s.Has(d) || s.Size() != 0 {
		t.Errorf("Delete = %v; then Has = %v, Size = %d, want nil, false, 0", err, s.Has(d), s.Size())
	}
}

func TestCollect(t *testing.T) {
	start := time.Now()
	now := start
	const grace = time.Minute
	s := open(t, Options{Grace: grace, Now: func() time.Time { return now }})
	a, b, c := content(1000, 1), content(2000, 2), content(3000, 3)
	da, db, dc := put(t, s, a), put(t, s, b), put(t, s, c)
	orphan, err := s.Create(t.Context()) // never committed
	if err != nil {
		t.Fatal(err)
	}
	orphan.Write(content(500, 4))
	keep := func(d Digest) bool { return d == da }

	removed, freed, err := s.Collect(t.Context(), keep)
	if removed != 0 || freed != 0 || err != nil {
		t.Fatalf("Collect within the grace = %d, %d, %v, want 0, 0, nil", removed, freed, err)
	}

	now = start.Add(grace + time.Second)
	// Committing c again restarts its grace.
	if got := put(t, s, c); got != dc {
		t.Fatalf("second commit of c = %s, want %s", got, dc)
	}
	// A reader of b keeps reading after b is collected.
	rb, err := s.Open(db)
	if err != nil {
		t.Fatal(err)
	}
	defer rb.Close()

	removed, freed, err = s.Collect(t.Context(), keep)
	if removed != 1 || freed != int64(len(b))+500 || err != nil {
		t.Fatalf("Collect after the grace = %d, %d, %v, want 1, %d, nil", removed, freed, err, len(b)+500)
	}
	if !s.Has(da) || s.Has(db) || !s.Has(dc) {
		t.Errorf("Has(a, b, c) = %v, %v, %v, want true, false, true", s.Has(da), s.Has(db), s.Has(dc))
	}
	if got := s.Size(); got != int64(len(a)+len(c)) {
		t.Errorf("Size = %d, want %d", got, len(a)+len(c))
	}
	if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
		t.Errorf("temporary files = %v, want the orphan collected", got)
	}
	if _, err := orphan.Commit(""); !errors.Is(err, ErrWriterDone) || !strings.Contains(err.Error(), "idle longer than Options.Grace") {
		t.Errorf("Commit of a collected writer = %v, want ErrWriterDone saying it idled", err)
	}
	if got, err := io.ReadAll(rb); err != nil || !bytes.Equal(got, b) {
		t.Errorf("reading b after it was collected = %d bytes, %v, want its %d bytes", len(got), err, len(b))
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	now = start.Add(time.Hour)
	if _, _, err := s.Collect(ctx, func(Digest) bool { return false }); !errors.Is(err, context.Canceled) {
		t.Errorf("Collect with a cancelled context = %v, want context.Canceled", err)
	}
	if !s.Has(da) {
		t.Error("a cancelled Collect removed a blob")
	}
}

func TestExpect(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		free int64
		n    int64
		want error
		msg  string
	}{
		{"fits", Options{MinFree: 1 << 20}, 10 << 20, 9 << 20, nil, ""},
		{"larger than the free space", Options{MinFree: 1 << 20}, 10 << 20, 9<<20 + 1, ErrNoSpace, "10485760 bytes free; 9437185 more bytes"},
		{"above MaxBytes", Options{MinFree: -1, MaxBytes: 1000}, 0, 901, ErrNoSpace, "Options.MaxBytes (1000)"},
		{"at MaxBytes", Options{MinFree: -1, MaxBytes: 1000}, 0, 900, nil, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := &fakeFS{}
			fs.free.Store(tt.free)
			fs.total.Store(1 << 40)
			tt.opts.Statfs = fs.statfs
			s := open(t, tt.opts)
			fs.free.Store(1 << 40)
			put(t, s, content(100, 0))
			fs.free.Store(tt.free)
			w, err := s.Create(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			defer w.Abort()
			err = w.Expect(tt.n)
			if !errors.Is(err, tt.want) || err != nil && !strings.Contains(err.Error(), tt.msg) {
				t.Fatalf("Expect(%d) = %v, want %v saying %q", tt.n, err, tt.want, tt.msg)
			}
			if err != nil {
				if got := files(t, filepath.Join(s.Dir(), "tmp")); len(got) != 0 {
					t.Errorf("temporary files after a refused Expect = %v, want none", got)
				}
			}
		})
	}
}

// TestCollectRacesCommit collects while the same content is committed
// again and again, the clock passing the grace before each commit so that
// Collect may find the blob old just as a commit restarts its grace: a
// blob whose commit returned is in the store until the clock moves again.
func TestCollectRacesCommit(t *testing.T) {
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	s := open(t, Options{Grace: time.Minute, Now: func() time.Time { return time.Unix(0, now.Load()) }})
	data := content(10_000, 8)
	nothing := func(Digest) bool { return false }
	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		for range 50 {
			if _, _, err := s.Collect(t.Context(), nothing); err != nil {
				t.Error(err)
				return
			}
		}
	})
	for range 50 {
		now.Add(int64(2 * time.Minute))
		d := put(t, s, data)
		if !s.Has(d) {
			t.Fatal("a blob committed within the grace was collected")
		}
	}
	wg.Wait()
	now.Add(int64(2 * time.Minute))
	removed, freed, err := s.Collect(t.Context(), nothing)
	if removed != 1 || freed != int64(len(data)) || err != nil || s.Size() != 0 {
		t.Errorf("Collect after the grace = %d, %d, %v (Size %d), want 1, %d, nil (Size 0)", removed, freed, err, s.Size(), len(data))
	}
}

// TestCollectSparesARecommit commits a blob again just after Collect has
// found it old: Collect looks again under its lock and keeps it.
func TestCollectSparesARecommit(t *testing.T) {
	start := time.Now()
	now := start
	s := open(t, Options{Grace: time.Minute, Now: func() time.Time { return now }})
	data := content(1000, 6)
	d := put(t, s, data)
	now = start.Add(2 * time.Minute)
	testHookCollectSaw = func(saw Digest) {
		if saw == d {
			put(t, s, data)
		}
	}
	defer func() { testHookCollectSaw = nil }()
	removed, freed, err := s.Collect(t.Context(), func(Digest) bool { return false })
	if removed != 0 || freed != 0 || err != nil || !s.Has(d) {
		t.Errorf("Collect racing a recommit = %d, %d, %v (Has %v), want 0, 0, nil (Has true)", removed, freed, err, s.Has(d))
	}
}

// TestLargeWrites writes chunks large enough to be hashed on another
// goroutine, mixed with small ones: the digest is still the bytes'.
func TestLargeWrites(t *testing.T) {
	s := open(t, Options{})
	data := content(3*parallelHash+12345, 4)
	w, err := s.Create(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range [][]byte{data[:10], data[10 : 10+2*parallelHash], data[10+2*parallelHash:]} {
		if _, err := w.Write(c); err != nil {
			t.Fatal(err)
		}
	}
	if d, err := w.Commit(Sum(data)); err != nil || d != Sum(data) {
		t.Fatalf("Commit = %s, %v, want %s", d, err, Sum(data))
	}
	if err := s.Verify(t.Context(), Sum(data)); err != nil {
		t.Error(err)
	}
	if w.Written() != int64(len(data)) {
		t.Errorf("Written = %d, want %d", w.Written(), len(data))
	}
}
