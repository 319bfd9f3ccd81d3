package server

import (
	"google.golang.org/protobuf/proto"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
	"github.com/cohortfl/cohort/tracking"
)

// Event is what a running job tells its subscribers: the round executor
// and the job runner emit typed events, and the [recorder] turns them into
// tracking runs, metrics, tags and artifacts. An event is a value owned by
// its subscribers once emitted: the emitter does not touch it again.
type Event interface{ jobEvent() }

// JobStarted is emitted once a job has its model and begins its arms.
type JobStarted struct {
	// Experiment is the tracking experiment the job logs into.
	Experiment string
	// Params are the job's spec, flattened: the job run's params.
	Params map[string]string
	// Resumed holds the run IDs of a job that continues on this
	// coordinator after a failover; empty for a new job.
	Resumed ha.RunIDs
	// Coordinator is the ID of the coordinator that resumes the job.
	Coordinator string
	// IdleWatts is the devices' idle power measured before the job; 0
	// when unknown.
	IdleWatts float64
}

// ArmStarted is emitted when an arm begins (or continues, after a
// failover) its rounds.
type ArmStarted struct {
	Arm string
	// Kind is [tracking.KindFederated] or [tracking.KindCentralized].
	Kind string
	// Rounds is the arm's rounds (epochs for a centralized arm).
	Rounds int
	// Params are the arm run's params.
	Params map[string]string
	// EvalMethod is how the arm's global models are evaluated.
	EvalMethod string
	// RunID and SiteRuns are the arm's runs created before a failover.
	RunID    string
	SiteRuns map[string]string
}

// ArmResumed is emitted when an arm continues at Round on coordinator
// Coordinator after a failover (or a restart).
type ArmResumed struct {
	Arm         string
	Round       int
	Coordinator string
}

// Evaluated is a global model's test-set figures outside a round: the
// initial model (Step 0), or a committed round evaluated again after a
// failover whose metrics the previous leader did not log (Backfill).
type Evaluated struct {
	Arm      string
	Step     int
	Accuracy float64
	Loss     float64
	// Evaluator says whether the figures exist (a coordinator without a
	// test set evaluates nothing).
	Evaluator bool
	// Backfill marks a committed round re-evaluated by Coordinator.
	Backfill    bool
	Coordinator string
}

// RoundStarted is emitted when an attempt at a round begins; a retried
// round starts again with Attempt one higher.
type RoundStarted struct {
	Arm     string
	Round   int
	Rounds  int
	Attempt int
}

// UpdateAccepted is a site's update, aggregated into the round. Whether it
// counts (accepted = 1 on the site run) is decided by the round's end: a
// [RoundClosed] credits it, a [RoundFailed] discards it.
type UpdateAccepted struct {
	Arm   string
	Round int
	Site  string
	// NumSamples is the sample count the update was weighted by, Claimed
	// what it claimed where that was capped (0 otherwise).
	NumSamples int64
	Claimed    int64
	// Bytes is the update's size on the wire.
	Bytes int64
	// DeltaNorm is the L2 norm of the update's delta.
	DeltaNorm float64
	// Metrics are what the site reported (train_loss, eval_accuracy, …).
	Metrics map[string]float64
	// Energy and EvalEnergy are the site's reports of its training and of
	// its evaluation of the model it received; nil when it sent none.
	Energy, EvalEnergy *pb.EnergyReport
	// Dataset describes the data the site trained on.
	Dataset *pb.DatasetInfo
	// Screened is the screening decision about the update ("clipped: …"),
	// or "".
	Screened string
}

// UpdateScreened is a screening decision about a site's update: clipped,
// or refused (an [UpdateRefused] follows).
type UpdateScreened struct {
	Arm      string
	Round    int
	Site     string
	Decision string
	Norm     float64
}

// UpdateRefused is a site whose work the round did not count: its update
// was rejected or screened out, its task failed, it disconnected, or it
// was cut.
type UpdateRefused struct {
	Arm    string
	Round  int
	Site   string
	Status string // the round's status word: rejected, failed, …
	Reason string
	// Norm is the update's delta norm where it was screened (Screened not
	// empty).
	Norm     float64
	Screened string
}

// RoundClosed is a committed round, with the arm's figures.
type RoundClosed struct {
	Arm    string
	Round  int
	Rounds int
	// Metrics are the arm run's figures at step Round.
	Metrics map[string]float64
	// Previous are figures about the previous round's model (the sites'
	// federated evaluation of the model they received), at step Round-1.
	Previous map[string]float64
	// EnergyMethod is how the round's energy was obtained.
	EnergyMethod string
	// WeightFractions is each aggregated site's share of the round's
	// aggregation weight, where the strategy reports it.
	WeightFractions map[string]float64
}

// RoundFailed is an attempt at a round that did not commit; Retry says
// whether the round runs again.
type RoundFailed struct {
	Arm   string
	Round int
	Err   string
	Retry bool
}

// ArmFinished is an arm that ended: Err is nil when it ran every round.
type ArmFinished struct {
	Arm string
	// Status is how the arm's runs end.
	Status tracking.RunStatus
	Err    error
	// MeasuredAny says whether any round's energy was measured.
	MeasuredAny bool
	// Final is the arm's final global model (registered when the job says
	// so); Spec what the sites build it from; Strategy the arm's strategy
	// ("centralized" for a centralized arm).
	Final    *model.Weights
	Spec     *pb.ModelSpec
	Strategy string
}

// JobFinished is the job's end. Interrupted means this coordinator lost
// the lead: the runs stay open for the next leader.
type JobFinished struct {
	Err         error
	Cancelled   bool
	Interrupted bool
}

func (JobStarted) jobEvent()     {}
func (ArmStarted) jobEvent()     {}
func (ArmResumed) jobEvent()     {}
func (Evaluated) jobEvent()      {}
func (RoundStarted) jobEvent()   {}
func (UpdateAccepted) jobEvent() {}
func (UpdateScreened) jobEvent() {}
func (UpdateRefused) jobEvent()  {}
func (RoundClosed) jobEvent()    {}
func (RoundFailed) jobEvent()    {}
func (ArmFinished) jobEvent()    {}
func (JobFinished) jobEvent()    {}

// eventBytes estimates the memory a queued round event holds, for the
// recorder's bound in bytes: a fixed part (the event, its queue slot, its
// short strings), its longer strings and maps, and the site's reports at
// their encoded sizes.
func eventBytes(ev Event) int {
	const fixed = 256
	switch ev := ev.(type) {
	case UpdateAccepted:
		return fixed + len(ev.Site) + len(ev.Screened) + mapBytes(ev.Metrics) +
			proto.Size(ev.Energy) + proto.Size(ev.EvalEnergy) + proto.Size(ev.Dataset)
	case UpdateRefused:
		return fixed + len(ev.Site) + len(ev.Reason) + len(ev.Screened)
	case UpdateScreened:
		return fixed + len(ev.Site) + len(ev.Decision)
	case RoundClosed:
		return fixed + mapBytes(ev.Metrics) + mapBytes(ev.Previous) + mapBytes(ev.WeightFractions) + len(ev.EnergyMethod)
	case RoundFailed:
		return fixed + len(ev.Err)
	}
	return fixed
}

// mapBytes estimates the memory of a map of figures: each key, its value
// and the map's slot for them.
func mapBytes(m map[string]float64) int {
	n := 0
	for k := range m {
		n += len(k) + 48
	}
	return n
}

// control reports whether ev shapes the runs themselves (their creation
// and end): such events are never dropped, and there are O(arms) of them.
func control(ev Event) bool {
	switch ev.(type) {
	case JobStarted, ArmStarted, ArmResumed, ArmFinished, JobFinished:
		return true
	}
	return false
}
