package server

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/cohortfl/cohort/model"
	"github.com/cohortfl/cohort/tracking"
)

// The totals a committed round carries, so that cumulative figures
// continue after a failover.
const (
	totalEnergy        = tracking.MetricEnergyJoules
	totalCO2           = tracking.MetricCO2Grams
	totalBytesSent     = tracking.MetricBytesSent
	totalBytesReceived = tracking.MetricBytesReceived
	totalAccuracy      = tracking.MetricTestAccuracy
	totalMeasured      = "measured_any"
	totalElapsed       = tracking.MetricElapsedSeconds
)

// MetricFailover is logged, as 1 at the round a job resumed at, on the
// arm run and the site runs of an arm that continued on another
// coordinator (or on the same one after a restart).
const MetricFailover = tracking.MetricFailover

// TagFailover describes the last failover of a run; [TagFailovers] counts
// them.
const TagFailover = "cohort.failover"

// resumeArm loads, for a job that resumes, the arm's tracking runs and
// its last committed round: the global model and the cumulative figures.
// It returns the last committed round (0 for an arm that has none).
func (c *Coordinator) resumeArm(ctx context.Context, a *armRun) (int, error) {
	if c.rep == nil {
		return 0, nil
	}
	j := a.j
	a.runID = j.runIDs.Arms[a.arm.Name]
	for s, id := range j.runIDs.Sites[a.arm.Name] {
		a.siteRuns[s] = id
	}
	hj, err := c.rep.FSM().Job(j.id)
	if err != nil {
		return 0, err
	}
	hist := hj.Arms[a.arm.Name]
	if len(hist) == 0 {
		if a.runID != "" {
			c.markFailover(ctx, a, 1)
		}
		return 0, nil
	}
	last := hist[len(hist)-1]
	w, err := c.committedModel(last.Digest)
	if err != nil {
		return 0, fmt.Errorf("resuming after round %d: %w", last.Round, err)
	}
	w, state := splitState(w)
	if err := a.restoreState(state); err != nil {
		return 0, fmt.Errorf("resuming after round %d: %w", last.Round, err)
	}
	a.global = w
	t := last.Totals
	a.energyJ, a.co2Grams = t[totalEnergy], t[totalCO2]
	a.bytesSent, a.bytesReceived = int64(t[totalBytesSent]), int64(t[totalBytesReceived])
	a.lastAcc, a.measuredAny = t[totalAccuracy], t[totalMeasured] != 0
	a.started = time.Now().Add(-time.Duration(t[totalElapsed] * float64(time.Second)))
	if a.runID != "" {
		c.markFailover(ctx, a, last.Round+1)
		c.backfill(ctx, a, last.Round)
	}
	return last.Round, nil
}

func (c *Coordinator) committedModel(digest string) (*model.Weights, error) {
	rc, err := c.rep.FSM().OpenModel(digest)
	if err != nil {
		return nil, fmt.Errorf("the committed global model %.12s is not on coordinator %s: %w", digest, c.rep.ID(), err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, fmt.Errorf("reading the committed global model %.12s: %w", digest, err)
	}
	w, _, err := model.UnmarshalSafetensors(b)
	if err != nil {
		return nil, fmt.Errorf("decoding the committed global model %.12s: %w", digest, err)
	}
	return w, nil
}

// markFailover records on the arm run and its site runs that the arm
// continues at round r on this coordinator.
func (c *Coordinator) markFailover(_ context.Context, a *armRun, r int) {
	a.resumed = append(a.resumed, ArmResumed{Arm: a.arm.Name, Round: r, Coordinator: c.rep.ID()})
	c.log.Info("arm_resumed", "job", a.j.id, "arm", a.arm.Name, "round", r)
}

// backfill covers the one gap a failover can leave: a round committed in
// the replicated state whose metrics the old leader did not log before it
// stopped. The round is not run again (it is committed); its model is
// evaluated again, and the recorder logs that evaluation and what was lost
// where the arm run lacks the round.
func (c *Coordinator) backfill(ctx context.Context, a *armRun, last int) {
	ev := Evaluated{Arm: a.arm.Name, Step: last, Backfill: true, Coordinator: c.rep.ID()}
	if a.prep.Evaluator != nil {
		if e, err := a.prep.Evaluator.Evaluate(ctx, a.global); err == nil {
			ev.Evaluator, ev.Accuracy, ev.Loss = true, e.Accuracy, e.Loss
			a.lastAcc = e.Accuracy
		}
	}
	a.resumed = append(a.resumed, ev)
}

// replicateRound commits round r of an arm with its global model to the
// replicated state: the model travels through the log, so once this
// returns it is on a quorum of coordinators. Without a replica it does
// nothing.
func (c *Coordinator) replicateRound(ctx context.Context, a *armRun, r int) error {
	if c.rep == nil {
		return nil
	}
	b, err := model.MarshalSafetensors(withState(a.global, a.strategy), nil)
	if err != nil {
		return fmt.Errorf("encoding the global model: %w", err)
	}
	digest, err := c.rep.PutModel(ctx, b)
	if err != nil {
		return fmt.Errorf("replicating the global model: %w", err)
	}
	measured := 0.0
	if a.measuredAny {
		measured = 1
	}
	totals := map[string]float64{
		totalEnergy: a.energyJ, totalCO2: a.co2Grams,
		totalBytesSent: float64(a.bytesSent), totalBytesReceived: float64(a.bytesReceived),
		totalAccuracy: a.lastAcc, totalMeasured: measured, totalElapsed: time.Since(a.started).Seconds(),
	}
	if err := c.rep.CommitRound(ctx, a.j.id, a.arm.Name, r, digest, totals); err != nil {
		return fmt.Errorf("committing the round to the cluster: %w", err)
	}
	return nil
}
