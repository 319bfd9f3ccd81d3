package tracking

import (
	"context"
	"fmt"
	"sync"
	"testing"
)

// TestConcurrentWriters logs from many goroutines into one run (and into
// sibling runs), with readers running beside them, and checks that no
// point is lost and the latest values are right.
func TestConcurrentWriters(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	parent := mustCreateRun(t, s, CreateRun{Name: "arm"}).Info.RunID
	run := mustCreateRun(t, s, CreateRun{Name: "shared", ParentRunID: parent}).Info.RunID
	const writers, batches, perBatch = 8, 20, 25
	var wg sync.WaitGroup
	errs := make(chan error, 4*writers)
	for w := range writers {
		wg.Go(func() {
			site, err := s.CreateRun(ctx, CreateRun{Name: fmt.Sprintf("site-%d", w), ParentRunID: parent})
			if err != nil {
				errs <- err
				return
			}
			for b := range batches {
				ms := make([]Metric, perBatch)
				for i := range ms {
					step := int64(b*perBatch + i)
					ms[i] = Metric{Key: fmt.Sprintf("w%d", w), Value: float64(step), Timestamp: step, Step: step}
				}
				shared := append(ms, Metric{Key: "all", Value: float64(w), Timestamp: int64(b), Step: int64(w*batches + b)})
				if err := s.LogBatch(ctx, run, shared, []Param{{"p", "same"}}, []Tag{{"last", fmt.Sprint(w)}}); err != nil {
					errs <- err
					return
				}
				if err := s.LogBatch(ctx, site.Info.RunID, ms, nil, nil); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() { // a reader beside each writer
			for range batches {
				if _, err := s.GetRun(ctx, run); err != nil {
					errs <- err
					return
				}
				if _, err := s.ChildRuns(ctx, parent); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent use: %v", err)
	}

	r, err := s.GetRun(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	for w := range writers {
		key := fmt.Sprintf("w%d", w)
		hist, err := s.GetMetricHistory(ctx, run, key)
		if err != nil || len(hist) != batches*perBatch {
			t.Errorf("history of %s has %d points, %v; want %d", key, len(hist), err, batches*perBatch)
		}
		if m, _ := r.Data.Metric(key); m.Step != batches*perBatch-1 {
			t.Errorf("latest %s step = %d, want %d", key, m.Step, batches*perBatch-1)
		}
	}
	if hist, _ := s.GetMetricHistory(ctx, run, "all"); len(hist) != writers*batches {
		t.Errorf("history of all has %d points, want %d", len(hist), writers*batches)
	}
	if m, _ := r.Data.Metric("all"); m.Step != writers*batches-1 {
		t.Errorf("latest all step = %d, want %d", m.Step, writers*batches-1)
	}
	sites, err := s.ChildRuns(ctx, parent)
	if err != nil || len(sites) != writers+1 {
		t.Errorf("ChildRuns(arm) = %d runs, %v; want %d", len(sites), err, writers+1)
	}
}
