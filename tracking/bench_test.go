package tracking

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// BenchmarkLogBatch measures metric points per second through the Go API:
// batches of 1000 points in one transaction (10 keys × 100 steps, as a
// job's rounds are logged, and 1000 distinct keys, the worst case for the
// latest-value table), against the baseline of one point per transaction.
// Compare the points/s of the sub-benchmarks of one run.
func BenchmarkLogBatch(b *testing.B) {
	for _, c := range []struct {
		name  string
		batch int
		keys  int
	}{
		{"batch=1000/keys=10", 1000, 10},
		{"batch=1000/keys=1000", 1000, 1000},
		{"single", 1, 1},
	} {
		b.Run(c.name, func(b *testing.B) {
			ctx := context.Background()
			s, _ := openStore(b)
			run := mustCreateRun(b, s, CreateRun{}).Info.RunID
			keys := make([]string, c.keys)
			for i := range keys {
				keys[i] = fmt.Sprintf("site/metric_%d", i)
			}
			batch := make([]Metric, c.batch)
			step := int64(0)
			points := 0
			for b.Loop() {
				for i := range batch {
					batch[i] = Metric{Key: keys[i%c.keys], Value: float64(step), Timestamp: step, Step: step}
					if (i+1)%c.keys == 0 {
						step++
					}
				}
				if err := s.LogBatch(ctx, run, batch, nil, nil); err != nil {
					b.Fatal(err)
				}
				points += len(batch)
			}
			b.ReportMetric(float64(points)/b.Elapsed().Seconds(), "points/s")
		})
	}
}

// BenchmarkEndRuns ends 1,000 runs (an arm's site runs at the end of a
// job): in one EndRuns call, against one UpdateRun call a run, the
// baseline, in the same run.
//
//	go test -run '^$' -bench EndRuns -benchtime 5x ./tracking
func BenchmarkEndRuns(b *testing.B) {
	for _, c := range []struct {
		name string
		end  func(s *SQLiteStore, ids []string) error
	}{
		{"EndRuns", func(s *SQLiteStore, ids []string) error {
			return s.EndRuns(context.Background(), ids, StatusFinished, time.Now())
		}},
		{"UpdateRun-each", func(s *SQLiteStore, ids []string) error {
			for _, id := range ids {
				if err := s.UpdateRun(context.Background(), id, StatusFinished, time.Now(), ""); err != nil {
					return err
				}
			}
			return nil
		}},
	} {
		b.Run(c.name, func(b *testing.B) {
			s, _ := openStore(b)
			for b.Loop() {
				b.StopTimer()
				runs, err := s.CreateRuns(context.Background(), make([]CreateRun, 1000))
				if err != nil {
					b.Fatal(err)
				}
				ids := make([]string, len(runs))
				for i, r := range runs {
					ids[i] = r.Info.RunID
				}
				b.StartTimer()
				if err := c.end(s, ids); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
