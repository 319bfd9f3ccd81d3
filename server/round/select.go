package round

import (
	"fmt"
	"math"
	"math/bits"
	"slices"
)

// Select returns the sites a round selects among candidates: the larger of
// ceil(fraction × len(candidates)) and minPerRound, in name order. The choice is a
// seeded shuffle of the sorted candidates, so it depends only on the set of
// candidates, seed and round — not on the candidates' order — and is the same
// on every platform and Go version (the generator is this package's own).
// Select does not modify candidates.
//
// Candidates must be non-empty, distinct names; fraction must be in (0, 1];
// minPerRound must be at least 1. Select returns an error wrapping
// [ErrNotEnoughSites] when minPerRound exceeds the number of candidates, and one
// wrapping [ErrInvalidConfig] for any other problem.
func Select(candidates []string, fraction float64, minPerRound int, seed int64, round int) ([]string, error) {
	if problems := checkSelection(candidates, fraction, minPerRound); len(problems) > 0 {
		return nil, fmt.Errorf("selecting sites for round %d: %w", round, joinProblems(problems))
	}
	n := len(candidates)
	return shuffleTake(candidates, selectCount(n, fraction, minPerRound), seed, round), nil
}

// checkSelection returns every problem with the selection parameters, each
// naming the job key to fix.
func checkSelection(candidates []string, fraction float64, minPerRound int) []error {
	var problems []error
	seen := make(map[string]bool, len(candidates))
	for i, c := range candidates {
		switch {
		case c == "":
			problems = append(problems, fmt.Errorf("candidate %d has an empty site name; every connected site must have a name: %w", i, ErrInvalidConfig))
		case seen[c]:
			problems = append(problems, fmt.Errorf("candidate %q is listed twice; list each connected site once: %w", c, ErrInvalidConfig))
		}
		seen[c] = true
	}
	if math.IsNaN(fraction) || fraction <= 0 || fraction > 1 {
		problems = append(problems, fmt.Errorf("fraction is %v; it must be in (0, 1], the share of connected sites selected each round (job key sites.fraction): %w", fraction, ErrInvalidConfig))
	}
	switch {
	case minPerRound < 1:
		problems = append(problems, fmt.Errorf("min per round is %d; it must be at least 1, the number of updates a round needs to commit (job key sites.min_per_round): %w", minPerRound, ErrInvalidConfig))
	case minPerRound > len(seen):
		problems = append(problems, fmt.Errorf("min per round is %d but only %d distinct sites are connected; wait for more sites to join or lower sites.min_per_round: %w", minPerRound, len(seen), ErrNotEnoughSites))
	}
	return problems
}

// selectCount returns max(ceil(fraction×n), minPerRound), capped at n. The
// product is rounded down by a hair first so that 0.3×10, which is
// 3.0000000000000004 in floating point, selects 3 sites and not 4.
func selectCount(n int, fraction float64, minPerRound int) int {
	return min(n, max(ceilCount(fraction*float64(n), n), minPerRound))
}

// ceilCount returns ceil(x) for a non-negative count x known up to floating
// point error, clamped to [0, n].
func ceilCount(x float64, n int) int {
	x = math.Ceil(x - 1e-9)
	switch {
	case math.IsNaN(x) || x <= 0:
		return 0
	case x >= float64(n):
		return n
	}
	return int(x)
}

// shuffleTake sorts candidates, shuffles them with a generator seeded by seed
// and round, and returns the first k in name order.
func shuffleTake(candidates []string, k int, seed int64, round int) []string {
	order := slices.Sorted(slices.Values(candidates))
	g := newSplitMix(seed, round)
	for i := len(order) - 1; i > 0; i-- {
		j := g.below(uint64(i + 1))
		order[i], order[j] = order[j], order[i]
	}
	chosen := order[:k:k]
	slices.Sort(chosen)
	return chosen
}

// splitMix is SplitMix64 (Steele, Lea, Flood 2014): tiny, fast and fully
// specified, so a selection is reproducible forever, unlike math/rand's
// algorithms, which the standard library may change.
type splitMix struct{ state uint64 }

// newSplitMix returns a generator whose stream depends on both seed and
// round, so that consecutive rounds of one job select independently.
func newSplitMix(seed int64, round int) *splitMix {
	return &splitMix{state: mix64(uint64(seed)) ^ mix64(uint64(int64(round))+0x632be59bd9b4e019)}
}

func (g *splitMix) next() uint64 {
	g.state += 0x9e3779b97f4a7c15
	return mix64(g.state)
}

// below returns a uniform integer in [0, n), n > 0, with Lemire's
// multiply-and-reject method (no modulo bias).
func (g *splitMix) below(n uint64) uint64 {
	hi, lo := bits.Mul64(g.next(), n)
	if lo < n {
		threshold := -n % n
		for lo < threshold {
			hi, lo = bits.Mul64(g.next(), n)
		}
	}
	return hi
}

func mix64(z uint64) uint64 {
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}
