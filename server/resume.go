package server

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/cohortfl/cohort/model"
	"github.com/cohortfl/cohort/tracking"
)

// The totals a committed round carries, so that cumulative figures
// continue after a failover.
const (
	totalEnergy        = "energy_joules"
	totalCO2           = "co2_grams"
	totalBytesSent     = "bytes_sent"
	totalBytesReceived = "bytes_received"
	totalAccuracy      = "test_accuracy"
	totalMeasured      = "measured_any"
	totalElapsed       = "elapsed_seconds"
)

// MetricFailover is logged, as 1 at the round a job resumed at, on the
// arm run and the site runs of an arm that continued on another
// coordinator (or on the same one after a restart).
const MetricFailover = "failover"

// TagFailover describes the last failover of a run.
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
func (c *Coordinator) markFailover(ctx context.Context, a *armRun, r int) {
	now := time.Now()
	msg := fmt.Sprintf("resumed at round %d on coordinator %s at %s: the coordinator that led the job stopped; rounds after the last committed one ran again",
		r, c.rep.ID(), now.UTC().Format(time.RFC3339))
	ms := []tracking.Metric{{Key: MetricFailover, Value: 1, Timestamp: now.UnixMilli(), Step: int64(r)}}
	tags := []tracking.Tag{{Key: TagFailover, Value: msg}}
	for _, id := range append([]string{a.runID}, slices.Collect(maps.Values(a.siteRuns))...) {
		if err := a.j.tracker.LogBatch(ctx, id, ms, nil, tags); err != nil {
			c.log.Warn("tracking_log_failed", "run", id, "err", err)
		}
	}
	c.log.Info("arm_resumed", "job", a.j.id, "arm", a.arm.Name, "round", r)
}

// backfill covers the one gap a failover can leave: a round committed in
// the replicated state whose metrics the old leader did not log before it
// stopped. The round is not run again (it is committed); its model is
// evaluated again and the run says what was lost.
func (c *Coordinator) backfill(ctx context.Context, a *armRun, last int) {
	hist, err := a.j.tracker.GetMetricHistory(ctx, a.runID, tracking.MetricRoundSeconds)
	if err != nil {
		return
	}
	for _, m := range hist {
		if m.Step == int64(last) {
			return
		}
	}
	now := time.Now().UnixMilli()
	var ms []tracking.Metric
	if a.prep.Evaluator != nil {
		if ev, err := a.prep.Evaluator.Evaluate(ctx, a.global); err == nil {
			ms = append(ms,
				tracking.Metric{Key: tracking.MetricTestAccuracy, Value: ev.Accuracy, Timestamp: now, Step: int64(last)},
				tracking.Metric{Key: tracking.MetricTestLoss, Value: ev.Loss, Timestamp: now, Step: int64(last)})
			a.lastAcc = ev.Accuracy
		}
	}
	tag := tracking.Tag{Key: fmt.Sprintf("cohort.round_%d.status", last),
		Value: "committed by the previous leader, which stopped before logging the round's metrics; test accuracy evaluated again by coordinator " + c.rep.ID()}
	if err := a.j.tracker.LogBatch(ctx, a.runID, ms, nil, []tracking.Tag{tag}); err != nil {
		c.log.Warn("tracking_log_failed", "run", a.runID, "err", err)
	}
}

// tagResumed marks a job run that continues on this coordinator.
func (c *Coordinator) tagResumed(ctx context.Context, tr Tracker, runID string) {
	msg := fmt.Sprintf("resumed on coordinator %s at %s", c.rep.ID(), time.Now().UTC().Format(time.RFC3339))
	if err := tr.LogBatch(ctx, runID, nil, nil, []tracking.Tag{{Key: TagFailover, Value: msg}}); err != nil {
		c.log.Warn("tracking_log_failed", "run", runID, "err", err)
	}
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
