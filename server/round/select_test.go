package round

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// names returns n site names s00, s01, ….
func names(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("s%02d", i)
	}
	return out
}

func TestSelectCount(t *testing.T) {
	tests := []struct {
		n        int
		fraction float64
		min      int
		want     int
	}{
		{n: 3, fraction: 1, min: 1, want: 3},
		{n: 10, fraction: 0.3, min: 1, want: 3},    // 0.3×10 = 3.0000000000000004
		{n: 10, fraction: 0.7, min: 1, want: 7},    // 0.7×10 = 7.000000000000001
		{n: 100, fraction: 0.29, min: 1, want: 29}, // 28.999999999999996
		{n: 10, fraction: 0.31, min: 1, want: 4},
		{n: 7, fraction: 0.5, min: 1, want: 4},
		{n: 10, fraction: 0.1, min: 4, want: 4},
		{n: 5, fraction: 1e-12, min: 2, want: 2},
		{n: 1000, fraction: 0.001, min: 1, want: 1},
		{n: 1, fraction: 0.5, min: 1, want: 1},
		{n: 4, fraction: 1, min: 4, want: 4},
	}
	for _, tt := range tests {
		got, err := Select(names(tt.n), tt.fraction, tt.min, 1, 1)
		if err != nil {
			t.Errorf("Select(%d names, %v, %d, 1, 1) error: %v", tt.n, tt.fraction, tt.min, err)
			continue
		}
		if len(got) != tt.want {
			t.Errorf("len(Select(%d names, %v, %d, 1, 1)) = %d, want %d", tt.n, tt.fraction, tt.min, len(got), tt.want)
		}
	}
}

func TestSelectDeterministic(t *testing.T) {
	cands := names(50)
	reversed := slices.Clone(cands)
	slices.Reverse(reversed)
	keep := slices.Clone(reversed)

	a, err := Select(cands, 0.2, 1, 42, 3)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Select(reversed, 0.2, 1, 42, 3)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b); diff != "" {
		t.Errorf("Select depends on the candidates' order (-sorted +reversed):\n%s", diff)
	}
	if diff := cmp.Diff(keep, reversed); diff != "" {
		t.Errorf("Select modified its candidates (-before +after):\n%s", diff)
	}
	if !slices.IsSorted(a) {
		t.Errorf("Select(...) = %v, want names in order", a)
	}
	if len(slices.Compact(slices.Clone(a))) != len(a) {
		t.Errorf("Select(...) = %v, want distinct names", a)
	}
	for _, s := range a {
		if !slices.Contains(cands, s) {
			t.Errorf("Select(...) returned %q, not a candidate", s)
		}
	}
	other, err := Select(cands, 0.2, 1, 42, 4)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(a, other) {
		t.Errorf("Select(round 3) = Select(round 4) = %v, want rounds to select independently", a)
	}
	otherSeed, err := Select(cands, 0.2, 1, 43, 3)
	if err != nil {
		t.Fatal(err)
	}
	if slices.Equal(a, otherSeed) {
		t.Errorf("Select(seed 42) = Select(seed 43) = %v, want seeds to select independently", a)
	}
}

// TestSelectGolden pins selections: a change here changes which sites every
// existing job selects, and must be a deliberate decision.
func TestSelectGolden(t *testing.T) {
	tests := []struct {
		seed  int64
		round int
		want  []string
	}{
		{seed: 42, round: 1, want: []string{"s02", "s04", "s06", "s08", "s12"}},
		{seed: 42, round: 2, want: []string{"s00", "s01", "s07", "s12", "s17"}},
		{seed: -7, round: 1, want: []string{"s00", "s01", "s02", "s04", "s06"}},
		{seed: 0, round: 0, want: []string{"s03", "s05", "s06", "s14", "s17"}},
	}
	for _, tt := range tests {
		got, err := Select(names(20), 0.25, 2, tt.seed, tt.round)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("Select(20 names, 0.25, 2, %d, %d) mismatch (-want +got):\n%s", tt.seed, tt.round, diff)
		}
	}
}

// TestSelectUniform checks that every site is selected about as often, over
// many seeds: a biased shuffle would favour some sites' data.
func TestSelectUniform(t *testing.T) {
	const n, draws = 10, 20000
	counts := map[string]int{}
	for seed := range int64(draws) {
		got, err := Select(names(n), 0.3, 1, seed, 1)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range got {
			counts[s]++
		}
	}
	// Each site is selected with probability 0.3: mean 6000, standard
	// deviation √(20000×0.3×0.7) ≈ 65. Six deviations never happen by chance.
	for _, s := range names(n) {
		if c := counts[s]; c < 6000-390 || c > 6000+390 {
			t.Errorf("site %s selected %d times in %d draws, want 6000 ± 390", s, c, draws)
		}
	}
}

func TestSplitMixReference(t *testing.T) {
	// Reference outputs of SplitMix64 (Vigna's splitmix64.c) for seed 1234567.
	want := []uint64{6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431, 16408922859458223821}
	g := splitMix{state: 1234567}
	var got []uint64
	for range want {
		got = append(got, g.next())
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("splitMix{1234567}.next() mismatch (-want +got):\n%s", diff)
	}
}

func TestSplitMixBelow(t *testing.T) {
	g := newSplitMix(1, 1)
	for _, n := range []uint64{1, 2, 3, 7, 1000, 1<<63 + 1} {
		for range 1000 {
			if v := g.below(n); v >= n {
				t.Fatalf("below(%d) = %d, want < %d", n, v, n)
			}
		}
	}
}

func TestSelectErrors(t *testing.T) {
	tests := []struct {
		name       string
		candidates []string
		fraction   float64
		min        int
		is         []error
		mention    []string
	}{
		{name: "too few", candidates: []string{"a", "b"}, fraction: 1, min: 3, is: []error{ErrNotEnoughSites}, mention: []string{"3", "2", "sites.min_per_round"}},
		{name: "none", candidates: nil, fraction: 1, min: 1, is: []error{ErrNotEnoughSites}, mention: []string{"only 0"}},
		{name: "duplicates count once", candidates: []string{"a", "a"}, fraction: 1, min: 2, is: []error{ErrNotEnoughSites, ErrInvalidConfig}, mention: []string{`"a" is listed twice`}},
		{name: "empty name", candidates: []string{"a", ""}, fraction: 1, min: 1, is: []error{ErrInvalidConfig}, mention: []string{"candidate 1 has an empty site name"}},
		{name: "zero fraction", candidates: []string{"a"}, fraction: 0, min: 1, is: []error{ErrInvalidConfig}, mention: []string{"sites.fraction"}},
		{name: "fraction above 1", candidates: []string{"a"}, fraction: 1.01, min: 1, is: []error{ErrInvalidConfig}, mention: []string{"1.01"}},
		{name: "zero min", candidates: []string{"a"}, fraction: 1, min: 0, is: []error{ErrInvalidConfig}, mention: []string{"at least 1"}},
	}
	for _, tt := range tests {
		got, err := Select(tt.candidates, tt.fraction, tt.min, 1, 1)
		if err == nil {
			t.Errorf("%s: Select(%q, %v, %d) = %v, want an error", tt.name, tt.candidates, tt.fraction, tt.min, got)
			continue
		}
		for _, target := range tt.is {
			if !errors.Is(err, target) {
				t.Errorf("%s: Select(%q, %v, %d) error = %v, want one wrapping %v", tt.name, tt.candidates, tt.fraction, tt.min, err, target)
			}
		}
		for _, m := range tt.mention {
			if !strings.Contains(err.Error(), m) {
				t.Errorf("%s: Select(%q, %v, %d) error = %q, want it to mention %q", tt.name, tt.candidates, tt.fraction, tt.min, err, m)
			}
		}
	}
}
