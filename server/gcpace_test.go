package server

import (
	"runtime/debug"
	"testing"
)

func TestGCPercentFor(t *testing.T) {
	for _, tt := range []struct {
		size int64
		want int
	}{
		{31 << 10, 0},
		{64<<20 - 1, 0},
		{64 << 20, 100},
		{100 << 20, 64},
		{256 << 20, 25},
		{10 << 30, 25},
	} {
		if got := gcPercentFor(tt.size); got != tt.want {
			t.Errorf("gcPercentFor(%d) = %d, want %d", tt.size, got, tt.want)
		}
	}
}

// TestPaceGC checks that rounds of large models lower the GC percent while
// any of them runs and restore it after the last, and leave a lower one
// alone.
func TestPaceGC(t *testing.T) {
	orig := debug.SetGCPercent(100)
	defer debug.SetGCPercent(orig)
	percent := func() int { p := debug.SetGCPercent(-1); debug.SetGCPercent(p); return p }
	r1 := paceGC(1 << 30)
	r2 := paceGC(1 << 30)
	if p := percent(); p != 25 {
		t.Fatalf("GC percent during two rounds of 1 GiB = %d, want 25", p)
	}
	r1()
	r1() // once only
	if p := percent(); p != 25 {
		t.Fatalf("GC percent after one of two rounds = %d, want 25", p)
	}
	r2()
	if p := percent(); p != 100 {
		t.Fatalf("GC percent after both rounds = %d, want 100 again", p)
	}
	debug.SetGCPercent(10)
	paceGC(1 << 30)()
	if p := percent(); p != 10 {
		t.Fatalf("GC percent set lower by the user = %d after a round, want 10", p)
	}
	paceGC(1 << 10)()
	if p := percent(); p != 10 {
		t.Fatalf("a small model's round changed the GC percent to %d", p)
	}
}
