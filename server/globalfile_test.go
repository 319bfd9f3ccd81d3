package server

import (
	"bytes"
	"context"
	"errors"
	"os"
	"testing"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/model"
)

// TestGlobalModelOnDisk checks where an arm keeps its global model: in
// the blob store, read in place, where the replica keeps files and the
// strategy folds in place; in memory otherwise, or once the strategy turns
// out to need it whole (DP).
func TestGlobalModelOnDisk(t *testing.T) {
	ctx := context.Background()
	w := spillGlobal()
	want, err := model.MarshalSafetensors(w, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name      string
		modelDir  bool
		above     int64
		strategy  aggregators.Strategy
		onDisk    bool // after the initial model is put
		streaming bool // the round reads it in place
	}{
		{"fedavg", true, -1, &aggregators.FedAvg{MaxFraction: 0.5}, true, true},
		{"fedprox", true, -1, &aggregators.FedProx{Mu: 0.1}, true, true},
		{"model below SpillAbove", true, 1 << 30, &aggregators.FedAvg{}, false, false},
		{"no model dir", false, -1, &aggregators.FedAvg{}, false, false},
		{"dp", true, -1, &aggregators.FedAvg{DP: &aggregators.DP{Clip: 1}}, true, false},
		{"server optimizer", true, -1, &aggregators.FedOpt{Optimizer: aggregators.OptAdam}, false, false},
		{"median", true, -1, &aggregators.Median{}, false, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{SpillAbove: tt.above}
			if tt.modelDir {
				cfg.ModelDir = t.TempDir()
			}
			c, err := New(cfg, Deps{Models: &fakeModels{}, OpenTracker: noTrackerOpener})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			a := &armRun{strategy: tt.strategy, global: w}
			defer func() { a.file.close() }()
			if err := c.putInitial(ctx, a); err != nil {
				t.Fatal(err)
			}
			if got := a.file != nil; got != tt.onDisk || (a.global == nil) != tt.onDisk {
				t.Fatalf("on disk %v (in memory %v), want %v", got, a.global != nil, tt.onDisk)
			}
			agg, err := c.beginRound(a, 1)
			if err != nil {
				t.Fatal(err)
			}
			if got := a.file != nil; got != tt.streaming {
				t.Fatalf("round reads the model in place: %v, want %v", got, tt.streaming)
			}
			if !tt.streaming {
				if a.global == nil || weightsDiff(w, a.global) != "" {
					t.Fatalf("model in memory differs from the initial one")
				}
				return
			}
			stored := c.models.putFile(a.file)
			defer c.models.release(stored)
			var got bytes.Buffer
			if err := stored.encode(&got); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) || stored.size != int64(len(want)) || stored.id != a.file.digest {
				t.Fatalf("download of the model on disk: %d bytes (size %d, id %.12s), want the encoding's %d", got.Len(), stored.size, stored.id, len(want))
			}
			// A round over the model on disk gives what one in memory gives.
			inMem, err := aggregators.BeginRound(tt.strategy, w, a.seed, 1)
			if err != nil {
				t.Fatal(err)
			}
			u := w.Clone()
			u.Scale(1.5)
			for _, r := range []aggregators.Round{agg, inMem} {
				if err := r.Add(u, 10); err != nil {
					t.Fatal(err)
				}
				if err := r.Add(w, 30); err != nil {
					t.Fatal(err)
				}
			}
			next, _, err := agg.Result()
			if err != nil {
				t.Fatal(err)
			}
			wantNext, _, err := inMem.Result()
			if err != nil {
				t.Fatal(err)
			}
			if d := weightsDiff(wantNext, next); d != "" {
				t.Fatalf("round over the model on disk: %s", d)
			}
			loaded, err := a.globalWeights()
			if err != nil || weightsDiff(w, loaded) != "" {
				t.Fatalf("globalWeights = %v, want the initial model", err)
			}
		})
	}
}

// TestSpillAgainstClosedModel: an update that arrives after its round's
// model file closed is refused with os.ErrClosed (PushUpdate answers it
// as stale), leaving no file.
func TestSpillAgainstClosedModel(t *testing.T) {
	w := spillGlobal()
	gf := globalOnDisk(t, w)
	gf.close()
	b, err := model.MarshalSafetensors(w, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	_, err = spill(dir, bytes.NewReader(b), int64(len(b)), gf)
	if !errors.Is(err, os.ErrClosed) {
		t.Fatalf("spill against a closed model file = %v, want os.ErrClosed", err)
	}
	if left, _ := os.ReadDir(dir); len(left) != 0 {
		t.Errorf("%d files left, want none", len(left))
	}
}
