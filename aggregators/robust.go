package aggregators

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"github.com/cohortfl/cohort/model"
)

// DefaultMaxBytes is the memory budget of a robust round's held updates
// when the strategy's MaxBytes is 0: 4 GiB.
const DefaultMaxBytes = 4 << 30

// Defaults of the robust strategies' parameters, applied by [New] when a
// parameter is absent.
const (
	// DefaultBeta is trimmed_mean's β: 10% trimmed at each end.
	DefaultBeta = 0.1
	// DefaultF is krum's and multi_krum's f: one Byzantine site.
	DefaultF = 1
)

// Median is the coordinate-wise median (Yin et al., 2018): each parameter
// of the next global model is the median of that parameter over the
// round's updates (the mean of the two middle values for an even count),
// applied with a server learning rate η as in [FedAvg]. Fewer than half the
// updates, however extreme, cannot move it past the honest ones.
//
// Robust rules are unweighted: a site's sample count is not trusted (one
// site could claim 2^40 samples), so it is only summed into the "samples"
// metric. They need all of a round's updates at once, so a round holds a
// copy of each, up to a memory budget; spilling them to disk is left for
// the large-model work. The zero value is the plain median.
type Median struct {
	// ServerLR is η; 0 means 1.
	ServerLR float64
	// MaxBytes bounds the bytes of updates a round holds; 0 means
	// [DefaultMaxBytes]. An Add past it is refused.
	MaxBytes int64
}

// TrimmedMean is the coordinate-wise β-trimmed mean (Yin et al., 2018):
// for each parameter, the ⌊β·n⌋ largest and ⌊β·n⌋ smallest of the n
// updates' values are dropped and the rest averaged. Unweighted, held in
// memory and applied with η like [Median]. The zero value trims nothing
// (β = 0, the plain unweighted mean); [New] defaults β to [DefaultBeta].
type TrimmedMean struct {
	// Beta is the fraction trimmed at each end, 0 ≤ β < 0.5.
	Beta float64
	// ServerLR is η; 0 means 1.
	ServerLR float64
	// MaxBytes bounds the bytes of updates a round holds; 0 means
	// [DefaultMaxBytes].
	MaxBytes int64
}

// Krum is Krum (Blanchard et al., 2017): each update is scored by the sum
// of its squared Euclidean distances to its n − f − 2 closest other
// updates, and the update with the lowest score becomes the aggregate. It
// tolerates f Byzantine sites among n ≥ 2f + 3. Unweighted, held in memory
// and applied with η like [Median]. The zero value assumes f = 0; [New]
// defaults f to [DefaultF].
type Krum struct {
	// F is the number of Byzantine sites assumed, f ≥ 0.
	F int
	// ServerLR is η; 0 means 1.
	ServerLR float64
	// MaxBytes bounds the bytes of updates a round holds; 0 means
	// [DefaultMaxBytes].
	MaxBytes int64
}

// MultiKrum is Multi-Krum (Blanchard et al., 2017): the M updates with the
// lowest Krum scores are averaged, unweighted. M = 0 means n − f; M = 1 is
// [Krum].
type MultiKrum struct {
	// F is the number of Byzantine sites assumed, f ≥ 0.
	F int
	// M is how many of the best-scored updates are averaged; 0 means n − f.
	M int
	// ServerLR is η; 0 means 1.
	ServerLR float64
	// MaxBytes bounds the bytes of updates a round holds; 0 means
	// [DefaultMaxBytes].
	MaxBytes int64
}

var (
	_ Strategy = (*Median)(nil)
	_ Strategy = (*TrimmedMean)(nil)
	_ Strategy = (*Krum)(nil)
	_ Strategy = (*MultiKrum)(nil)
)

// Name returns "median".
func (s *Median) Name() string { return "median" }

// Name returns "trimmed_mean".
func (s *TrimmedMean) Name() string { return "trimmed_mean" }

// Name returns "krum".
func (s *Krum) Name() string { return "krum" }

// Name returns "multi_krum".
func (s *MultiKrum) Name() string { return "multi_krum" }

// Begin validates global (consistent and finite, else [ErrBadGlobal]) and
// starts a round over it.
func (s *Median) Begin(global *model.Weights) (Round, error) {
	return beginHeld(s.Name(), s.ServerLR, s.MaxBytes, global, medianOf)
}

// Begin validates β and global and starts a round over it.
func (s *TrimmedMean) Begin(global *model.Weights) (Round, error) {
	if !(s.Beta >= 0 && s.Beta < 0.5) {
		return nil, fmt.Errorf("trimmed_mean: beta %v must be at least 0 and below 0.5", s.Beta)
	}
	beta := s.Beta
	return beginHeld(s.Name(), s.ServerLR, s.MaxBytes, global, func(col []float64) float64 { return trimmedMeanOf(col, beta) })
}

// Begin validates f and global and starts a round over it.
func (s *Krum) Begin(global *model.Weights) (Round, error) {
	return beginKrum(s.Name(), s.F, 1, s.ServerLR, s.MaxBytes, global)
}

// Begin validates f, m and global and starts a round over it.
func (s *MultiKrum) Begin(global *model.Weights) (Round, error) {
	if s.M < 0 {
		return nil, fmt.Errorf("multi_krum: m %d must not be negative (0 means n − f)", s.M)
	}
	return beginKrum(s.Name(), s.F, s.M, s.ServerLR, s.MaxBytes, global)
}

func beginKrum(name string, f, m int, lr float64, maxBytes int64, global *model.Weights) (Round, error) {
	if f < 0 {
		return nil, fmt.Errorf("%s: f %d must not be negative", name, f)
	}
	r, err := beginHeld(name, lr, maxBytes, global, nil)
	if err != nil {
		return nil, err
	}
	r.krumF, r.krumM = f, m
	return r, nil
}

// beginCheck validates a server learning rate and a global model, and
// returns the rate to apply.
func beginCheck(name string, serverLR float64, global *model.Weights) (float64, error) {
	lr := serverLR
	if lr == 0 {
		lr = 1
	}
	if !(lr > 0) || math.IsInf(lr, 0) {
		return 0, fmt.Errorf("%s: server learning rate %v must be positive", name, serverLR)
	}
	if err := global.Validate(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadGlobal, err)
	}
	if err := global.CheckFinite(); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadGlobal, err)
	}
	return lr, nil
}

func beginHeld(name string, serverLR float64, maxBytes int64, global *model.Weights, rule func([]float64) float64) (*heldRound, error) {
	lr, err := beginCheck(name, serverLR, global)
	if err != nil {
		return nil, err
	}
	if maxBytes < 0 {
		return nil, fmt.Errorf("%s: memory budget %d bytes must not be negative (0 means %d)", name, maxBytes, DefaultMaxBytes)
	}
	if maxBytes == 0 {
		maxBytes = DefaultMaxBytes
	}
	return &heldRound{name: name, global: global, lr: lr, budget: maxBytes, rule: rule}, nil
}

// heldRound is a robust rule's round: it holds a copy of every update and
// aggregates them at Result, coordinate-wise with rule or, when rule is
// nil, by (Multi-)Krum's selection.
type heldRound struct {
	name    string
	global  *model.Weights
	lr      float64
	budget  int64
	rule    func(col []float64) float64 // sorted column → value
	krumF   int
	krumM   int // 0: n − f
	held    []heldSrc
	bytes   int64 // of the updates held in memory
	samples float64
}

// heldSrc is an update a robust round keeps: a copy in memory, or what
// opens its file (HoldBlocks).
type heldSrc struct {
	w    *model.Weights
	open func() (BlockReader, error)
}

func (r *heldRound) Add(u *model.Weights, n int64) error {
	if n < 1 {
		return fmt.Errorf("%w: %d samples; an update needs at least one", ErrBadUpdate, n)
	}
	if err := r.global.Compatible(u); err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	if err := u.CheckFinite(); err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	if b := u.Bytes(); r.bytes+b > r.budget {
		return fmt.Errorf("%w: %s holds %d updates (%d bytes) and this one's %d bytes would pass its memory budget of %d bytes; raise MaxBytes or select fewer sites per round",
			ErrBadUpdate, r.name, len(r.held), r.bytes, b, r.budget)
	}
	r.held = append(r.held, heldSrc{w: u.Clone()})
	r.bytes += u.Bytes()
	r.samples += float64(n)
	return nil
}

func (r *heldRound) Result() (*model.Weights, map[string]float64, error) {
	n := len(r.held)
	if n == 0 {
		return nil, nil, ErrNoUpdates
	}
	metrics := map[string]float64{"updates": float64(n), "samples": r.samples}
	plan := newPlan(lensOf(r.global), runtime.GOMAXPROCS(0))
	agg, held := r.rule, r.held
	if agg == nil {
		chosen, err := r.krumSelect(plan)
		if err != nil {
			return nil, nil, err
		}
		metrics["selected"] = float64(len(chosen))
		if len(chosen) == 1 {
			metrics["selected_index"] = float64(chosen[0])
		}
		agg = meanOf
		held = make([]heldSrc, len(chosen))
		for i, k := range chosen {
			held[i] = r.held[k]
		}
	}
	next := r.global.ZerosLike()
	norm2 := make([]float64, len(plan))
	finite := make([]bool, len(plan))
	errs := make([]error, len(plan))
	var wg sync.WaitGroup
	for w := range plan {
		wg.Go(func() {
			v, err := openViews(held)
			if err != nil {
				errs[w] = err
				return
			}
			defer v.close()
			norm2[w], finite[w], errs[w] = combine(r.global, v, r.lr, plan[w], agg, next)
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("%s: reading a held update from its file: %w", r.name, err)
	}
	var s float64
	for w := range plan {
		if !finite[w] {
			return nil, nil, fmt.Errorf("%s: server learning rate %v pushes the next model past float32's range; lower it", r.name, r.lr)
		}
		s += norm2[w]
	}
	metrics["update_norm"] = math.Sqrt(s)
	return next, metrics, nil
}

// combine writes next = g + η·(agg(column) − g) over the ranges of share,
// where column is a parameter's values over the held updates v reads,
// sorted, and returns Σ(next − g)² and whether every value stayed finite.
func combine(global *model.Weights, v *views, lr float64, share []piece, agg func([]float64) float64, next *model.Weights) (float64, bool, error) {
	col := make([]float64, len(v.src))
	src := make([][]float32, len(v.src)) // this block of each update
	var s float64
	ok := true
	for p := range v.blocks(share) {
		if err := v.at(p, src); err != nil {
			return 0, false, err
		}
		g, out := global.Tensors[p.t].Data[p.lo:p.hi], next.Tensors[p.t].Data[p.lo:p.hi]
		for j := range out {
			for k, x := range src {
				col[k] = float64(x[j])
			}
			sortSmall(col)
			v := agg(col)
			if lr != 1 {
				v = float64(g[j]) + lr*(v-float64(g[j]))
			}
			f := float32(v)
			ok = ok && !math.IsInf(float64(f), 0)
			out[j] = f
			d := float64(f) - float64(g[j])
			s += d * d
		}
	}
	return s, ok, nil
}

// sortSmall sorts x ascending: insertion sort for a round's few updates.
func sortSmall(x []float64) {
	if len(x) > 32 {
		slices.Sort(x)
		return
	}
	for i := 1; i < len(x); i++ {
		v := x[i]
		j := i
		for ; j > 0 && x[j-1] > v; j-- {
			x[j] = x[j-1]
		}
		x[j] = v
	}
}

// medianOf returns the median of sorted x.
func medianOf(x []float64) float64 {
	n := len(x)
	if n%2 == 1 {
		return x[n/2]
	}
	return (x[n/2-1] + x[n/2]) / 2
}

// trimmedMeanOf returns the mean of sorted x without its ⌊β·n⌋ smallest
// and ⌊β·n⌋ largest values.
func trimmedMeanOf(x []float64, beta float64) float64 {
	// The slack keeps a product such as 0.29·100 = 28.999999999999996
	// from losing a whole value to rounding.
	k := int(math.Floor(beta*float64(len(x)) + 1e-9))
	return meanOf(x[k : len(x)-k])
}

func meanOf(x []float64) float64 {
	var s float64
	for _, v := range x {
		s += v
	}
	return s / float64(len(x))
}

// krumSelect returns the indices of the held updates (Multi-)Krum
// selects, best score first: the m lowest scores, where an update's score
// is the sum of its squared distances to its n − f − 2 closest others.
func (r *heldRound) krumSelect(plan [][]piece) ([]int, error) {
	n, f := len(r.held), r.krumF
	if n < 2*f+3 {
		return nil, fmt.Errorf("%s: f = %d Byzantine sites needs at least 2f + 3 = %d updates, the round has n = %d; lower f or wait for more sites", r.name, f, 2*f+3, n)
	}
	m := r.krumM
	if m == 0 {
		m = n - f
	}
	if m > n {
		return nil, fmt.Errorf("%s: m = %d updates to average, the round has only n = %d; lower m (0 means n − f)", r.name, m, n)
	}
	// Pairwise squared distances, each worker summing its share.
	parts := make([][]float64, len(plan))
	errs := make([]error, len(plan))
	var wg sync.WaitGroup
	for w := range plan {
		wg.Go(func() {
			vw, err := openViews(r.held)
			if err != nil {
				errs[w] = err
				return
			}
			defer vw.close()
			src := make([][]float32, n)
			d := make([]float64, n*n)
			for p := range vw.blocks(plan[w]) {
				if err := vw.at(p, src); err != nil {
					errs[w] = err
					return
				}
				for a := 0; a < n; a++ {
					x := src[a]
					for b := a + 1; b < n; b++ {
						y := src[b]
						var s float64
						for j, v := range x {
							e := float64(v) - float64(y[j])
							s += e * e
						}
						d[a*n+b] += s
					}
				}
			}
			parts[w] = d
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("%s: reading a held update from its file: %w", r.name, err)
	}
	dist := make([]float64, n*n)
	for _, d := range parts {
		for a := 0; a < n; a++ {
			for b := a + 1; b < n; b++ {
				dist[a*n+b] += d[a*n+b]
				dist[b*n+a] = dist[a*n+b]
			}
		}
	}
	scores := make([]float64, n)
	others := make([]float64, 0, n-1)
	for a := range n {
		others = others[:0]
		for b := range n {
			if b != a {
				others = append(others, dist[a*n+b])
			}
		}
		slices.Sort(others)
		for _, v := range others[:n-f-2] {
			scores[a] += v
		}
	}
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch {
		case scores[a] < scores[b]:
			return -1
		case scores[a] > scores[b]:
			return 1
		}
		return 0
	})
	return idx[:m], nil
}
