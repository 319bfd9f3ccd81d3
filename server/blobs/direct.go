package blobs

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// A blob from [Store.CreateCold] goes to disk with O_DIRECT where the
// file system allows it (Linux: ext4, XFS, and tmpfs since 6.6; where
// fcntl refuses it, or the first write does, through the page cache): a
// follower's copy of a model of GiBs gains nothing from the page cache on
// its way to disk, and copying it there costs more CPU than the disk's
// own transfer, most of all on a VM whose host backs each new page cache
// page anew (the 2-core VM: 0.4–3.8 s of system time a GiB through the
// page cache, by chance, 0.2–0.5 s direct; dd and a Go program).
// BenchmarkWriteRead there, three runs: 947–1,141 MB/s against 546–755
// MB/s through the page cache; but read back from disk at 1.0–2.1 GB/s
// against 10.8–11.9 GB/s from the page cache, so a blob this node reads
// soon is written with [Store.Create]. Reads stay buffered.
const (
	// directAlign is the alignment O_DIRECT asks of a write's memory,
	// length and file offset: the file system's block, 4 KiB at most on
	// the systems Cohort runs on.
	directAlign = 4 << 10
	// directBuffer is the size of each of a directWriter's two buffers.
	directBuffer = 4 << 20
)

// directBufs holds directBuffer-sized buffers aligned to directAlign.
var directBufs = sync.Pool{New: func() any {
	b := make([]byte, directBuffer+directAlign)
	off := (directAlign - int(uintptr(unsafe.Pointer(&b[0]))%directAlign)) % directAlign
	b = b[off : off+directBuffer : off+directBuffer]
	return &b
}}

// directWriter writes a file opened with O_DIRECT in whole aligned
// buffers: Write fills one while a goroutine writes the other, so the
// caller's copying and hashing overlap the disk's transfer. finish writes
// what is left, its unaligned tail with O_DIRECT cleared; release drops
// it. Write may not be called after either; release may follow finish.
type directWriter struct {
	f     *os.File
	cur   []byte            // the buffer being filled
	queue chan []byte       // full buffers, in file order, to the goroutine
	free  chan directResult // buffers back from the goroutine
	done  chan struct{}     // closed when the goroutine returns
	once  sync.Once         // stop
}

// directResult is a buffer back from the goroutine, and the error of its
// write.
type directResult struct {
	b   []byte
	err error
}

// directOn sets O_DIRECT on a file: setDirect, or a refusal in tests.
var directOn = func(f *os.File) bool { return setDirect(f, true) }

// newDirectWriter returns a directWriter for f, nil where f's file system
// refuses O_DIRECT (the Writer then writes through the page cache).
func newDirectWriter(f *os.File) *directWriter {
	if !directOn(f) {
		return nil
	}
	d := &directWriter{f: f, queue: make(chan []byte, 1), free: make(chan directResult, 2), done: make(chan struct{})}
	d.cur = (*directBufs.Get().(*[]byte))[:0]
	d.free <- directResult{b: (*directBufs.Get().(*[]byte))[:0]}
	go d.run()
	return d
}

func (d *directWriter) run() {
	defer close(d.done)
	var err error
	for b := range d.queue {
		if err == nil {
			err = d.write(b)
		}
		d.free <- directResult{b: b[:0], err: err}
	}
}

// write writes b, falling back to the page cache for the rest of the
// file where O_DIRECT, though set, is refused (EINVAL: a file system that
// asks for a larger alignment, or ignores the flag at fcntl).
func (d *directWriter) write(b []byte) error {
	_, err := d.f.Write(b)
	if errors.Is(err, syscall.EINVAL) && setDirect(d.f, false) {
		_, err = d.f.Write(b)
	}
	return err
}

// Write copies p into the buffers, handing each full one to the
// goroutine. An error is that of an earlier buffer's write.
func (d *directWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := copy(d.cur[len(d.cur):cap(d.cur)], p)
		d.cur, p, n = d.cur[:len(d.cur)+k], p[k:], n+k
		if len(d.cur) == cap(d.cur) {
			d.queue <- d.cur
			r := <-d.free
			d.cur = r.b
			if r.err != nil {
				return n, r.err
			}
		}
	}
	return n, nil
}

// finish waits for the queued writes and writes the rest: its aligned
// part with O_DIRECT, its tail without.
func (d *directWriter) finish() error {
	if err := d.stop(); err != nil {
		return err
	}
	defer d.release()
	aligned := len(d.cur) / directAlign * directAlign
	if aligned > 0 {
		if err := d.write(d.cur[:aligned]); err != nil {
			return err
		}
	}
	if tail := d.cur[aligned:]; len(tail) > 0 {
		if !setDirect(d.f, false) {
			return fmt.Errorf("clearing O_DIRECT on %s for the last %d bytes", d.f.Name(), len(tail))
		}
		if _, err := d.f.Write(tail); err != nil {
			return err
		}
	}
	return nil
}

// stop ends the goroutine, once, and returns the first error of its
// writes; its buffers go back to the pool.
func (d *directWriter) stop() error {
	var err error
	d.once.Do(func() {
		close(d.queue)
		<-d.done
		for len(d.free) > 0 {
			r := <-d.free
			if err == nil {
				err = r.err
			}
			directBufs.Put(&r.b)
		}
	})
	return err
}

// release stops the goroutine and returns the buffer being filled to the
// pool.
func (d *directWriter) release() {
	_ = d.stop()
	if b := d.cur; b != nil {
		d.cur = nil
		directBufs.Put(&b)
	}
}
