package server

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestVirtualSampleClients(t *testing.T) {
	tests := []struct {
		n int64
		k int
	}{
		{20_000_000, 1000},
		{1_000_000_000, 5},
		{10, 10},
		{10, 0},
		{1, 1},
	}
	for _, tt := range tests {
		got := sampleClients(42, "fedavg", 3, tt.n, tt.k)
		if len(got) != tt.k {
			t.Fatalf("sampleClients(n=%d, k=%d) has %d ids, want %d", tt.n, tt.k, len(got), tt.k)
		}
		if !slices.IsSorted(got) || len(slices.Compact(slices.Clone(got))) != tt.k {
			t.Errorf("sampleClients(n=%d, k=%d) = %v…, want ascending distinct ids", tt.n, tt.k, got[:min(5, len(got))])
		}
		if tt.k > 0 && (got[0] < 0 || got[tt.k-1] >= tt.n) {
			t.Errorf("sampleClients(n=%d, k=%d) spans [%d, %d], want within [0, %d)", tt.n, tt.k, got[0], got[tt.k-1], tt.n)
		}
		if again := sampleClients(42, "fedavg", 3, tt.n, tt.k); !slices.Equal(got, again) {
			t.Errorf("sampleClients(n=%d, k=%d) differs between calls", tt.n, tt.k)
		}
	}
	a := sampleClients(42, "fedavg", 1, 20_000_000, 1000)
	for _, other := range [][]int64{
		sampleClients(42, "fedavg", 2, 20_000_000, 1000),
		sampleClients(42, "fedprox", 1, 20_000_000, 1000),
		sampleClients(43, "fedavg", 1, 20_000_000, 1000),
	} {
		if slices.Equal(a, other) {
			t.Errorf("another round, arm or seed drew the same clients")
		}
	}
}

// TestVirtualSampleUniform: over many rounds each id of a small population
// is drawn about k/n of the time.
func TestVirtualSampleUniform(t *testing.T) {
	const n, k, rounds = 100, 10, 5000
	counts := make([]int, n)
	for r := range rounds {
		for _, id := range sampleClients(7, "a", r, n, k) {
			counts[id]++
		}
	}
	want := float64(rounds) * k / n // 500, sd ≈ 21
	for id, c := range counts {
		if math.Abs(float64(c)-want) > 6*math.Sqrt(want) {
			t.Errorf("client %d drawn %d times in %d rounds, want %.0f ± %.0f", id, c, rounds, want, 6*math.Sqrt(want))
		}
	}
}

// TestVirtualSplitClients: the workers' shares are contiguous, near-equal
// and together the whole sample, in order, for any number of workers.
func TestVirtualSplitClients(t *testing.T) {
	ids := sampleClients(1, "fedavg", 1, 20_000_000, 1000)
	for _, w := range []int{1, 2, 3, 7, 1000} {
		workers := make([]string, w)
		for i := range workers {
			workers[i] = fmt.Sprintf("worker-%04d", i+1)
		}
		var joined []int64
		for _, name := range workers {
			share := splitClients(ids, workers, name)
			if d := len(share) - len(ids)/w; d < 0 || d > 1 {
				t.Errorf("%d workers: %s got %d ids, want %d or %d", w, name, len(share), len(ids)/w, len(ids)/w+1)
			}
			joined = append(joined, share...)
		}
		if diff := cmp.Diff(ids, joined); diff != "" {
			t.Errorf("%d workers: shares joined differ from the sample (-want +got):\n%s", w, diff)
		}
		if got := splitClients(ids, workers, "stranger"); got != nil {
			t.Errorf("%d workers: splitClients(stranger) = %v, want nil", w, got)
		}
	}
}

// BenchmarkVirtualSampleClients: drawing a round's 1,000 of 20M clients.
func BenchmarkVirtualSampleClients(b *testing.B) {
	r := 0
	for b.Loop() {
		r++
		sampleClients(1, "fedavg", r, 20_000_000, 1000)
	}
}
