package round_test

import (
	"fmt"
	"time"

	"github.com/cohortfl/cohort/server/round"
)

// A coordinator drives a round: it starts it, feeds it what it observes and
// performs what it returns. Here one site answers, one fails and one is late.
func Example() {
	r, err := round.New(round.Config{
		Round:       1,
		Candidates:  []string{"kit", "unibo", "tum"},
		Fraction:    1,
		MinPerRound: 1,
		Deadline:    10 * time.Minute,
		Seed:        42,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	t0 := time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)
	var perform func(actions []round.Action)
	perform = func(actions []round.Action) {
		for _, a := range actions {
			switch a := a.(type) {
			case round.SendTask:
				fmt.Println("send task to", a.Site)
			case round.SetTimer:
				fmt.Println("tick at", a.At.Sub(t0))
			case round.Aggregate:
				fmt.Println("fold update of", a.Site, "weighted", a.NumSamples)
				// The aggregator folds it, then reports back.
				perform(r.Step(t0.Add(2*time.Minute), round.UpdateAggregated{Site: a.Site}))
			case round.CancelTask:
				fmt.Println("cancel task of", a.Site)
			case round.RecordSite:
				fmt.Println("record", a.Site, a.Status)
			case round.Commit:
				fmt.Println("commit", a.Contributors, "dropped", a.Dropped, "failed", a.Failed)
			case round.Fail:
				fmt.Println("fail:", a.Err)
			}
		}
	}
	perform(r.Start(t0))
	perform(r.Step(t0.Add(time.Minute), round.UpdateReceived{Site: "kit", NumSamples: 600}))
	perform(r.Step(t0.Add(3*time.Minute), round.SiteFailed{Site: "unibo", Reason: "CUDA out of memory"}))
	perform(r.Tick(t0.Add(10 * time.Minute)))
	perform(r.Step(t0.Add(11*time.Minute), round.UpdateReceived{Site: "tum", NumSamples: 500}))
	// Output:
	// send task to kit
	// send task to tum
	// send task to unibo
	// tick at 10m0s
	// fold update of kit weighted 600
	// record kit ok
	// record unibo failed
	// cancel task of tum
	// record tum dropped
	// commit [kit] dropped [tum] failed [unibo]
	// record tum late
}
