package blobs

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// directSupported reports whether the file system of dir takes O_DIRECT.
func directSupported(t *testing.T, dir string) bool {
	t.Helper()
	f, err := os.CreateTemp(dir, "probe")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	return setDirect(f, true)
}

// TestDirectWrites: blobs of sizes around the alignment and the buffer,
// written in pieces of several sizes, read back byte for byte and hash to
// their digest: from CreateCold, written with O_DIRECT where the file
// system takes it and through the page cache where it does not (refused:
// as if fcntl refused it); from Create, through the page cache. In the
// temp dir and in /dev/shm (tmpfs: O_DIRECT since Linux 6.6).
func TestDirectWrites(t *testing.T) {
	dirs := map[string]string{"temp dir": ""}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dirs["/dev/shm"] = "/dev/shm"
	}
	sizes := []int{0, 1, directAlign - 1, directAlign, directAlign + 1, directBuffer - 1, directBuffer, directBuffer + 1, 2*directBuffer + 12345}
	pieces := []int{1000, directAlign, 3 << 20, 9 << 20}
	for name, base := range dirs {
		for _, mode := range []string{"cold", "cold-refused", "create"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				cold := mode != "create"
				if mode == "cold-refused" {
					defer func(on func(*os.File) bool) { directOn = on }(directOn)
					directOn = func(*os.File) bool { return false }
				}
				dir := base
				if dir == "" {
					dir = t.TempDir()
				} else {
					var err error
					if dir, err = os.MkdirTemp(dir, "blobs-test"); err != nil {
						t.Skipf("%s: %v", base, err)
					}
					t.Cleanup(func() { os.RemoveAll(dir) })
				}
				s, err := Open(filepath.Join(dir, "store"), Options{MinFree: -1})
				if err != nil {
					t.Fatal(err)
				}
				wantDirect := mode == "cold" && directSupported(t, s.path(tmpDir))
				for i, size := range sizes {
					data := content(size, byte(i))
					piece := pieces[i%len(pieces)]
					w, err := s.create(t.Context(), cold)
					if err != nil {
						t.Fatal(err)
					}
					if got := w.direct != nil; got != wantDirect {
						t.Fatalf("%s: Writer direct = %v, want %v", mode, got, wantDirect)
					}
					for c := range chunks(data, piece) {
						if n, err := w.Write(c); n != len(c) || err != nil {
							t.Fatalf("size %d: Write = %d, %v", size, n, err)
						}
					}
					d, err := w.Commit(Sum(data))
					if err != nil {
						t.Fatalf("size %d in pieces of %d: Commit = %v", size, piece, err)
					}
					f, err := s.Open(d)
					if err != nil {
						t.Fatal(err)
					}
					got, err := io.ReadAll(f)
					f.Close()
					if err != nil || !bytes.Equal(got, data) {
						t.Fatalf("size %d in pieces of %d: read back %d bytes (%v), equal %v", size, piece, len(got), err, bytes.Equal(got, data))
					}
				}
			})
		}
	}
}

// directWriterOn opens path with open and returns a directWriter on it,
// closed with the test; it skips the test where the file system refuses
// O_DIRECT.
func directWriterOn(t *testing.T, path string, open func(string) (*os.File, error)) *directWriter {
	t.Helper()
	f, err := open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	d := newDirectWriter(f)
	if d == nil {
		t.Skip("the temp dir's file system refuses O_DIRECT")
	}
	return d
}

// unalignedDirectWrites reports whether a file in dir with O_DIRECT set
// takes the write of b, whose memory is off the alignment.
func unalignedDirectWrites(t *testing.T, dir string, b []byte) bool {
	t.Helper()
	f, err := os.Create(filepath.Join(dir, "probe"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !setDirect(f, true) {
		t.Fatal("O_DIRECT was set on one file of the temp dir and refused on another")
	}
	_, err = f.Write(b)
	return err == nil
}

// TestDirectWriteFails: a write the goroutine fails is returned by a
// later Write or by finish, and stops the goroutine.
func TestDirectWriteFails(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	d := directWriterOn(t, path, os.Open) // read-only: every write fails
	data := content(3*directBuffer, 1)
	_, werr := d.Write(data) // the second full buffer waits for the first's failed write
	ferr := d.finish()
	if werr == nil && ferr == nil {
		t.Fatal("Write and finish on a read-only file both succeeded")
	}
	select {
	case <-d.done:
	default:
		t.Error("the goroutine runs on after finish")
	}
	d.release() // a second stop does nothing
}

// TestDirectAbortStops: aborting a Writer mid-blob stops its goroutine
// and removes its file.
func TestDirectAbortStops(t *testing.T) {
	s := open(t, Options{})
	w, err := s.CreateCold(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if w.direct == nil {
		t.Skip("the temp dir's file system refuses O_DIRECT")
	}
	if _, err := w.Write(content(directBuffer+directAlign+7, 2)); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-w.direct.done:
	default:
		t.Error("the goroutine runs on after Abort")
	}
	if _, err := os.Stat(w.f.Name()); !os.IsNotExist(err) {
		t.Errorf("the aborted blob's file: %v, want it removed", err)
	}
}

// TestDirectWriteFallsBack: a write O_DIRECT refuses (memory off the
// alignment: EINVAL where the file system asks for it) is written through
// the page cache instead, and so is the rest of the file.
func TestDirectWriteFallsBack(t *testing.T) {
	dir := t.TempDir()
	d := directWriterOn(t, filepath.Join(dir, "fallback"), os.Create)
	f := d.f
	defer d.release()
	data := content(2*directAlign+1, 3)
	if unalignedDirectWrites(t, dir, data[1:1+directAlign]) {
		t.Skip("the temp dir's file system takes O_DIRECT writes off the alignment: there is no EINVAL to fall back from")
	}
	if err := d.write(data[1 : 1+directAlign]); err != nil { // off the alignment
		t.Fatalf("write off the alignment = %v, want it written through the page cache", err)
	}
	if err := d.write(data[1+directAlign:]); err != nil {
		t.Fatalf("the write after = %v", err)
	}
	got, err := os.ReadFile(f.Name())
	if err != nil || !bytes.Equal(got, data[1:]) {
		t.Fatalf("file holds %d bytes (%v), equal %v; want the %d written", len(got), err, bytes.Equal(got, data[1:]), len(data)-1)
	}
}
