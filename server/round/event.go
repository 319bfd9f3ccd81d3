package round

import (
	"fmt"
	"time"
)

// Event is something the coordinator observed that concerns the round. It is
// one of [UpdateReceived], [UpdateAggregated], [UpdateRejected], [SiteFailed],
// [SiteDisconnected] or [Cancel]; the passage of time alone is [Round.Tick].
type Event interface {
	isEvent()
}

// UpdateReceived reports that Site's update for this round is ready to be
// folded into the aggregate. The round answers with [Aggregate] when it
// accepts the update, and with [Ignored] or a [RecordSite] otherwise; the
// coordinator then reports the fold's result with [UpdateAggregated] or
// [UpdateRejected].
type UpdateReceived struct {
	Site string
	// NumSamples is the number of training samples the update was computed
	// on: FedAvg's weight. An update with fewer than one sample is rejected.
	NumSamples int64
}

// UpdateAggregated reports that the coordinator folded Site's update, accepted
// with [Aggregate], into the running aggregate: the site now counts towards
// the quorum.
type UpdateAggregated struct {
	Site string
}

// UpdateRejected reports that Site's update is unusable (wrong tensor shapes,
// NaN or Inf, a bad checksum) and was not folded into the aggregate. It may
// come before [UpdateReceived] (the coordinator checked the update first) or
// after [Aggregate] (the aggregator found the problem while folding, and
// folded nothing). The site counts as failed for the round.
type UpdateRejected struct {
	Site   string
	Reason string
}

// SiteFailed reports that Site answered its task with an error. The site
// counts as failed for the round; a later update from it is ignored.
type SiteFailed struct {
	Site   string
	Reason string
}

// SiteDisconnected reports that Site's session ended. A selected site that
// had not yet sent its update counts as failed; a disconnect after the update
// arrived, or from a site that was not selected, changes nothing.
type SiteDisconnected struct {
	Site string
}

// Cancel stops the round: it fails with [ErrCanceled] and Reason (for example
// "job canceled by admin" or "coordinator lost leadership").
type Cancel struct {
	Reason string
}

func (UpdateReceived) isEvent()   {}
func (UpdateAggregated) isEvent() {}
func (UpdateRejected) isEvent()   {}
func (SiteFailed) isEvent()       {}
func (SiteDisconnected) isEvent() {}
func (Cancel) isEvent()           {}

// Action is something the coordinator must do (or record) because of an
// event. It is one of [SendTask], [SetTimer], [Aggregate], [CancelTask],
// [RecordSite], [Ignored], [Commit] or [Fail]. The coordinator performs the
// actions of one call in order.
type Action interface {
	isAction()
}

// SendTask asks the coordinator to send this round's training task to Site.
// Only [Round.Start] returns it.
type SendTask struct {
	Site string
}

// SetTimer asks the coordinator to call [Round.Tick] at At, the round's
// deadline. Only [Round.Start] returns it; ticks at other times are harmless,
// and the coordinator may stop its timer once [Round.Done] reports true.
type SetTimer struct {
	At time.Time
}

// Aggregate asks the coordinator to fold Site's update, weighted by
// NumSamples, into the running aggregate, and to report the result with
// [UpdateAggregated] or [UpdateRejected]. The coordinator folds only the
// updates the round accepted this way, so no update is counted twice.
type Aggregate struct {
	Site       string
	NumSamples int64
}

// CancelTask asks the coordinator to tell Site to stop working on this
// round's task: its answer is no longer wanted (the deadline passed, the round
// has enough updates, or the round failed).
type CancelTask struct {
	Site   string
	Reason string
}

// RecordSite reports a selected site's result in the round, for tracking.
// Once the round has started, each selected site gets exactly one, with
// status [StatusOK], [StatusRejected], [StatusFailed] or [StatusDropped], by
// the time the round is done; a dropped site whose update arrives afterwards
// gets a second one with [StatusLate].
type RecordSite struct {
	Site   string
	Status Status
	Reason string // empty for StatusOK
}

// Ignored reports an event the round ignored because it breaks the protocol:
// an update from a site that was not selected, a second update from one site,
// a failure reported after the site answered. The coordinator should log it
// and, for an update, discard it; the round's counts are unchanged.
type Ignored struct {
	Site   string // empty for events without a site
	Reason string
}

// Commit reports that the round succeeded: the coordinator publishes the
// aggregate of the contributors' updates as the next global model. It is the
// round's last action, apart from late [RecordSite] actions.
type Commit struct {
	// Contributors are the sites whose updates were aggregated, in name
	// order; there are at least MinPerRound of them.
	Contributors []string
	// NumSamples is the sum of the contributors' sample counts.
	NumSamples int64
	// Failed are the selected sites that failed, disconnected or sent a
	// rejected update, in name order.
	Failed []string
	// Dropped are the selected sites that had not answered when the round
	// closed, in name order.
	Dropped []string
}

// Fail reports that the round failed: the coordinator discards the running
// aggregate and keeps the previous global model. Err wraps
// [ErrQuorumUnreachable], [ErrDeadlineExceeded] or [ErrCanceled] and says
// how many updates arrived and how many were needed.
type Fail struct {
	Err error
}

func (SendTask) isAction()   {}
func (SetTimer) isAction()   {}
func (Aggregate) isAction()  {}
func (CancelTask) isAction() {}
func (RecordSite) isAction() {}
func (Ignored) isAction()    {}
func (Commit) isAction()     {}
func (Fail) isAction()       {}

// Status is a selected site's result in a round, as [RecordSite] reports it.
type Status int

// The statuses of a selected site in a round.
const (
	// StatusOK: the site's update was aggregated.
	StatusOK Status = iota + 1
	// StatusRejected: the site's update was unusable and not aggregated.
	StatusRejected
	// StatusFailed: the site reported an error or disconnected before sending
	// its update.
	StatusFailed
	// StatusDropped: the site had not answered when the round closed (the
	// deadline passed, the round reached its target, or it failed).
	StatusDropped
	// StatusLate: a dropped site's update arrived after the round closed; it
	// was not aggregated.
	StatusLate
)

// String returns the status in lower case, as tracking records it: "ok",
// "rejected", "failed", "dropped" or "late".
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "ok"
	case StatusRejected:
		return "rejected"
	case StatusFailed:
		return "failed"
	case StatusDropped:
		return "dropped"
	case StatusLate:
		return "late"
	}
	return fmt.Sprintf("Status(%d)", int(s))
}

// Phase is where a round stands.
type Phase int

// The phases of a round, in the order a round goes through them.
const (
	// PhaseNew: created by [New], not started.
	PhaseNew Phase = iota
	// PhaseRunning: started, waiting for answers.
	PhaseRunning
	// PhaseCommitted: done, with a [Commit].
	PhaseCommitted
	// PhaseFailed: done, with a [Fail].
	PhaseFailed
)

// String returns the phase in lower case: "new", "running", "committed" or
// "failed".
func (p Phase) String() string {
	switch p {
	case PhaseNew:
		return "new"
	case PhaseRunning:
		return "running"
	case PhaseCommitted:
		return "committed"
	case PhaseFailed:
		return "failed"
	}
	return fmt.Sprintf("Phase(%d)", int(p))
}

// Outcome is the result of a round so far, as [Round.Outcome] reports it.
type Outcome struct {
	Phase Phase
	// Contributors, NumSamples, Failed and Dropped are as in [Commit]; they
	// are set once the round is done, committed or failed.
	Contributors []string
	NumSamples   int64
	Failed       []string
	Dropped      []string
	// Err is the error of the [Fail] action when Phase is PhaseFailed.
	Err error
}
