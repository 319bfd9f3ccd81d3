package aggregators

import (
	"errors"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/model"
)

// memBlocks is a BlockReader over weights in memory, as a coordinator's
// file of a spilled update reads; fail, when set, fails every read.
type memBlocks struct {
	w    *model.Weights
	fail error
}

func (m memBlocks) ReadBlock(t, off int, dst []float32) error {
	if m.fail != nil {
		return m.fail
	}
	d := m.w.Tensors[t].Data
	if off+len(dst) > len(d) {
		return errors.New("past the end")
	}
	copy(dst, d[off:])
	return nil
}

func (memBlocks) Close() error { return nil }

func blocksOf(w *model.Weights) func() (BlockReader, error) {
	return func() (BlockReader, error) { return memBlocks{w: w}, nil }
}

// TestHoldBlocksMatchesAdd checks each robust rule with some updates held
// as files read a block at a time against the same updates added in
// memory: the same model bit for bit, the same metrics, and nothing of
// the file-held updates counted against the memory budget.
func TestHoldBlocksMatchesAdd(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	// A tensor longer than a block and than a core's share.
	global := randomWeights(r, 5, 3*heldBlock+serialMax+17, 1)
	var updates []*model.Weights
	for range 7 {
		updates = append(updates, perturbed(r, global))
	}
	updates[3].Tensors[1].Data[100] += 50 // an outlier the rules must see
	for _, s := range []Strategy{&Median{}, &TrimmedMean{Beta: 0.2}, &Krum{F: 1}, &MultiKrum{F: 1, M: 3}, &Median{ServerLR: 0.5}} {
		t.Run(s.Name(), func(t *testing.T) {
			ra, err := s.Begin(global)
			if err != nil {
				t.Fatal(err)
			}
			rb, err := s.Begin(global)
			if err != nil {
				t.Fatal(err)
			}
			for i, u := range updates {
				if err := ra.Add(u, int64(10+i)); err != nil {
					t.Fatal(err)
				}
				if i%3 == 1 { // some in memory beside those in files
					err = rb.Add(u, int64(10+i))
				} else {
					err = rb.(BlockHolder).HoldBlocks(blocksOf(u), int64(10+i))
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			if got, want := rb.(*heldRound).bytes, 2*global.Bytes(); got != want {
				t.Errorf("memory budget counts %d bytes, want the 2 updates in memory's %d", got, want)
			}
			wantW, wantM, err := ra.Result()
			if err != nil {
				t.Fatal(err)
			}
			gotW, gotM, err := rb.Result()
			if err != nil {
				t.Fatal(err)
			}
			sameModel(t, wantW, gotW)
			for k, v := range wantM {
				if gotM[k] != v {
					t.Errorf("metric %s = %v, want %v", k, gotM[k], v)
				}
			}
		})
	}
}

// TestHoldBlocksRefuses: a non-finite or short update is refused as Add
// refuses it, and a file that cannot be read at Result fails the round
// with the reason.
func TestHoldBlocksRefuses(t *testing.T) {
	global := weights(1, 2, 3)
	r, err := (&Median{}).Begin(global)
	if err != nil {
		t.Fatal(err)
	}
	h := r.(BlockHolder)
	nan := weights(1, float32(math.NaN()), 3)
	if err := h.HoldBlocks(blocksOf(nan), 1); !errors.Is(err, ErrBadUpdate) || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("HoldBlocks(NaN) = %v, want ErrBadUpdate naming the NaN", err)
	}
	short := &model.Weights{Tensors: []model.Tensor{{Name: "a", Shape: []int{1}, Data: []float32{1}}}}
	if err := h.HoldBlocks(blocksOf(short), 1); !errors.Is(err, ErrBadUpdate) {
		t.Errorf("HoldBlocks(short) = %v, want ErrBadUpdate", err)
	}
	if err := h.HoldBlocks(blocksOf(weights(2, 3, 4)), 0); !errors.Is(err, ErrBadUpdate) {
		t.Errorf("HoldBlocks(0 samples) = %v, want ErrBadUpdate", err)
	}
	gone := false
	open := func() (BlockReader, error) {
		if gone {
			return memBlocks{fail: errors.New("disk gone")}, nil
		}
		return memBlocks{w: weights(2, 3, 4)}, nil
	}
	if err := h.HoldBlocks(open, 5); err != nil {
		t.Fatal(err)
	}
	gone = true
	if _, _, err := r.Result(); err == nil || !strings.Contains(err.Error(), "disk gone") {
		t.Fatalf("Result with an unreadable file = %v, want the read's error", err)
	}
}
