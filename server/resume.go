package server

import (
	"bufio"
	"cmp"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"time"

	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
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
	// What `cohort jobs`, `status` and `logs` show of a round after a
	// failover (absent from the commits of older versions).
	totalRounds    = "rounds"
	totalNoTestSet = "no_test_set"
	totalFedAcc    = "federated_accuracy"
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
	if c.keepsOnDisk(a, a.global) {
		if err := c.toDisk(a, last.Digest); err != nil {
			return 0, fmt.Errorf("resuming after round %d: %w", last.Round, err)
		}
	}
	if last.Round < armRounds(j.spec, a.arm) {
		// The redone round is the arm's first on this coordinator: like
		// round 1 it waits for the job's sites as they reconnect from the
		// old leader (up to site_wait, then settles for min_per_round),
		// rather than starting with the first min_per_round of them.
		if _, err := c.candidates(ctx, a, true); err != nil {
			return 0, err
		}
	}
	return last.Round, nil
}

func (c *Coordinator) committedModel(digest string) (*model.Weights, error) {
	rc, err := c.rep.FSM().OpenModel(digest)
	if err != nil {
		return nil, fmt.Errorf("the committed global model %.12s is not on coordinator %s: %w", digest, c.rep.ID(), err)
	}
	defer rc.Close()
	// Streamed from the node's blob store, never held whole as bytes; the
	// digest was checked when the blob was stored.
	br := bufio.NewReaderSize(rc, 1<<20)
	w, _, err := model.DecodeSafetensors(br, 0)
	if err != nil {
		return nil, fmt.Errorf("decoding the committed global model %.12s: %w", digest, err)
	}
	if _, err := br.ReadByte(); err != io.EOF {
		return nil, fmt.Errorf("decoding the committed global model %.12s: bytes after the safetensors data (%v): %w", digest, err, model.ErrMalformed)
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
// replicated state. The model is encoded straight into the replica
// (ha.Node.PutModel streams it into the node's blob store, or hashes it
// only for a replica that records digests), never held whole as bytes;
// once this returns it is on a quorum of coordinators.
func (c *Coordinator) replicateRound(ctx context.Context, a *armRun, r int) error {
	w := withState(a.global, a.strategy)
	digest, err := c.rep.PutModel(ctx, func(out io.Writer) error { return model.EncodeSafetensors(out, w, nil) })
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
		totalRounds: float64(armRounds(a.j.spec, a.arm)),
	}
	if a.prep.Evaluator == nil {
		totals[totalNoTestSet] = 1
	}
	if a.hasFedAcc {
		totals[totalFedAcc] = a.lastFedAcc
	}
	if err := c.rep.CommitRound(ctx, a.j.id, a.arm.Name, r, digest, totals); err != nil {
		return fmt.Errorf("committing the round to the cluster: %w", err)
	}
	if c.keepsOnDisk(a, a.global) {
		return c.toDisk(a, digest)
	}
	return nil
}

// armRounds is how many rounds an arm runs: the job's rounds, or a
// centralized arm's epochs.
func armRounds(spec *job.Spec, arm job.Arm) int {
	if arm.Centralized != nil {
		return arm.Centralized.Epochs
	}
	return spec.Rounds
}

// roundsOf is the rounds of arm name by the totals its commit carries, or
// else by the job file (nil if it did not parse); 0 if neither knows.
func roundsOf(spec *job.Spec, name string, totals map[string]float64) int {
	if n, ok := totals[totalRounds]; ok {
		return int(n)
	}
	if spec != nil {
		for _, a := range spec.Arms {
			if a.Name == name {
				return armRounds(spec, a)
			}
		}
	}
	return 0
}

// restoreProgress sets, on a job rebuilt from the replicated state, where
// it got to: the arm it ran last (the last of the job file's arms with a
// committed round), that arm's last committed round of its total, and
// the accuracy then, as the job's status showed them on the coordinator
// that ran it.
func restoreProgress(info *pb.Job, spec *job.Spec, hj ha.Job) {
	arm, last := "", ha.Commit{}
	pick := func(name string) {
		if hist := hj.Arms[name]; len(hist) > 0 {
			arm, last = name, hist[len(hist)-1]
		}
	}
	if spec != nil {
		for _, a := range spec.Arms {
			pick(a.Name)
		}
	} else {
		names := slices.Sorted(maps.Keys(hj.Arms))
		for _, n := range names {
			pick(n)
		}
	}
	if arm == "" {
		return
	}
	info.Arm, info.Round, info.Rounds = arm, int32(last.Round), int32(roundsOf(spec, arm, last.Totals))
	info.Accuracy = last.Totals[totalAccuracy]
	info.NoTestSet = last.Totals[totalNoTestSet] != 0
}

// history rebuilds a job's events from the replicated state, for a
// coordinator that did not run it: queued, started, each committed round
// (with its test accuracy and the energy it cost, where the state holds
// them) and, for an ended job, how it ended. A snapshot of an older
// version holds each arm's last two rounds only.
func history(hj ha.Job, spec *job.Spec) []*pb.JobEvent {
	const restored = " (restored from the replicated state)"
	ms := func(ns int64) int64 { return ns / 1e6 }
	evs := []*pb.JobEvent{{JobId: hj.ID, Kind: "job_queued", State: pb.JobState_JOB_STATE_QUEUED, UnixMs: ms(hj.SubmittedAt), Message: "queued" + restored}}
	if hj.StartedAt != 0 {
		evs = append(evs, &pb.JobEvent{JobId: hj.ID, Kind: "job_started", State: pb.JobState_JOB_STATE_RUNNING, UnixMs: ms(hj.StartedAt), Message: "started" + restored})
	}
	recs := hj.History
	if len(recs) == 0 { // an older version's state: the last commits only
		for arm, hist := range hj.Arms {
			for _, c := range hist {
				recs = append(recs, ha.RoundRecord{Arm: arm, Round: c.Round, At: c.At, Totals: c.Totals})
			}
		}
		slices.SortFunc(recs, func(a, b ha.RoundRecord) int { return cmp.Compare(a.At, b.At) })
	}
	prevEnergy := map[string]float64{} // by arm
	for _, r := range recs {
		m := map[string]float64{}
		if r.Totals[totalNoTestSet] == 0 {
			if acc, ok := r.Totals[totalAccuracy]; ok {
				m["test_accuracy"] = acc
			}
		}
		if v, ok := r.Totals[totalFedAcc]; ok {
			m["federated_accuracy"] = v
		}
		if e, ok := r.Totals[totalEnergy]; ok {
			if p, seen := prevEnergy[r.Arm]; seen || r.Round == 1 {
				m["energy_joules"] = e - p
			}
			prevEnergy[r.Arm] = e
		}
		evs = append(evs, &pb.JobEvent{JobId: hj.ID, Kind: "round_committed", State: pb.JobState_JOB_STATE_RUNNING, UnixMs: ms(r.At),
			Arm: r.Arm, Round: int32(r.Round), Rounds: int32(roundsOf(spec, r.Arm, r.Totals)), Metrics: m,
			Message: fmt.Sprintf("round %d committed%s", r.Round, restored)})
	}
	if st := pbState(hj.Status); terminal(st) {
		msg := stateWord(st)
		if hj.Reason != "" {
			msg += ": " + hj.Reason
		}
		evs = append(evs, &pb.JobEvent{JobId: hj.ID, Kind: "job_finished", State: st, UnixMs: ms(hj.UpdatedAt), Message: msg + restored})
	}
	return evs
}
