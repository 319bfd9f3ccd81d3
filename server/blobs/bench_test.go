package blobs

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkWriteRead writes a 256 MiB blob into the store in 1 MiB
// chunks and streams it back, beside a baseline of os.WriteFile and
// os.ReadFile of the same bytes in the same directory. It reports each
// side's throughput (write and read, MB/s of the blob's size) and the
// store's over the baseline's (a ratio below 1: the store is slower). The
// store also hashes, fsyncs and renames, which os.WriteFile does not, so
// a second write baseline fsyncs the file (os-write-fsync). The store
// streams reads through a reused 1 MiB buffer; os.ReadFile allocates the
// whole blob. "cold" writes with CreateCold (O_DIRECT where the file
// system takes it; read back from disk), "create" with Create (through the
// page cache).
//
//	go test -run '^$' -bench WriteRead -benchtime 5x ./server/blobs
func BenchmarkWriteRead(b *testing.B) {
	for _, bc := range []struct {
		name string
		cold bool
	}{{"cold", true}, {"create", false}} {
		b.Run(bc.name, func(b *testing.B) { benchWriteRead(b, bc.cold) })
	}
}

func benchWriteRead(b *testing.B, cold bool) {
	const size = 256 << 20
	data := content(size, 11)
	dir := b.TempDir()
	s, err := Open(filepath.Join(dir, "store"), Options{MinFree: -1})
	if err != nil {
		b.Fatal(err)
	}
	plain := filepath.Join(dir, "plain")
	buf := make([]byte, 1<<20)
	var storeW, storeR, osW, osR, osWS time.Duration
	b.SetBytes(size)
	for b.Loop() {
		t0 := time.Now()
		w, err := s.create(b.Context(), cold)
		if err != nil {
			b.Fatal(err)
		}
		for c := range chunks(data, 1<<20) {
			if _, err := w.Write(c); err != nil {
				b.Fatal(err)
			}
		}
		d, err := w.Commit("")
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		f, err := s.Open(d)
		if err != nil {
			b.Fatal(err)
		}
		var n int64
		for {
			k, err := f.Read(buf)
			n += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		f.Close()
		if n != size {
			b.Fatalf("read %d bytes back, want %d", n, size)
		}
		t2 := time.Now()
		if err := os.WriteFile(plain, data, 0o600); err != nil {
			b.Fatal(err)
		}
		t3 := time.Now()
		got, err := os.ReadFile(plain)
		if err != nil || len(got) != size {
			b.Fatalf("os.ReadFile = %d bytes, %v", len(got), err)
		}
		t4 := time.Now()
		if err := writeSync(plain, data); err != nil {
			b.Fatal(err)
		}
		t5 := time.Now()
		storeW += t1.Sub(t0)
		storeR += t2.Sub(t1)
		osW += t3.Sub(t2)
		osR += t4.Sub(t3)
		osWS += t5.Sub(t4)
		b.StopTimer()
		if err := s.Delete(d); err != nil { // the next write stores anew
			b.Fatal(err)
		}
		os.Remove(plain)
		b.StartTimer()
	}
	mbps := func(d time.Duration) float64 { return float64(b.N) * size / 1e6 / d.Seconds() }
	b.ReportMetric(mbps(storeW), "store-write-MB/s")
	b.ReportMetric(mbps(storeR), "store-read-MB/s")
	b.ReportMetric(mbps(osW), "os-write-MB/s")
	b.ReportMetric(mbps(osR), "os-read-MB/s")
	b.ReportMetric(mbps(osWS), "os-write-fsync-MB/s")
	b.ReportMetric(osW.Seconds()/storeW.Seconds(), "write-ratio")
	b.ReportMetric(osWS.Seconds()/storeW.Seconds(), "write-fsync-ratio")
	b.ReportMetric(osR.Seconds()/storeR.Seconds(), "read-ratio")
}

// writeSync writes data to name and fsyncs it.
func writeSync(name string, data []byte) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
