package round

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
)

// Errors returned by this package, matched with [errors.Is].
var (
	// ErrInvalidConfig is returned by [New] and [Select] when a parameter is
	// out of range; the message names the parameter, its job key and the fix.
	ErrInvalidConfig = errors.New("round: invalid config")
	// ErrNotEnoughSites is returned by [New] and [Select] when fewer sites
	// are connected than a round needs to commit; the message gives both
	// numbers.
	ErrNotEnoughSites = errors.New("round: not enough sites")
	// ErrQuorumUnreachable is wrapped by a [Fail] issued before the deadline
	// because so many selected sites failed that MinPerRound updates can no
	// longer arrive.
	ErrQuorumUnreachable = errors.New("round: quorum unreachable")
	// ErrDeadlineExceeded is wrapped by a [Fail] issued because the deadline
	// passed with fewer than MinPerRound updates.
	ErrDeadlineExceeded = errors.New("round: deadline exceeded")
	// ErrCanceled is wrapped by a [Fail] issued because of a [Cancel] event.
	ErrCanceled = errors.New("round: canceled")
)

// Config describes one round. Every field must be set; [New] validates it.
type Config struct {
	// Round is the round number, from 1.
	Round int
	// Candidates are the connected, eligible sites as the coordinator sees
	// them when the round starts: distinct, non-empty names, in any order.
	Candidates []string
	// Fraction is the share of candidates selected, in (0, 1]: the round
	// selects max(ceil(Fraction × len(Candidates)), MinPerRound) sites (job
	// key sites.fraction).
	Fraction float64
	// MinPerRound is the quorum: the number of aggregated updates the round
	// needs to commit, at least 1 and at most len(Candidates) (job key
	// sites.min_per_round).
	MinPerRound int
	// Deadline is how long after [Round.Start] the round waits for answers;
	// sites that have not answered by then are dropped (job key
	// deadline.round).
	Deadline time.Duration
	// Seed seeds the selection, with Round, so that a job's selections are
	// reproducible: pass the job's seed.
	Seed int64
	// OverSelect, when positive, selects ceil(k × (1 + OverSelect)) sites
	// (capped at len(Candidates)), where k is the count above, and closes
	// the round as soon as k updates are aggregated, dropping the rest:
	// over-selection trades the slowest sites' data for shorter rounds.
	// Zero, the default, waits for every selected site.
	OverSelect float64
}

// validate returns every problem with c, joined, or nil.
func (c Config) validate() error {
	problems := checkSelection(c.Candidates, c.Fraction, c.MinPerRound)
	if c.Round < 1 {
		problems = append(problems, fmt.Errorf("round number is %d; rounds are numbered from 1: %w", c.Round, ErrInvalidConfig))
	}
	if c.Deadline <= 0 {
		problems = append(problems, fmt.Errorf("deadline is %v; it must be positive, how long a round waits for sites, e.g. \"10m\" (job key deadline.round): %w", c.Deadline, ErrInvalidConfig))
	}
	if math.IsNaN(c.OverSelect) || math.IsInf(c.OverSelect, 0) || c.OverSelect < 0 {
		problems = append(problems, fmt.Errorf("over-selection is %v; it must be a finite number ≥ 0, the extra share of sites selected (0 selects none extra): %w", c.OverSelect, ErrInvalidConfig))
	}
	return joinProblems(problems)
}

// joinProblems joins problems without errors.Join's wrapper when there is
// only one, so that a single problem reads as a single line.
func joinProblems(problems []error) error {
	if len(problems) == 1 {
		return problems[0]
	}
	return errors.Join(problems...)
}

// siteState is where a selected site stands in the round.
type siteState uint8

const (
	statePending     siteState = iota // task sent, no answer yet
	stateAggregating                  // update accepted, fold under way
	stateOK                           // update aggregated
	stateRejected                     // update unusable
	stateFailed                       // task error or disconnect
	stateDropped                      // no answer when the round closed
	stateDiscarded                    // fold under way when the round failed
	stateLate                         // dropped, then the update arrived
)

// describe says what a site in state s has done, for [Ignored] reasons.
func (s siteState) describe() string {
	switch s {
	case statePending:
		return "has not answered"
	case stateAggregating:
		return "already sent its update, which is being aggregated"
	case stateOK:
		return "already sent its update, which was aggregated"
	case stateRejected:
		return "already sent an update, which was rejected"
	case stateFailed:
		return "already counts as failed"
	case stateDropped:
		return "was dropped when the round closed"
	case stateDiscarded:
		return "had its update discarded when the round failed"
	case stateLate:
		return "already sent a late update"
	}
	return "is in an unknown state"
}

// Round is the state machine of one round. Create it with [New], call
// [Round.Start] once, then [Round.Step] for each event and [Round.Tick] when
// the timer set by [SetTimer] fires, performing the returned actions in order.
//
// A Round is deterministic: it reads no clock and draws no randomness beyond
// the seeded selection. It is not safe for concurrent use; the coordinator
// steps it from one goroutine or under a lock.
type Round struct {
	cfg      Config
	selected []string       // name order
	index    map[string]int // site name → position in selected
	states   []siteState    // by position in selected
	samples  []int64        // by position in selected; set once aggregating
	target   int            // updates that close the round early

	phase    Phase
	deadline time.Time
	closed   bool // no more answers are awaited from pending sites
	expired  bool // the deadline has passed

	// Counts of selected sites by state, so that each event costs O(1).
	pending, aggregating, ok, rejected, failed, dropped int

	outcome Outcome
}

// New validates cfg and selects the round's sites. It returns an error
// wrapping [ErrNotEnoughSites] when cfg.MinPerRound exceeds the number of
// candidates, and one wrapping [ErrInvalidConfig] for any other problem; all
// problems are reported at once.
func New(cfg Config) (*Round, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("creating round %d: %w", cfg.Round, err)
	}
	cfg.Candidates = slices.Clone(cfg.Candidates)
	n := len(cfg.Candidates)
	target := selectCount(n, cfg.Fraction, cfg.MinPerRound)
	count := target
	if cfg.OverSelect > 0 {
		count = max(target, ceilCount(float64(target)*(1+cfg.OverSelect), n))
	}
	r := &Round{
		cfg:      cfg,
		selected: shuffleTake(cfg.Candidates, count, cfg.Seed, cfg.Round),
		index:    make(map[string]int, count),
		states:   make([]siteState, count),
		samples:  make([]int64, count),
		target:   target,
		pending:  count,
	}
	for i, s := range r.selected {
		r.index[s] = i
	}
	return r, nil
}

// Start starts the round at now: it returns a [SendTask] for each selected
// site, in name order, and a [SetTimer] for the deadline, now +
// Config.Deadline. Start on a round already started (or canceled) returns
// nothing.
func (r *Round) Start(now time.Time) []Action {
	if r.phase != PhaseNew {
		return nil
	}
	r.phase = PhaseRunning
	r.deadline = now.Add(r.cfg.Deadline)
	acts := make([]Action, 0, len(r.selected)+1)
	for _, s := range r.selected {
		acts = append(acts, SendTask{Site: s})
	}
	return append(acts, SetTimer{At: r.deadline})
}

// Tick tells the round the time is now. At or after the deadline it drops
// the sites that have not answered and commits or fails; before the deadline
// it does nothing. Tick is Step with a nil event.
//
// Updates accepted with [Aggregate] before the deadline are still counted:
// the round decides once each of their folds is reported with
// [UpdateAggregated] or [UpdateRejected], so the coordinator must report
// every fold it was asked for, as a rejection if it cannot finish it.
func (r *Round) Tick(now time.Time) []Action {
	return r.Step(now, nil)
}

// Step applies ev, observed at now, and returns the actions it calls for.
// If now is at or after the deadline, the deadline is handled first, so an
// update observed after the deadline is late even if no Tick came between.
// A zero now skips the deadline check.
//
// Before [Round.Start], Step ignores every event but [Cancel]. Once the round
// is done, Step returns nothing, except a [RecordSite] with [StatusLate] for
// the first update from a site that was dropped; it never returns
// [Aggregate], [Commit] or [Fail] again.
func (r *Round) Step(now time.Time, ev Event) []Action {
	switch r.phase {
	case PhaseNew:
		return r.stepNew(ev)
	case PhaseCommitted, PhaseFailed:
		return r.stepDone(ev)
	}
	var acts []Action
	if !now.IsZero() && !r.expired && !now.Before(r.deadline) {
		r.expired = true
		acts = r.close(acts, "the round's deadline passed before the site answered")
		acts = r.decide(acts)
		if r.Done() {
			return append(acts, r.stepDone(ev)...)
		}
	}
	switch ev := ev.(type) {
	case nil:
		return acts
	case UpdateReceived:
		acts = r.updateReceived(acts, ev)
	case UpdateAggregated:
		acts = r.updateAggregated(acts, ev)
	case UpdateRejected:
		acts = r.answerFailed(acts, ev.Site, stateRejected, ev.Reason)
	case SiteFailed:
		acts = r.answerFailed(acts, ev.Site, stateFailed, ev.Reason)
	case SiteDisconnected:
		if i, ok := r.index[ev.Site]; ok && r.states[i] == statePending {
			acts = r.answerFailed(acts, ev.Site, stateFailed, "disconnected before sending its update")
		}
	case Cancel:
		return r.fail(acts, r.canceled(ev))
	default:
		return append(acts, Ignored{Reason: fmt.Sprintf("unknown event type %T", ev)})
	}
	return r.decide(acts)
}

// stepNew handles an event before Start: only Cancel does anything.
func (r *Round) stepNew(ev Event) []Action {
	switch ev := ev.(type) {
	case nil:
		return nil
	case Cancel:
		return r.fail(nil, r.canceled(ev))
	}
	return []Action{Ignored{Site: eventSite(ev), Reason: fmt.Sprintf("round %d has not started", r.cfg.Round)}}
}

// stepDone handles an event after the round is done: a dropped site's update
// is recorded as late, once; everything else is dropped silently.
func (r *Round) stepDone(ev Event) []Action {
	u, ok := ev.(UpdateReceived)
	if !ok {
		return nil
	}
	i, ok := r.index[u.Site]
	if !ok || r.states[i] != stateDropped {
		return nil
	}
	r.states[i] = stateLate
	return []Action{RecordSite{Site: u.Site, Status: StatusLate, Reason: fmt.Sprintf("update arrived after round %d closed; it was not aggregated", r.cfg.Round)}}
}

func (r *Round) updateReceived(acts []Action, ev UpdateReceived) []Action {
	i, ok := r.index[ev.Site]
	if !ok {
		return append(acts, Ignored{Site: ev.Site, Reason: fmt.Sprintf("update from a site not selected for round %d", r.cfg.Round)})
	}
	switch r.states[i] {
	case statePending:
	case stateDropped:
		r.states[i] = stateLate
		return append(acts, RecordSite{Site: ev.Site, Status: StatusLate, Reason: fmt.Sprintf("update arrived after round %d closed; it was not aggregated", r.cfg.Round)})
	default:
		return append(acts, Ignored{Site: ev.Site, Reason: "second update from a site that " + r.states[i].describe()})
	}
	if ev.NumSamples < 1 {
		return r.answerFailed(acts, ev.Site, stateRejected, fmt.Sprintf("update reports %d training samples; a site must train on at least one", ev.NumSamples))
	}
	r.states[i] = stateAggregating
	r.samples[i] = ev.NumSamples
	r.pending--
	r.aggregating++
	return append(acts, Aggregate{Site: ev.Site, NumSamples: ev.NumSamples})
}

func (r *Round) updateAggregated(acts []Action, ev UpdateAggregated) []Action {
	i, ok := r.index[ev.Site]
	if !ok || r.states[i] != stateAggregating {
		return append(acts, Ignored{Site: ev.Site, Reason: "aggregation reported for a site whose update was not accepted for aggregation"})
	}
	r.states[i] = stateOK
	r.aggregating--
	r.ok++
	return append(acts, RecordSite{Site: ev.Site, Status: StatusOK})
}

// answerFailed moves a pending or aggregating site to to (stateRejected or
// stateFailed) and records it.
func (r *Round) answerFailed(acts []Action, site string, to siteState, reason string) []Action {
	i, ok := r.index[site]
	if !ok {
		return append(acts, Ignored{Site: site, Reason: fmt.Sprintf("failure reported for a site not selected for round %d: %s", r.cfg.Round, reason)})
	}
	switch r.states[i] {
	case statePending:
		r.pending--
	case stateAggregating:
		r.aggregating--
	default:
		return append(acts, Ignored{Site: site, Reason: fmt.Sprintf("failure reported for a site that %s: %s", r.states[i].describe(), reason)})
	}
	r.states[i] = to
	status := StatusFailed
	if to == stateRejected {
		r.rejected++
		status = StatusRejected
	} else {
		r.failed++
	}
	return append(acts, RecordSite{Site: site, Status: status, Reason: reason})
}

// decide commits or fails the round if its fate is sealed, and closes it
// early when it has reached its target.
func (r *Round) decide(acts []Action) []Action {
	if r.Done() {
		return acts
	}
	if possible := r.ok + r.aggregating + r.pending; possible < r.cfg.MinPerRound {
		return r.fail(acts, r.shortfall())
	}
	if !r.closed && r.ok >= r.target {
		acts = r.close(acts, fmt.Sprintf("round %d already has the %d updates it needs", r.cfg.Round, r.target))
	}
	if r.pending == 0 && r.aggregating == 0 {
		return r.commit(acts)
	}
	return acts
}

// close stops waiting for the pending sites: each is dropped and its task
// canceled.
func (r *Round) close(acts []Action, reason string) []Action {
	r.closed = true
	if r.pending == 0 {
		return acts
	}
	for i, s := range r.selected {
		if r.states[i] == statePending {
			r.states[i] = stateDropped
			acts = append(acts, CancelTask{Site: s, Reason: reason}, RecordSite{Site: s, Status: StatusDropped, Reason: reason})
		}
	}
	r.dropped += r.pending
	r.pending = 0
	return acts
}

// shortfall returns the error for a round that cannot reach its quorum.
func (r *Round) shortfall() error {
	counts := fmt.Sprintf("%d aggregated, %d being aggregated, %d pending, %d rejected, %d failed, %d dropped of %d selected",
		r.ok, r.aggregating, r.pending, r.rejected, r.failed, r.dropped, len(r.selected))
	if r.expired {
		return fmt.Errorf("round %d: deadline %v passed with only %d of the %d updates needed (%s): %w",
			r.cfg.Round, r.cfg.Deadline, r.ok+r.aggregating, r.cfg.MinPerRound, counts, ErrDeadlineExceeded)
	}
	return fmt.Errorf("round %d: at most %d of the %d updates needed can still arrive (%s): %w",
		r.cfg.Round, r.ok+r.aggregating+r.pending, r.cfg.MinPerRound, counts, ErrQuorumUnreachable)
}

func (r *Round) canceled(ev Cancel) error {
	reason := ev.Reason
	if reason == "" {
		reason = "no reason given"
	}
	return fmt.Errorf("round %d canceled: %s: %w", r.cfg.Round, reason, ErrCanceled)
}

// fail ends the round with err: pending sites are dropped, updates being
// aggregated are discarded.
func (r *Round) fail(acts []Action, err error) []Action {
	if r.phase == PhaseRunning {
		acts = r.close(acts, fmt.Sprintf("round %d failed", r.cfg.Round))
		for i, s := range r.selected {
			if r.states[i] == stateAggregating {
				r.states[i] = stateDiscarded
				acts = append(acts, RecordSite{Site: s, Status: StatusDropped, Reason: fmt.Sprintf("round %d failed before the update was aggregated", r.cfg.Round)})
			}
		}
		r.dropped += r.aggregating
		r.aggregating = 0
	}
	r.phase = PhaseFailed
	r.setOutcome(err)
	return append(acts, Fail{Err: err})
}

func (r *Round) commit(acts []Action) []Action {
	r.phase = PhaseCommitted
	r.setOutcome(nil)
	o := r.Outcome()
	return append(acts, Commit{Contributors: o.Contributors, NumSamples: o.NumSamples, Failed: o.Failed, Dropped: o.Dropped})
}

func (r *Round) setOutcome(err error) {
	o := Outcome{Phase: r.phase, Err: err}
	for i, s := range r.selected {
		switch r.states[i] {
		case stateOK:
			o.Contributors = append(o.Contributors, s)
			o.NumSamples += r.samples[i]
		case stateRejected, stateFailed:
			o.Failed = append(o.Failed, s)
		case stateDropped, stateDiscarded, stateLate:
			o.Dropped = append(o.Dropped, s)
		}
	}
	r.outcome = o
}

// Selected returns the sites selected for the round, in name order.
func (r *Round) Selected() []string {
	return slices.Clone(r.selected)
}

// Pending returns the selected sites the round still waits for, in name
// order: those that have not answered and those whose update is being
// aggregated. It is empty once the round is done.
func (r *Round) Pending() []string {
	if r.phase != PhaseRunning {
		return nil
	}
	var out []string
	for i, s := range r.selected {
		if r.states[i] == statePending || r.states[i] == stateAggregating {
			out = append(out, s)
		}
	}
	return out
}

// Deadline returns the round's deadline, or the zero time before Start.
func (r *Round) Deadline() time.Time {
	return r.deadline
}

// Done reports whether the round has committed or failed. Once true, it
// stays true.
func (r *Round) Done() bool {
	return r.phase == PhaseCommitted || r.phase == PhaseFailed
}

// Outcome returns the round's phase and, once it is done, its result. The
// slices are the caller's to keep.
func (r *Round) Outcome() Outcome {
	if !r.Done() {
		return Outcome{Phase: r.phase}
	}
	o := r.outcome
	o.Contributors = slices.Clone(o.Contributors)
	o.Failed = slices.Clone(o.Failed)
	o.Dropped = slices.Clone(o.Dropped)
	return o
}

// eventSite returns the site an event concerns, or "".
func eventSite(ev Event) string {
	switch ev := ev.(type) {
	case UpdateReceived:
		return ev.Site
	case UpdateAggregated:
		return ev.Site
	case UpdateRejected:
		return ev.Site
	case SiteFailed:
		return ev.Site
	case SiteDisconnected:
		return ev.Site
	}
	return ""
}
