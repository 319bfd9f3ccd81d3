package round

import (
	"testing"
	"time"
)

// BenchmarkRound1000 runs a whole round of 1,000 sites: New (selection),
// Start, then an update and its aggregation per site, the last of which
// commits. It is the orchestration cost the design's "< 1 s beyond the
// slowest site" budget for 1,000 sites must cover.
func BenchmarkRound1000(b *testing.B) {
	cands := names(1000)
	cfg := Config{Round: 1, Candidates: cands, Fraction: 1, MinPerRound: 500, Deadline: time.Hour, Seed: 1}
	b.ReportAllocs()
	for b.Loop() {
		r, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		r.Start(epoch)
		for _, s := range cands {
			r.Step(epoch, UpdateReceived{Site: s, NumSamples: 100})
			r.Step(epoch, UpdateAggregated{Site: s})
		}
		if !r.Done() {
			b.Fatal("round of 1000 sites not done")
		}
	}
}

// BenchmarkRound1000Deadline is the same round where half the sites miss the
// deadline: the deadline tick drops 500 sites at once.
func BenchmarkRound1000Deadline(b *testing.B) {
	cands := names(1000)
	cfg := Config{Round: 1, Candidates: cands, Fraction: 1, MinPerRound: 500, Deadline: time.Hour, Seed: 1}
	b.ReportAllocs()
	for b.Loop() {
		r, err := New(cfg)
		if err != nil {
			b.Fatal(err)
		}
		r.Start(epoch)
		for _, s := range cands[:500] {
			r.Step(epoch, UpdateReceived{Site: s, NumSamples: 100})
			r.Step(epoch, UpdateAggregated{Site: s})
		}
		r.Tick(epoch.Add(time.Hour))
		if !r.Done() {
			b.Fatal("round of 1000 sites not done at the deadline")
		}
	}
}

func BenchmarkSelect(b *testing.B) {
	cands := names(1000)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Select(cands, 0.1, 1, 42, 7); err != nil {
			b.Fatal(err)
		}
	}
}
