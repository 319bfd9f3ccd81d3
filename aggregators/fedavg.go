package aggregators

import (
	crand "crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"iter"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"

	"github.com/cohortfl/cohort/model"
)

// FedAvg is federated averaging (McMahan et al., 2017): the next global
// model is the mean of the sites' weights, each weighted by its sample
// count, applied with a server learning rate η: w ← w + η·(avg − w). With
// η = 1 the next model is the weighted mean itself. The zero value is plain
// FedAvg.
//
// MaxFraction bounds one site's influence: no update's share of the
// round's total weight exceeds it (see [FedAvg.MaxFraction]). DP makes the
// strategy DP-FedAvg (see [DP]).
type FedAvg struct {
	// ServerLR is η; 0 means 1.
	ServerLR float64
	// MaxFraction f caps each update's normalised weight: in the result no
	// update's weight is more than f of the total weight applied. Updates
	// over the cap get the cap, c = f·T', where T' is the total with the
	// capped weights (water-filling), so they share the leftover weight
	// f·T' each; the others keep their sample-count weights. A round of
	// fewer than ⌈1/f⌉ updates cannot meet the cap: there every update gets
	// the weight 1/n and Result's "cap_unmet" metric is 1. 0, or 1 and
	// above, switches the cap off. A round holds a copy of each update the
	// cap may still bind on, at most ⌊1/f⌋ of them (two at f = 0.5); the
	// rest are folded into the running sum as usual. Ignored under DP,
	// whose weights are equal.
	MaxFraction float64
	// DP, when not nil, makes the strategy DP-FedAvg.
	DP *DP
}

// DP is DP-FedAvg's central differential privacy (McMahan et al.,
// "Learning Differentially Private Recurrent Language Models", 2018): each
// update's delta Δ_k = u_k − global is clipped to L2 norm at most Clip (it
// is scaled by min(1, S/‖Δ_k‖)), the n clipped deltas are averaged with
// equal weights — sample counts are ignored, as in DP-FedAvg with equal
// client weights, so one site's sensitivity is S/n — and Gaussian noise of
// standard deviation σ·S/n is added to each coordinate of the average,
// which is then applied with the server learning rate (or fed to a
// [FedOpt] optimizer as its pseudo-gradient).
//
// The noise is drawn from a PCG generator seeded with (seed, round) (see
// [Randomized]), in the order of the model's tensors and values, on one
// core, so a replay after a failover draws the same noise wherever it
// runs. Two Results of one round released with different updates would
// share that noise and reveal the exact difference of their means: publish
// only the Result that is committed. The average divides by the number n
// of updates that arrived; the accounting in package privacy takes n as
// fixed by the coordinator's selection. The coordinator is trusted: it
// sees every update in the clear. Floating-point attacks on the noise
// (Mironov, 2012) are not defended against.
type DP struct {
	// Clip is the L2 bound S on each update's delta, S > 0.
	Clip float64
	// Noise is the noise multiplier σ ≥ 0: the noise on the sum of the
	// clipped deltas has standard deviation σ·S.
	Noise float64
}

var (
	_ Strategy   = (*FedAvg)(nil)
	_ Randomized = (*FedAvg)(nil)
)

// Name returns "fedavg".
func (f *FedAvg) Name() string { return "fedavg" }

// Begin validates global (consistent and finite, else [ErrBadGlobal]) and
// starts a round over it. The round allocates its sum, one float32 per
// parameter, here. Under DP it draws a fresh secret seed for the noise;
// [FedAvg.BeginSeeded] gives a replayable round.
func (f *FedAvg) Begin(global *model.Weights) (Round, error) {
	return f.BeginSeeded(global, freshSeed(), 0)
}

// BeginSeeded is [FedAvg.Begin] for round number round (≥ 0), whose DP
// noise is drawn from (seed, round) alone. Without DP, seed and round are
// not used.
func (f *FedAvg) BeginSeeded(global *model.Weights, seed uint64, round int) (Round, error) {
	r, err := beginAvg(f.Name(), f.ServerLR, f.MaxFraction, f.DP, global, seed, round)
	if err != nil {
		return nil, err
	}
	return r, nil
}

// GlobalReader reads the values of a global model kept out of memory, a
// range at a time; [*model.TensorFile] is one.
type GlobalReader interface {
	// Shell returns the model's tensors' names and shapes (Data nil:
	// [model.Tensor.Len] counts their values).
	Shell() *model.Weights
	// ReadFloats fills dst with tensor t's values from index off on.
	ReadFloats(t, off int, dst []float32) error
}

// GlobalStreamer is implemented by strategies whose rounds can read the
// global model from a [GlobalReader] instead of memory, so that a
// coordinator holds the sum alone: the FedAvg family without DP. Such a
// round reads the global model at Result, a block per core at a time
// (and under DP or a server optimizer it would need it whole: those
// answer [ErrNoStream]). The reader must go on reading the same values
// until the round's Result (or Finish) returns.
type GlobalStreamer interface {
	BeginStreamed(g GlobalReader, seed uint64, round int) (Round, error)
}

var _ GlobalStreamer = (*FedAvg)(nil)

// BeginStreamed implements [GlobalStreamer]: [FedAvg.BeginSeeded] over
// the global model g reads. The values are not checked: a model read in
// place is one the coordinator wrote (and checked) itself.
func (f *FedAvg) BeginStreamed(g GlobalReader, seed uint64, round int) (Round, error) {
	if f.DP != nil {
		return nil, fmt.Errorf("%s: %w (DP needs the global model in memory)", f.Name(), ErrNoStream)
	}
	lr, frac, err := checkAvg(f.Name(), f.ServerLR, f.MaxFraction, nil, round)
	if err != nil {
		return nil, err
	}
	shell := g.Shell()
	r := newAvgRound(f.Name(), lr, frac, shell, lensOf(shell), seed, round)
	r.gr = g
	r.gbuf = make([][]float32, len(r.plan))
	for w := range r.gbuf {
		r.gbuf[w] = make([]float32, foldBlock)
	}
	r.gerr = make([]error, len(r.plan))
	return r, nil
}

// FedProx is FedProx (Li et al., 2020) on the server: aggregation is
// FedAvg's. Mu is sent to the sites (its [FedProx.ClientSettings]), whose
// local objective adds the proximal term μ/2·‖w − w_global‖².
type FedProx struct {
	FedAvg
	// Mu is the proximal coefficient μ ≥ 0.
	Mu float64
}

var (
	_ Strategy   = (*FedProx)(nil)
	_ ClientSide = (*FedProx)(nil)
)

// ClientSettings implements [ClientSide]: the sites train with Mu.
func (p *FedProx) ClientSettings() ClientSettings { return ClientSettings{Mu: p.Mu} }

// Name returns "fedprox".
func (f *FedProx) Name() string { return "fedprox" }

// freshSeed returns a random seed from the operating system's generator:
// the noise of a round begun without a seed is unpredictable.
func freshSeed() uint64 {
	var b [8]byte
	_, _ = crand.Read(b[:]) // crypto/rand.Read never fails
	return binary.LittleEndian.Uint64(b[:])
}

// beginAvg validates the settings of the FedAvg family and global, and
// starts a round.
func beginAvg(name string, serverLR, maxFraction float64, dp *DP, global *model.Weights, seed uint64, round int) (*avgRound, error) {
	lr, maxFraction, err := checkAvg(name, serverLR, maxFraction, dp, round)
	if err != nil {
		return nil, err
	}
	if err := global.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadGlobal, err)
	}
	if err := global.CheckFinite(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadGlobal, err)
	}
	r := newAvgRound(name, lr, maxFraction, global, lensOf(global), seed, round)
	if dp != nil {
		d := *dp
		r.dp = &d
	}
	return r, nil
}

// checkAvg validates the settings of the FedAvg family and returns the
// server learning rate and the weight cap to use (1 and 0 for none).
func checkAvg(name string, serverLR, maxFraction float64, dp *DP, round int) (lr, frac float64, err error) {
	lr = serverLR
	if lr == 0 {
		lr = 1
	}
	if !(lr > 0) || math.IsInf(lr, 0) {
		return 0, 0, fmt.Errorf("%s: server learning rate %v must be positive", name, serverLR)
	}
	if !(maxFraction >= 0) || math.IsInf(maxFraction, 0) {
		return 0, 0, fmt.Errorf("%s: max weight fraction %v must be from 0 to 1 (0 or 1: no cap)", name, maxFraction)
	}
	if maxFraction >= 1 {
		maxFraction = 0
	}
	if dp != nil {
		if !(dp.Clip > 0 && dp.Clip <= maxClip) {
			return 0, 0, fmt.Errorf("%s: DP clip %v must be positive and at most %g", name, dp.Clip, float64(maxClip))
		}
		if !(dp.Noise >= 0) || math.IsInf(dp.Noise, 0) {
			return 0, 0, fmt.Errorf("%s: DP noise multiplier %v must be finite and ≥ 0", name, dp.Noise)
		}
		maxFraction = 0 // equal weights
	}
	if round < 0 {
		return 0, 0, fmt.Errorf("%s: round %d must not be negative", name, round)
	}
	return lr, maxFraction, nil
}

// newAvgRound allocates a round over a global model of tensors of lens
// values (global's names and shapes; its values, or gr's).
func newAvgRound(name string, lr, frac float64, global *model.Weights, lens []int, seed uint64, round int) *avgRound {
	r := &avgRound{name: name, global: global, lens: lens, lr: lr, frac: frac, acc: make([][]float32, len(lens)), seed: seed, round: round}
	for i, n := range lens {
		r.acc[i] = make([]float32, n)
	}
	r.plan = newPlan(lens, runtime.GOMAXPROCS(0))
	r.norms = make([]float32, len(r.plan))
	r.okScan = make([]bool, len(r.plan))
	r.dnorm2 = make([]float64, len(r.plan))
	r.norm2 = make([]float64, len(r.plan))
	r.pg2 = make([]float64, len(r.plan))
	r.finite = make([]bool, len(r.plan))
	r.weights = make([]float64, 0, 64)
	return r
}

// lensOf returns the number of values of each of w's tensors (w may be
// a shell: [model.Tensor.Len]).
func lensOf(w *model.Weights) []int {
	lens := make([]int, len(w.Tensors))
	for i, t := range w.Tensors {
		lens[i] = t.Len()
	}
	return lens
}

// maxClip bounds DP's clip S: n clipped deltas of norm S must fit the
// float32 sum.
const maxClip = 1e30

// avgRound is the FedAvg family's running aggregate: acc = Σ a_k·w_k in
// float32, where a_k = float32(n_k/n_1) is site k's sample count relative
// to the first update's, and wsum = Σ a_k in float64. The mean is
// acc/wsum: the normalisation divides by exactly the weights that were
// applied, so one update (a_1 = 1) comes back bit for bit whatever its
// count, and the weights never meet float32's 2^24 limit on exact
// integers. Rounding a_k to float32 moves it by at most 2^-24 of itself.
//
// With a weight cap f, an update is folded into acc only once no cap can
// bind on it: when its weight is at most the water-filling cap level c of
// the updates added so far. c only grows as updates are added, so a folded
// update is never capped later. The others are held as copies (at most
// ⌊1/f⌋, since each capped one weighs f of the total) and combined with
// their capped weights at Result.
//
// Under DP, acc = Σ clip(u_k − global) instead, with equal weights.
type avgRound struct {
	name   string
	global *model.Weights // its names and shapes; its values unless gr reads them
	gr     GlobalReader   // nil: the global model is in memory
	lens   []int          // the values of each tensor
	gbuf   [][]float32    // gr: per worker, a block of the global model
	gerr   []error        // gr: per worker, a failed read
	lr     float64
	frac   float64 // the weight cap f; 0: none
	dp     *DP     // nil: no DP
	opt    *optimizer
	seed   uint64
	round  int
	acc    [][]float32
	ref    float64 // n_1, the first added update's sample count
	wsum   float64 // Σ a_k over the folded updates (under DP, their count)
	// finishing is set by Finish for its Result, finished after it.
	finishing, finished bool
	total               float64 // Σ n_k, exact below 2^53
	bound               float64 // Σ a_k·max|w_k|: a bound on every |acc| entry
	updates             int
	weights             []float64    // a_k of every added update, in the order of Add
	held                []heldUpdate // updates a cap may still bind on
	scratch             []float64
	clipped             int // DP: updates whose delta was scaled down

	nextState *model.Weights // the optimizer state after the latest Result

	// Work shared with the workers of one call, so that a call allocates
	// nothing beyond one goroutine per extra worker.
	plan    [][]piece      // per worker: the ranges of tensors it owns
	norms   []float32      // per worker: Add's scan, a bound on |u|
	okScan  []bool         // per worker: Add's scan found only finite values
	dnorm2  []float64      // per worker: Add's Σ(u − global)² under DP
	norm2   []float64      // per worker: Result's Σ(next − global)²
	pg2     []float64      // per worker: Result's Σ(mean − global)²
	finite  []bool         // per worker: Result's range check
	scanned sync.WaitGroup // Add: every worker has scanned
	done    sync.WaitGroup // every worker has finished
	u       *model.Weights // Add: the update
	wt      float32        // Add: its weight
	hold    bool           // Add: the update is held, not folded
	next    *model.Weights // Result: the output
	mix     applied        // Result: the weights of the held updates
}

// heldUpdate is a copy of an update the weight cap may bind on, or what
// opens its stream (AddStream), with its weight a_k.
type heldUpdate struct {
	w    *model.Weights
	open func() (io.ReadCloser, error)
	a    float64
}

// applied is how a Result combines the round: next = (acc + Σ hw[i]·held[i])
// · inv, or under DP global + acc·inv + noise.
type applied struct {
	hw      []float64 // the applied weight of each held update
	inv     float64   // 1 / the total weight applied
	c       float64   // the cap level; +Inf when none binds
	equal   bool      // the cap cannot be met: every update weighs 1/n
	maxFrac float64   // the largest normalised weight
	capped  int       // how many updates got less than their own weight
}

// maxSum bounds the sum's entries well inside float32's range.
const maxSum = math.MaxFloat32 / 4

var (
	_ Round          = (*avgRound)(nil)
	_ WeightReporter = (*avgRound)(nil)
	_ Finisher       = (*avgRound)(nil)
)

// Finish implements [Finisher]: Result, with the next model written over
// the running sum where the mean needs nothing else (no DP, no held
// updates, no server optimizer).
func (r *avgRound) Finish() (*model.Weights, map[string]float64, error) {
	if r.finished {
		return nil, nil, fmt.Errorf("%s: %w", r.name, ErrFinished)
	}
	r.finishing = true
	defer func() { r.finished = true }()
	return r.Result()
}

func (r *avgRound) Add(u *model.Weights, n int64) error { return r.add(u, n, false) }

// AddOwned implements [OwnedAdder]: Add, keeping u itself rather than a
// copy when the weight cap must hold it.
func (r *avgRound) AddOwned(u *model.Weights, n int64) error { return r.add(u, n, true) }

func (r *avgRound) add(u *model.Weights, n int64, owned bool) error {
	if r.finished {
		return fmt.Errorf("%s: %w", r.name, ErrFinished)
	}
	if n < 1 {
		return fmt.Errorf("%w: %d samples; an update needs at least one", ErrBadUpdate, n)
	}
	if err := r.compatible(u); err != nil {
		return fmt.Errorf("%w: %w", ErrBadUpdate, err)
	}
	// Every worker scans its share (finite, and a bound on the
	// magnitudes); once all have, each reaches the same verdict from the
	// shared results and, if the update is good and not held, folds its
	// share in.
	ref := r.ref
	if r.updates == 0 {
		ref = float64(n)
	}
	wt := float32(float64(n) / ref)
	if r.dp != nil {
		wt = 1
	}
	c, feasible, hold := math.Inf(1), true, false
	if r.frac > 0 {
		c, feasible = r.capLevel(float64(wt))
		hold = !feasible || over(float64(wt), c)
	}
	r.u, r.wt, r.hold = u, wt, hold
	defer func() { r.u = nil }()
	r.scanned.Add(len(r.plan))
	r.done.Add(len(r.plan))
	for w := 1; w < len(r.plan); w++ {
		go r.addShare(w)
	}
	r.addShare(0)
	r.done.Wait()
	norm, finite, ok := r.verdict()
	switch {
	case ok:
		r.bound += r.increment(norm)
		r.ref = ref
		r.total += float64(n)
		r.updates++
		r.weights = append(r.weights, float64(wt))
		r.nextState = nil // no longer the state of the latest Result
		switch {
		case r.dp != nil:
			r.wsum++
			if r.clipScale() < 1 {
				r.clipped++
			}
		case hold:
			if !owned {
				u = u.Clone()
			}
			r.held = append(r.held, heldUpdate{w: u, a: float64(wt)})
		default:
			r.wsum += float64(wt)
		}
		if feasible {
			return r.release(c)
		}
		return nil
	case !finite:
		if err := u.CheckFinite(); err != nil { // names the first one
			return fmt.Errorf("%w: %w", ErrBadUpdate, err)
		}
		return fmt.Errorf("%w: %w", ErrBadUpdate, model.ErrNotFinite)
	}
	return fmt.Errorf("%w: values of magnitude up to %g weighted by %d samples could overflow the float32 aggregate", ErrBadUpdate, norm, n)
}

// addShare is worker w's part of Add.
func (r *avgRound) addShare(w int) {
	defer r.done.Done()
	var m float32
	var d2 float64
	ok := true
	// The scan goes block by block: the largest of the blocks' norms
	// bounds every magnitude as the share's norm does, more tightly, and
	// no call into the SIMD kernel runs long enough to hold up the
	// garbage collector, which cannot preempt it.
	for _, p := range r.plan[w] {
		for lo := p.lo; lo < p.hi && ok; lo += foldBlock {
			hi := min(p.hi, lo+foldBlock)
			x := r.u.Tensors[p.t].Data[lo:hi]
			norm, finite := model.FiniteNorm(x)
			m, ok = max(m, norm), ok && finite
			if r.dp != nil && ok {
				d2 += diffNorm2(x, r.global.Tensors[p.t].Data[lo:hi])
			}
		}
	}
	r.norms[w], r.okScan[w], r.dnorm2[w] = m, ok, d2
	r.scanned.Done()
	r.scanned.Wait()
	if _, _, ok := r.verdict(); !ok || r.hold {
		return
	}
	if r.dp != nil {
		s := r.clipScale()
		for _, p := range r.plan[w] {
			foldDelta(s, r.u.Tensors[p.t].Data[p.lo:p.hi], r.global.Tensors[p.t].Data[p.lo:p.hi], r.acc[p.t][p.lo:p.hi])
		}
		return
	}
	// The fold goes block by block as the scan does. Each sum entry gets
	// one addition, so the sum does not depend on how the work is split.
	for _, p := range r.plan[w] {
		for lo := p.lo; lo < p.hi; lo += foldBlock {
			hi := min(p.hi, lo+foldBlock)
			model.AxpyFlat(r.wt, r.u.Tensors[p.t].Data[lo:hi], r.acc[p.t][lo:hi])
		}
	}
}

// foldBlock is the number of values Add scans, and folds, at a time (256
// KiB of the update, as much of the sum): large enough for the hardware
// prefetcher to stream each block forwards, small enough that one call
// into a SIMD kernel takes tens of microseconds.
const foldBlock = 1 << 16

// verdict returns a bound on the update's magnitudes, whether they are
// finite, and whether the update may be added: finite, and unable to
// overflow the sum.
func (r *avgRound) verdict() (norm float32, finite, ok bool) {
	finite = true
	for w := range r.plan {
		norm, finite = max(norm, r.norms[w]), finite && r.okScan[w]
	}
	return norm, finite, finite && r.bound+r.increment(norm) <= maxSum
}

// increment is what the update being added adds to the bound on |acc|:
// its weight times its magnitude, or under DP its clipped delta's norm.
func (r *avgRound) increment(norm float32) float64 {
	if r.dp != nil {
		return min(r.deltaNorm(), r.dp.Clip)
	}
	return float64(r.wt) * float64(norm)
}

// deltaNorm returns ‖u − global‖₂ of the update being added (DP only),
// summed over the workers in a fixed order so that every worker gets the
// same value.
func (r *avgRound) deltaNorm() float64 {
	var s float64
	for _, v := range r.dnorm2 {
		s += v
	}
	return math.Sqrt(s)
}

// clipScale returns min(1, S/‖u − global‖) for the update being added.
func (r *avgRound) clipScale() float64 {
	if d := r.deltaNorm(); d > r.dp.Clip {
		return r.dp.Clip / d
	}
	return 1
}

// diffNorm2 returns Σ(x − g)², in float64.
func diffNorm2(x, g []float32) float64 {
	g = g[:len(x)]
	var s float64
	for j, v := range x {
		d := float64(v) - float64(g[j])
		s += d * d
	}
	return s
}

// foldDelta sets acc += s·(x − g).
func foldDelta(s float64, x, g, acc []float32) {
	g, acc = g[:len(x)], acc[:len(x)]
	for j, v := range x {
		acc[j] += float32(s * (float64(v) - float64(g[j])))
	}
}

// capLevel returns the water-filling cap level c of the round's weights
// with extra added (0 for none): the c with c = f·(wsum + Σ min(a_h, c))
// over the held weights a_h, and whether one exists; it does not when
// fewer than ⌈1/f⌉ updates were added. The folded weights are all at most
// c: each was at most the cap level when folded, and the level only grows.
func (r *avgRound) capLevel(extra float64) (float64, bool) {
	n := r.updates
	hs := r.scratch[:0]
	for _, h := range r.held {
		hs = append(hs, h.a)
	}
	if extra > 0 {
		hs = append(hs, extra)
		n++
	}
	r.scratch = hs
	if float64(n)*r.frac < 1 {
		return 0, false
	}
	slices.SortFunc(hs, func(a, b float64) int { return cmpFloat(b, a) }) // largest first
	tail := r.wsum
	for _, h := range hs {
		tail += h
	}
	// With the j largest capped, c = f·(the rest's sum)/(1 − j·f); the
	// first j at which the next largest fits under c is the solution.
	prev := math.Inf(1)
	for j := 0; j <= len(hs); j++ {
		if j > 0 {
			tail -= hs[j-1]
		}
		den := 1 - float64(j)*r.frac
		if den <= 0 { // only by rounding: the previous level was met
			return prev, true
		}
		c := r.frac * tail / den
		if j == len(hs) || hs[j] <= c {
			return c, true
		}
		prev = c
	}
	return prev, true // not reached
}

// over reports whether weight a is above the cap level c by more than
// rounding: a weight equal to c in exact arithmetic (1/3 of three equal
// weights) is not capped, and is folded in.
func over(a, c float64) bool { return a > c*(1+1e-9) }

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// release folds every held update whose weight is at most the cap level c
// into the sum with its full weight, and drops its copy (or its stream).
// Should a held stream fail halfway, the round is lost.
func (r *avgRound) release(c float64) error {
	kept := r.held[:0]
	var buf []float32
	for _, h := range r.held {
		if over(h.a, c) {
			kept = append(kept, h)
			continue
		}
		if h.open != nil {
			if buf == nil {
				buf = make([]float32, r.chunk())
			}
			err := r.readStream(h.open, buf, func(t, lo int, x []float32) error {
				model.AxpyFlat(float32(h.a), x, r.acc[t][lo:lo+len(x)])
				return nil
			})
			if err != nil {
				r.finished = true
				return fmt.Errorf("%s: folding a held update from its stream failed halfway, and the round's sum with it; run the round again: %w", r.name, err)
			}
		} else {
			for i := range h.w.Tensors {
				model.AxpyFlat(float32(h.a), h.w.Tensors[i].Data, r.acc[i])
			}
		}
		r.wsum += h.a
	}
	clear(r.held[len(kept):])
	r.held = kept
	return nil
}

// compatible is [model.Weights.Compatible] of the global model with u,
// from its shell and lengths where its values are not in memory.
func (r *avgRound) compatible(u *model.Weights) error {
	if r.gr == nil {
		return r.global.Compatible(u)
	}
	if u == nil || len(u.Tensors) != len(r.lens) {
		return r.global.Compatible(u) // names the difference
	}
	for i, t := range u.Tensors {
		if len(t.Data) != r.lens[i] {
			return fmt.Errorf("%w: tensor %q has %d values, want %d", model.ErrIncompatible, t.Name, len(t.Data), r.lens[i])
		}
		if g := r.global.Tensors[i]; t.Name != g.Name || !slices.Equal(t.Shape, g.Shape) {
			return fmt.Errorf("%w: tensor %d is %q of shape %v, want %q of shape %v", model.ErrIncompatible, i, t.Name, t.Shape, g.Name, g.Shape)
		}
	}
	return nil
}

// zeros returns zero weights of the global model's names and shapes.
func (r *avgRound) zeros() *model.Weights {
	out := &model.Weights{Tensors: make([]model.Tensor, len(r.lens))}
	for i, t := range r.global.Tensors {
		out.Tensors[i] = model.Tensor{Name: t.Name, Shape: slices.Clone(t.Shape), Data: make([]float32, r.lens[i])}
	}
	return out
}

// chunk is the number of values a stream of an update is read in.
func (r *avgRound) chunk() int {
	n := 0
	for _, l := range r.lens {
		n = max(n, l)
	}
	return max(1, min(n, model.ScanChunk))
}

// blocks yields the ranges Result works on p in: p itself where the
// global model is in memory (so that the sums run as they always did),
// blocks of foldBlock values where it is read in place.
func (r *avgRound) blocks(p piece) iter.Seq[piece] {
	if r.gr == nil {
		return func(yield func(piece) bool) { yield(p) }
	}
	return p.cut(foldBlock)
}

// globalBlock returns the global model's values over p (one of blocks'):
// in place when in memory, else read into worker w's buffer (a failed
// read is recorded in gerr[w] and reads as zeros).
func (r *avgRound) globalBlock(w int, p piece) []float32 {
	if r.gr == nil {
		return r.global.Tensors[p.t].Data[p.lo:p.hi]
	}
	b := r.gbuf[w][:p.hi-p.lo]
	if err := r.gr.ReadFloats(p.t, p.lo, b); err != nil {
		clear(b)
		if r.gerr[w] == nil {
			r.gerr[w] = err
		}
	}
	return b
}

// loadHeld reads every held stream into memory, for Result to combine.
func (r *avgRound) loadHeld() error {
	for i, h := range r.held {
		if h.open == nil {
			continue
		}
		w := r.zeros()
		err := r.readStream(h.open, make([]float32, r.chunk()), func(t, lo int, x []float32) error {
			copy(w.Tensors[t].Data[lo:], x)
			return nil
		})
		if err != nil {
			return fmt.Errorf("%s: reading a held update from its stream: %w", r.name, err)
		}
		r.held[i] = heldUpdate{w: w, a: h.a}
	}
	return nil
}

// mixture returns how the round's updates combine now.
func (r *avgRound) mixture() applied {
	n := float64(r.updates)
	if r.dp != nil {
		return applied{inv: 1 / n, c: math.Inf(1), maxFrac: 1 / n}
	}
	m := applied{c: math.Inf(1)}
	if len(r.held) > 0 {
		c, ok := r.capLevel(0)
		m.c, m.equal = c, !ok
	}
	total := r.wsum
	m.hw = make([]float64, len(r.held))
	for i, h := range r.held {
		switch {
		case m.equal:
			m.hw[i] = 1
		default:
			m.hw[i] = min(h.a, m.c)
		}
		total += m.hw[i]
	}
	m.inv = 1 / total
	lowest := slices.Min(r.weights)
	for _, a := range r.weights {
		switch {
		case m.equal:
			m.maxFrac = 1 / n
			if a > lowest {
				m.capped++
			}
		default:
			m.maxFrac = max(m.maxFrac, min(a, m.c)*m.inv)
			if over(a, m.c) {
				m.capped++
			}
		}
	}
	return m
}

// Weights returns the normalised weight each added update gets in the
// aggregate, in the order of Add, after the weight cap; they sum to 1.
func (r *avgRound) Weights() []float64 {
	if r.updates == 0 {
		return nil
	}
	m := r.mixture()
	out := make([]float64, len(r.weights))
	for i, a := range r.weights {
		switch {
		case r.dp != nil, m.equal:
			out[i] = 1 / float64(r.updates)
		default:
			out[i] = min(a, m.c) * m.inv
		}
	}
	return out
}

func (r *avgRound) Result() (*model.Weights, map[string]float64, error) {
	if r.updates == 0 {
		return nil, nil, ErrNoUpdates
	}
	if r.finished {
		return nil, nil, fmt.Errorf("%s: %w", r.name, ErrFinished)
	}
	if err := r.loadHeld(); err != nil {
		return nil, nil, err
	}
	r.mix = r.mixture()
	if r.finishing && r.dp == nil && r.opt == nil && len(r.mix.hw) == 0 {
		// meanInto reads each sum before it writes the mean in its place.
		r.next = &model.Weights{Tensors: make([]model.Tensor, len(r.global.Tensors))}
		for i, t := range r.global.Tensors {
			r.next.Tensors[i] = model.Tensor{Name: t.Name, Shape: slices.Clone(t.Shape), Data: r.acc[i]}
		}
		r.acc = nil
	} else {
		r.next = r.zeros()
	}
	var state *model.Weights
	if r.opt != nil {
		state = r.opt.zeros(r.global)
	}
	r.nextState = state
	defer func() { r.next, r.mix.hw = nil, nil }()
	if r.dp != nil {
		// One core, in the model's order: the noise does not depend on
		// how many cores share the work.
		rng := rand.New(rand.NewPCG(r.seed, uint64(r.round)))
		var s, pg float64
		ok := true
		for i, t := range r.global.Tensors {
			a, b, good := r.combine(piece{i, 0, len(t.Data)}, t.Data, rng)
			s, pg, ok = s+a, pg+b, ok && good
		}
		for w := range r.plan {
			r.norm2[w], r.pg2[w], r.finite[w] = 0, 0, true
		}
		r.norm2[0], r.pg2[0], r.finite[0] = s, pg, ok
	} else {
		r.done.Add(len(r.plan))
		for w := 1; w < len(r.plan); w++ {
			go r.resultShare(w)
		}
		r.resultShare(0)
		r.done.Wait()
	}
	var s, pg float64
	for _, err := range r.gerr {
		if err != nil {
			r.finished = true // the sum may be the next model's memory already
			return nil, nil, fmt.Errorf("%s: reading the global model: %w", r.name, err)
		}
	}
	for w := range r.plan {
		if !r.finite[w] {
			r.nextState = nil
			if r.opt != nil {
				return nil, nil, fmt.Errorf("%s: the server optimizer's step or state left float32's range; lower eta", r.name)
			}
			return nil, nil, fmt.Errorf("%s: server learning rate %v pushes the next model past float32's range; lower it", r.name, r.lr)
		}
		s += r.norm2[w]
		pg += r.pg2[w]
	}
	metrics := map[string]float64{
		"updates":             float64(r.updates),
		"samples":             r.total,
		"update_norm":         math.Sqrt(s),
		"max_weight_fraction": r.mix.maxFrac,
		"capped":              float64(r.mix.capped),
	}
	if r.frac > 0 {
		metrics["cap_unmet"] = 0
		if r.mix.equal {
			metrics["cap_unmet"] = 1
		}
	}
	if r.dp != nil {
		metrics["dp_clipped"] = float64(r.clipped)
		metrics["dp_noise_std"] = r.dp.Noise * r.dp.Clip / float64(r.updates)
	}
	if r.opt != nil {
		metrics["pseudo_gradient_norm"] = math.Sqrt(pg)
	}
	return r.next, metrics, nil
}

// resultShare is worker w's part of Result.
func (r *avgRound) resultShare(w int) {
	defer r.done.Done()
	var s, pg float64
	ok := true
	if len(r.mix.hw) == 0 && r.opt == nil {
		// Plain FedAvg: next = g + η·(acc/wsum − g), in float64, rounded
		// once to float32.
		for _, p := range r.plan[w] {
			sum := r.next.Tensors[p.t].Data // Finish: the sum is next's memory
			if r.acc != nil {
				sum = r.acc[p.t]
			}
			for b := range r.blocks(p) {
				s += meanInto(r.next.Tensors[b.t].Data[b.lo:b.hi], sum[b.lo:b.hi], r.globalBlock(w, b), r.mix.inv, r.lr)
			}
		}
		// A value past float32's range makes its square, and so s, +Inf;
		// nothing else can (see meanInto).
		r.norm2[w], r.pg2[w], r.finite[w] = s, 0, !math.IsInf(s, 0)
		return
	}
	for _, p := range r.plan[w] {
		for b := range r.blocks(p) {
			x, y, good := r.combine(b, r.globalBlock(w, b), nil)
			s, pg, ok = s+x, pg+y, ok && good
		}
	}
	r.norm2[w], r.pg2[w], r.finite[w] = s, pg, ok
}

// meanInto sets out[j] to g[j] + η·(a[j]·inv − g[j]), computed in float64
// and rounded once to float32 (with η = 1, a[j]·inv), and returns
// Σ(out[j] − g[j])². a and g must be at least as long as out. With a and g
// finite, the sum is +Inf exactly when some out[j] overflowed float32 to
// ±Inf: each finite square is below 2^258, so a sum of fewer than 2^700
// of them stays finite. This is Result's one pass over the model in plain
// FedAvg; it is unrolled by four, with four partial sums, so that no
// iteration waits on the previous one's addition.
func meanInto(out, a, g []float32, inv, lr float64) float64 {
	a, g = a[:len(out)], g[:len(out)]
	var s0, s1, s2, s3 float64
	j := 0
	if lr == 1 {
		for ; j+4 <= len(out); j += 4 {
			o, x, y := out[j:j+4:j+4], a[j:j+4:j+4], g[j:j+4:j+4]
			f0, f1 := float32(float64(x[0])*inv), float32(float64(x[1])*inv)
			f2, f3 := float32(float64(x[2])*inv), float32(float64(x[3])*inv)
			o[0], o[1], o[2], o[3] = f0, f1, f2, f3
			d0, d1 := float64(f0)-float64(y[0]), float64(f1)-float64(y[1])
			d2, d3 := float64(f2)-float64(y[2]), float64(f3)-float64(y[3])
			s0, s1, s2, s3 = s0+d0*d0, s1+d1*d1, s2+d2*d2, s3+d3*d3
		}
	} else {
		for ; j+4 <= len(out); j += 4 {
			o, x, y := out[j:j+4:j+4], a[j:j+4:j+4], g[j:j+4:j+4]
			g0, g1, g2, g3 := float64(y[0]), float64(y[1]), float64(y[2]), float64(y[3])
			f0, f1 := float32(g0+lr*(float64(x[0])*inv-g0)), float32(g1+lr*(float64(x[1])*inv-g1))
			f2, f3 := float32(g2+lr*(float64(x[2])*inv-g2)), float32(g3+lr*(float64(x[3])*inv-g3))
			o[0], o[1], o[2], o[3] = f0, f1, f2, f3
			d0, d1 := float64(f0)-g0, float64(f1)-g1
			d2, d3 := float64(f2)-g2, float64(f3)-g3
			s0, s1, s2, s3 = s0+d0*d0, s1+d1*d1, s2+d2*d2, s3+d3*d3
		}
	}
	for ; j < len(out); j++ {
		gj := float64(g[j])
		v := float64(a[j]) * inv
		if lr != 1 {
			v = gj + lr*(v-gj)
		}
		f := float32(v)
		out[j] = f
		d := float64(f) - gj
		s0 += d * d
	}
	return (s0 + s1) + (s2 + s3)
}

// combine writes the next model over the range p, whose global values
// are g, drawing DP noise from rng, and returns Σ(next − g)², Σ(mean −
// g)² and whether every value (and the optimizer state) stayed finite. The mean of a coordinate is
// (acc + Σ hw·held)·inv, or under DP g + acc·inv + noise; the next value
// is g + η·(mean − g), or the optimizer's step from g.
func (r *avgRound) combine(p piece, g []float32, rng *rand.Rand) (s, pg float64, ok bool) {
	ok = true
	a, out := r.acc[p.t][p.lo:p.hi], r.next.Tensors[p.t].Data[p.lo:p.hi]
	src := make([][]float32, len(r.held))
	for k, h := range r.held {
		src[k] = h.w.Tensors[p.t].Data[p.lo:p.hi]
	}
	var std float64
	if r.dp != nil {
		std = r.dp.Noise * r.dp.Clip * r.mix.inv
	}
	inv := r.mix.inv
	for j := range out {
		gj := float64(g[j])
		var mean float64
		if r.dp != nil {
			mean = gj + float64(a[j])*inv
			if std > 0 {
				mean += std * rng.NormFloat64()
			}
		} else {
			mean = float64(a[j])
			for k, x := range src {
				mean += r.mix.hw[k] * float64(x[j])
			}
			mean *= inv
		}
		var v float64
		if r.opt != nil {
			var good bool
			v, good = r.opt.step(r.nextState, p.t, p.lo+j, gj, mean)
			ok = ok && good
		} else {
			v = mean
			if r.lr != 1 {
				v = gj + r.lr*(mean-gj)
			}
		}
		f := float32(v)
		ok = ok && !math.IsInf(float64(f), 0) && !math.IsNaN(float64(f))
		out[j] = f
		d := float64(f) - gj
		s += d * d
		e := mean - gj
		pg += e * e
	}
	return s, pg, ok
}

// piece is the range [lo, hi) of tensor t.
type piece struct{ t, lo, hi int }

// cut yields p in consecutive ranges of at most size values.
func (p piece) cut(size int) iter.Seq[piece] {
	return func(yield func(piece) bool) {
		for lo := p.lo; lo < p.hi; lo += size {
			if !yield(piece{p.t, lo, min(p.hi, lo+size)}) {
				return
			}
		}
	}
}

// serialMax is the model size below which a round works on one core:
// spreading smaller work costs more than it saves.
const serialMax = 1 << 17

// newPlan splits the parameters of tensors of lens values into one
// contiguous share per worker (at most workers, one when they are few),
// each a list of tensor ranges.
func newPlan(lens []int, workers int) [][]piece {
	total := 0
	for _, n := range lens {
		total += n
	}
	if total < serialMax || workers < 1 {
		workers = 1
	}
	share := (total + workers - 1) / workers
	plan := make([][]piece, 0, workers)
	var cur []piece
	left := share
	for i, n := range lens {
		for lo := 0; lo < n; {
			hi := min(n, lo+left)
			cur = append(cur, piece{i, lo, hi})
			left -= hi - lo
			lo = hi
			if left == 0 {
				plan = append(plan, cur)
				cur, left = nil, share
			}
		}
	}
	if len(cur) > 0 || len(plan) == 0 {
		plan = append(plan, cur)
	}
	return plan
}
