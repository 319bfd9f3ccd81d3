package aggregators

import (
	"errors"
	"fmt"
	"io"
	"math"

	"github.com/cohortfl/cohort/model"
)

// ErrNoStream is returned by [StreamAdder.AddStream] when the round cannot
// fold this update as a stream (a weight cap or DP needs the whole update
// at once); nothing was read and the aggregate is unchanged: decode the
// update and call [Round.Add] instead.
var ErrNoStream = errors.New("round cannot fold an update as a stream")

// StreamAdder is implemented by rounds that can fold an update read as a
// stream, never holding more of it than a chunk: those of the FedAvg
// family (fedavg, fedprox, the [FedOpt] optimizers) without DP; under a
// weight cap, every update the cap does not hold back (it holds one back
// while too few updates have arrived for the cap to be met, or while the
// update's weight is above the cap's level). A coordinator that keeps received updates on disk folds them
// with it, so that its memory is the global model and the sum whatever
// the number of sites.
type StreamAdder interface {
	// AddStream folds the update that open reads — the values of every
	// tensor of the global model, in order, as little-endian float32 and
	// nothing else — with numSamples, bit for bit as [Round.Add] folds
	// the same values. It opens the update twice: once to check it
	// (finite, unable to overflow the sum), once to fold it; the two
	// reads must return the same bytes. An update Add would refuse is
	// refused with the same [ErrBadUpdate] and the aggregate unchanged;
	// [ErrNoStream] says to use Add. Should the second read fail, the
	// round is lost: it answers [ErrFinished] from then on.
	AddStream(open func() (io.ReadCloser, error), numSamples int64) error
}

// StreamHolder is implemented by rounds that can also hold an update
// back as a stream where the weight cap must (AddStream's [ErrNoStream]
// for the cap): the round keeps open and reads the update again when the
// cap releases it, or at Result, so that a held update takes no memory.
type StreamHolder interface {
	// HoldStream is [StreamAdder.AddStream], except that an update the
	// weight cap holds back is kept as open, which must then go on
	// reading the same bytes until the round's Result (or Finish)
	// returns. kept reports whether it was. [ErrNoStream] (DP) says to
	// use Add.
	HoldStream(open func() (io.ReadCloser, error), numSamples int64) (kept bool, err error)
}

var (
	_ StreamAdder  = (*avgRound)(nil)
	_ StreamHolder = (*avgRound)(nil)
)

// AddStream implements [StreamAdder].
func (r *avgRound) AddStream(open func() (io.ReadCloser, error), n int64) error {
	_, err := r.addStream(open, n, false)
	return err
}

// HoldStream implements [StreamHolder].
func (r *avgRound) HoldStream(open func() (io.ReadCloser, error), n int64) (bool, error) {
	return r.addStream(open, n, true)
}

// addStream is AddStream, or with mayHold HoldStream.
func (r *avgRound) addStream(open func() (io.ReadCloser, error), n int64, mayHold bool) (kept bool, err error) {
	switch {
	case r.finished:
		return false, fmt.Errorf("%s: %w", r.name, ErrFinished)
	case r.dp != nil:
		return false, fmt.Errorf("%s: %w (DP)", r.name, ErrNoStream)
	case n < 1:
		return false, fmt.Errorf("%w: %d samples; an update needs at least one", ErrBadUpdate, n)
	}
	ref := r.ref
	if r.updates == 0 {
		ref = float64(n)
	}
	wt := float32(float64(n) / ref)
	// Under a weight cap, an update the cap would hold back is Add's, or
	// held as its stream.
	c, feasible, hold := math.Inf(1), true, false
	if r.frac > 0 {
		c, feasible = r.capLevel(float64(wt))
		hold = !feasible || over(float64(wt), c)
		if hold && !mayHold {
			return false, fmt.Errorf("%s: %w (the weight cap holds this update back)", r.name, ErrNoStream)
		}
	}
	buf := make([]float32, r.chunk())
	var norm float32
	err = r.readStream(open, buf, func(t, lo int, x []float32) error {
		for b := 0; b < len(x); b += foldBlock {
			blk := x[b:min(len(x), b+foldBlock)]
			m, finite := model.FiniteNorm(blk)
			if !finite {
				return fmt.Errorf("%w: %w", ErrBadUpdate, nonFinite(r.global.Tensors[t].Name, blk, lo+b))
			}
			norm = max(norm, m)
		}
		return nil
	})
	if err != nil {
		return false, err
	}
	if r.bound+float64(wt)*float64(norm) > maxSum {
		return false, fmt.Errorf("%w: values of magnitude up to %g weighted by %d samples could overflow the float32 aggregate", ErrBadUpdate, norm, n)
	}
	if !hold {
		// Each sum entry gets one addition, as in Add: the sum does not
		// depend on how the update is cut.
		err = r.readStream(open, buf, func(t, lo int, x []float32) error {
			model.AxpyFlat(wt, x, r.acc[t][lo:lo+len(x)])
			return nil
		})
		if err != nil {
			r.finished = true
			return false, fmt.Errorf("%s: folding an update from its stream failed halfway, and the round's sum with it; run the round again: %w", r.name, err)
		}
	}
	r.bound += float64(wt) * float64(norm)
	r.ref = ref
	r.total += float64(n)
	r.updates++
	r.weights = append(r.weights, float64(wt))
	r.nextState = nil
	if hold {
		r.held = append(r.held, heldUpdate{open: open, a: float64(wt)})
	} else {
		r.wsum += float64(wt)
	}
	if feasible {
		return hold, r.release(c)
	}
	return hold, nil
}

// OwnedAdder is implemented by rounds that can take an update over: the
// caller hands u to AddOwned and never reads or writes it again, so a
// round that must keep the update (the weight cap holds it back) keeps u
// itself rather than a copy. Otherwise AddOwned is [Round.Add].
type OwnedAdder interface {
	AddOwned(u *model.Weights, n int64) error
}

var _ OwnedAdder = (*avgRound)(nil)

// nonFinite names the first NaN or ±Inf of blk, which starts at index off
// of tensor name, as [model.Weights.CheckFinite] does.
func nonFinite(name string, blk []float32, off int) error {
	for i, v := range blk {
		if f := float64(v); math.IsNaN(f) || math.IsInf(f, 0) {
			return fmt.Errorf("%w: tensor %q holds %v at index %d", model.ErrNotFinite, name, v, off+i)
		}
	}
	return model.ErrNotFinite
}

// readStream reads the update open returns in chunks of buf, calling f
// with each chunk's tensor, offset and values; it refuses a stream of
// other than the global model's length with [ErrBadUpdate].
func (r *avgRound) readStream(open func() (io.ReadCloser, error), buf []float32, f func(t, lo int, x []float32) error) error {
	rc, err := open()
	if err != nil {
		return fmt.Errorf("opening the update's stream: %w", err)
	}
	defer rc.Close()
	for t, g := range r.global.Tensors {
		n := r.lens[t]
		for lo := 0; lo < n; {
			k := min(n-lo, len(buf))
			got, err := model.ReadFloats(rc, buf[:k])
			if err != nil {
				if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
					return fmt.Errorf("%w: the stream ends in tensor %q at value %d of %d", ErrBadUpdate, g.Name, lo+got, n)
				}
				return fmt.Errorf("reading the update's stream: %w", err)
			}
			if err := f(t, lo, buf[:k]); err != nil {
				return err
			}
			lo += k
		}
	}
	var one [1]byte
	if n, _ := rc.Read(one[:]); n > 0 {
		return fmt.Errorf("%w: the stream holds more values than the global model's %d tensors", ErrBadUpdate, len(r.global.Tensors))
	}
	return nil
}
