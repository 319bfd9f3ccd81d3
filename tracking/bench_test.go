package tracking

import (
	"context"
	"fmt"
	"math/rand/v2"
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

// BenchmarkSiteRounds logs rounds of 10,000 site runs as a coordinator's
// recorder does: each round, each site's batch (ten metrics at the
// round's step and its energy-method tag, unchanged from round to round)
// in the order the sites reported (shuffled), 4,096 batches a LogBatches
// call. A round's batches touch pages all over the metrics' B-trees;
// the store is 25 MiB after the first round and 39 MiB after the third.
// It reports the seconds a round; compare against the commit before in
// alternate runs.
//
//	go test -run '^$' -bench SiteRounds -benchtime 5x ./tracking
func BenchmarkSiteRounds(b *testing.B) {
	const sites, perCall = 10000, 4096
	ctx := context.Background()
	s, _ := openStore(b)
	var ids []string
	for len(ids) < sites {
		runs, err := s.CreateRuns(ctx, make([]CreateRun, 1000))
		if err != nil {
			b.Fatal(err)
		}
		for _, r := range runs {
			ids = append(ids, r.Info.RunID)
		}
	}
	keys := []string{"num_samples", "update_bytes", "delta_norm", "train_loss", "train_accuracy",
		"train_seconds", "estimated_energy_joules", "samples_claimed", "accepted", "weight_fraction"}
	rng := rand.New(rand.NewPCG(1, 2))
	round := int64(0)
	b.ResetTimer()
	for b.Loop() {
		round++
		now := time.Now().UnixMilli()
		batches := make([]RunBatch, 0, perCall)
		for _, i := range rng.Perm(sites) {
			ms := make([]Metric, len(keys))
			for k, key := range keys {
				ms[k] = Metric{Key: key, Value: rng.Float64(), Timestamp: now, Step: round}
			}
			batches = append(batches, RunBatch{RunID: ids[i], Metrics: ms, Tags: []Tag{{Key: "cohort.energy_method", Value: "estimated"}}})
			if len(batches) == perCall {
				if err := s.LogBatches(ctx, batches); err != nil {
					b.Fatal(err)
				}
				batches = batches[:0]
			}
		}
		if err := s.LogBatches(ctx, batches); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(b.Elapsed().Seconds()/float64(b.N), "s/round")
}
