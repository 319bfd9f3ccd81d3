package round

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzRound drives rounds of random shape through random event sequences and
// checks the invariants any coordinator relies on: a round ends once, with a
// Commit of at least MinPerRound aggregated, selected sites or with a Fail
// that was unavoidable; every update is aggregated at most once; every
// selected site is recorded once (and at most once more as late); Done is
// stable; and a round always ends by its deadline.
//
// The parameters shape the config; ops is read three bytes per event: kind,
// site, and a time step (in 5 s units, so a sequence crosses the 10 m deadline
// after about 120 units).
func FuzzRound(f *testing.F) {
	// Three sites, quorum 2: all answer (update then aggregated, 15 s apart).
	f.Add(uint8(3), uint8(1), uint8(99), uint8(0), []byte{0, 0, 3, 1, 0, 3, 0, 1, 3, 1, 1, 3, 0, 2, 3, 1, 2, 3})
	// Duplicate updates, before and after aggregation.
	f.Add(uint8(2), uint8(1), uint8(99), uint8(0), []byte{0, 0, 3, 0, 0, 3, 1, 0, 3, 0, 0, 3, 1, 0, 3, 0, 1, 3, 1, 1, 3})
	// Four sites, quorum 3: a failure, a disconnect, then a tick past the deadline.
	f.Add(uint8(4), uint8(2), uint8(99), uint8(0), []byte{3, 0, 1, 4, 1, 1, 0, 2, 3, 1, 2, 3, 5, 0, 200})
	// Eight sites, half selected, over-selected by half.
	f.Add(uint8(8), uint8(2), uint8(49), uint8(2), []byte{0, 0, 3, 1, 0, 3, 0, 1, 3, 1, 1, 3, 0, 2, 3, 1, 2, 3, 0, 3, 3, 1, 3, 3, 0, 4, 3, 0, 5, 3, 1, 4, 3, 1, 5, 3})
	// A straggler at the deadline, then its late update.
	f.Add(uint8(5), uint8(1), uint8(99), uint8(1), []byte{0, 1, 3, 1, 1, 3, 0, 0, 3, 1, 0, 3, 5, 0, 255, 5, 0, 255, 0, 2, 3})
	// Zero samples, an intruder, a cancel.
	f.Add(uint8(2), uint8(0), uint8(99), uint8(0), []byte{0, 0, 1, 0, 2, 3, 15, 0, 1, 0, 1, 3})
	// Zero-time steps and a second Start.
	f.Add(uint8(6), uint8(2), uint8(30), uint8(3), []byte{6, 0, 3, 2, 0, 1, 6, 1, 0, 7, 0, 0, 1, 0, 0, 1, 1, 0})
	f.Fuzz(func(t *testing.T, n, minPer, fractionPct, over uint8, ops []byte) {
		if len(ops) > 3*512 {
			ops = ops[:3*512]
		}
		cfg := Config{
			Round:      1 + int(over>>4),
			Candidates: names(1 + int(n%8)),
			Fraction:   float64(1+int(fractionPct%100)) / 100,
			Deadline:   10 * time.Minute,
			Seed:       int64(fractionPct) - int64(minPer),
			OverSelect: float64(over%4) / 4,
		}
		cfg.MinPerRound = 1 + int(minPer)%len(cfg.Candidates)
		first := runFuzzRound(t, cfg, ops)
		// The same events give the same actions.
		if second := runFuzzRound(t, cfg, ops); second != first {
			t.Fatalf("two runs of the same events differ:\n%s\n---- vs ----\n%s", first, second)
		}
	})
}

// runFuzzRound plays ops against a round of cfg, checking invariants after
// every call, and returns the rendered actions.
func runFuzzRound(t *testing.T, cfg Config, ops []byte) string {
	t.Helper()
	r, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	c := &checker{t: t, cfg: cfg, r: r, records: map[string][]Status{}, aggregated: map[string]int64{}}
	now := epoch
	c.check("start", r.Start(now), now, true)
	for i := 0; i+2 < len(ops); i += 3 {
		kind, who, step := ops[i], ops[i+1], ops[i+2]
		now = now.Add(time.Duration(step) * 5 * time.Second)
		site := "intruder"
		if sel := int(who) % (len(cfg.Candidates) + 1); sel < len(cfg.Candidates) {
			site = cfg.Candidates[sel]
		}
		var ev Event
		switch kind % 16 {
		case 0, 8, 9:
			ev = UpdateReceived{Site: site, NumSamples: int64(step%8) - 1}
		case 1, 10, 11:
			ev = UpdateAggregated{Site: site}
		case 2:
			ev = UpdateRejected{Site: site, Reason: "NaN"}
		case 3:
			ev = SiteFailed{Site: site, Reason: "error"}
		case 4:
			ev = SiteDisconnected{Site: site}
		case 5, 12:
			ev = nil // a tick
		case 6:
			// A zero time: no deadline check.
			c.check("step at zero time", r.Step(time.Time{}, UpdateReceived{Site: site, NumSamples: 1}), now, false)
			continue
		case 7:
			c.check("start again", r.Start(now), now, false)
			continue
		case 15:
			ev = Cancel{Reason: "fuzz"}
		default:
			ev = UpdateReceived{Site: site, NumSamples: 10}
		}
		c.check(fmt.Sprintf("step %T %s", ev, site), r.Step(now, ev), now, false)
	}
	// Liveness: once the folds in flight report back and the deadline has
	// passed, the round is done.
	for _, s := range r.Selected() {
		if _, ok := c.aggregated[s]; ok && len(c.records[s]) == 0 {
			c.check("final aggregated "+s, r.Step(now, UpdateAggregated{Site: s}), now, false)
		}
	}
	if now.Before(r.Deadline()) {
		now = r.Deadline()
	}
	c.check("final tick", r.Tick(now), now, false)
	if !r.Done() {
		t.Fatalf("round not done after its deadline with no update in flight; outcome %+v, pending %v", r.Outcome(), r.Pending())
	}
	return c.log.String()
}

// checker holds what the actions so far imply, to check the next ones.
type checker struct {
	t          *testing.T
	cfg        Config
	r          *Round
	log        strings.Builder
	started    bool
	timerSet   bool
	ended      bool // a Commit or Fail was returned
	outcome    Outcome
	records    map[string][]Status // RecordSite statuses per site, in order
	aggregated map[string]int64    // Aggregate's samples per site
}

func (c *checker) fatalf(what string, acts []Action, format string, args ...any) {
	c.t.Helper()
	c.t.Fatalf("after %s → %s\nconfig %+v\nhistory:\n%s\n"+format, append([]any{what, renderActions(acts), c.cfg, c.log.String()}, args...)...)
}

func (c *checker) check(what string, acts []Action, now time.Time, isStart bool) {
	c.t.Helper()
	r := c.r
	selected := r.Selected()
	wasEnded := c.ended
	fmt.Fprintf(&c.log, "%s → %s\n", what, renderActions(acts))
	for _, a := range acts {
		if wasEnded {
			if rs, ok := a.(RecordSite); !ok || rs.Status != StatusLate {
				c.fatalf(what, acts, "action %s after the round ended", renderAction(a))
			}
		}
		switch a := a.(type) {
		case SendTask:
			if !isStart || c.started {
				c.fatalf(what, acts, "SendTask outside the first Start")
			}
		case SetTimer:
			if !isStart || c.timerSet {
				c.fatalf(what, acts, "SetTimer outside the first Start")
			}
			c.timerSet = true
			if want := now.Add(c.cfg.Deadline); !a.At.Equal(want) {
				c.fatalf(what, acts, "SetTimer at %v, want %v", a.At, want)
			}
		case Aggregate:
			if !slices.Contains(selected, a.Site) {
				c.fatalf(what, acts, "Aggregate for %q, not selected", a.Site)
			}
			if _, dup := c.aggregated[a.Site]; dup {
				c.fatalf(what, acts, "second Aggregate for %q", a.Site)
			}
			if len(c.records[a.Site]) > 0 {
				c.fatalf(what, acts, "Aggregate for %q, already recorded %v", a.Site, c.records[a.Site])
			}
			if a.NumSamples < 1 {
				c.fatalf(what, acts, "Aggregate for %q with %d samples", a.Site, a.NumSamples)
			}
			c.aggregated[a.Site] = a.NumSamples
		case CancelTask:
			if !slices.Contains(selected, a.Site) || len(c.records[a.Site]) > 0 {
				c.fatalf(what, acts, "CancelTask for %q, not selected or already recorded", a.Site)
			}
			if _, ok := c.aggregated[a.Site]; ok {
				c.fatalf(what, acts, "CancelTask for %q, whose update arrived", a.Site)
			}
		case RecordSite:
			if !slices.Contains(selected, a.Site) {
				c.fatalf(what, acts, "RecordSite for %q, not selected", a.Site)
			}
			prev := c.records[a.Site]
			switch {
			case len(prev) == 0 && a.Status == StatusLate:
				c.fatalf(what, acts, "late RecordSite for %q before it was dropped", a.Site)
			case len(prev) == 1 && (prev[0] != StatusDropped || a.Status != StatusLate):
				c.fatalf(what, acts, "RecordSite %v for %q, already recorded %v", a.Status, a.Site, prev)
			case len(prev) >= 2:
				c.fatalf(what, acts, "third RecordSite for %q", a.Site)
			}
			if _, ok := c.aggregated[a.Site]; a.Status == StatusOK && !ok {
				c.fatalf(what, acts, "RecordSite ok for %q, never aggregated", a.Site)
			}
			c.records[a.Site] = append(prev, a.Status)
		case Ignored:
		case Commit:
			c.ended = true
			c.checkCommit(what, acts, a, now)
		case Fail:
			c.ended = true
			c.checkFail(what, acts, a, now)
		default:
			c.fatalf(what, acts, "unknown action %T", a)
		}
	}
	if isStart {
		c.started = true
	}
	if r.Done() != c.ended {
		c.fatalf(what, acts, "Done() = %v, but a Commit or Fail was returned: %v", r.Done(), c.ended)
	}
	if !c.ended {
		// Fails early: a round that goes on can still reach its quorum.
		possible := 0
		for _, s := range selected {
			if rs := c.records[s]; len(rs) == 0 || rs[0] == StatusOK {
				possible++
			}
		}
		if possible < c.cfg.MinPerRound {
			c.fatalf(what, acts, "round goes on with only %d possible updates, %d needed", possible, c.cfg.MinPerRound)
		}
		return
	}
	if !wasEnded {
		c.outcome = r.Outcome()
		for _, s := range selected {
			if len(c.records[s]) == 0 {
				c.fatalf(what, acts, "round ended without recording %q", s)
			}
		}
	}
	if diff := cmp.Diff(c.outcome, r.Outcome(), cmpopts.EquateErrors()); diff != "" {
		c.fatalf(what, acts, "Outcome changed after the round ended (-then +now):\n%s", diff)
	}
	if p := r.Pending(); len(p) > 0 {
		c.fatalf(what, acts, "Pending() = %v after the round ended", p)
	}
}

func (c *checker) checkCommit(what string, acts []Action, a Commit, now time.Time) {
	c.t.Helper()
	if len(a.Contributors) < c.cfg.MinPerRound {
		c.fatalf(what, acts, "Commit with %d contributors, MinPerRound %d", len(a.Contributors), c.cfg.MinPerRound)
	}
	var samples int64
	all := slices.Concat(a.Contributors, a.Failed, a.Dropped)
	slices.Sort(all)
	if diff := cmp.Diff(c.r.Selected(), all); diff != "" {
		c.fatalf(what, acts, "Commit's contributors, failed and dropped are not a partition of the selected sites (-selected +commit):\n%s", diff)
	}
	for _, s := range a.Contributors {
		if rs := c.records[s]; len(rs) == 0 || rs[0] != StatusOK {
			c.fatalf(what, acts, "Commit counts %q, recorded %v", s, rs)
		}
		samples += c.aggregated[s]
	}
	if samples != a.NumSamples {
		c.fatalf(what, acts, "Commit.NumSamples = %d, want %d", a.NumSamples, samples)
	}
	for _, s := range a.Dropped {
		if rs := c.records[s]; len(rs) == 0 || rs[0] != StatusDropped {
			c.fatalf(what, acts, "Commit drops %q, recorded %v", s, rs)
		}
	}
	// Before the deadline, a round waits for every selected site unless it
	// over-selected and has its target.
	target := selectCount(len(c.cfg.Candidates), c.cfg.Fraction, c.cfg.MinPerRound)
	if now.Before(c.r.Deadline()) && len(a.Dropped) > 0 && len(a.Contributors) < target {
		c.fatalf(what, acts, "Commit before the deadline dropping %v with %d contributors, target %d", a.Dropped, len(a.Contributors), target)
	}
	if o := c.r.Outcome(); o.Phase != PhaseCommitted || o.Err != nil {
		c.fatalf(what, acts, "Outcome() = %+v after a Commit", o)
	}
}

func (c *checker) checkFail(what string, acts []Action, a Fail, now time.Time) {
	c.t.Helper()
	var hits []error
	for _, e := range []error{ErrQuorumUnreachable, ErrDeadlineExceeded, ErrCanceled} {
		if errors.Is(a.Err, e) {
			hits = append(hits, e)
		}
	}
	if len(hits) != 1 {
		c.fatalf(what, acts, "Fail error %v wraps %v, want exactly one sentinel", a.Err, hits)
	}
	ok, lost := 0, 0
	for _, s := range c.r.Selected() {
		if rs := c.records[s]; len(rs) > 0 {
			switch rs[0] {
			case StatusOK:
				ok++
			case StatusRejected, StatusFailed:
				lost++
			}
		}
	}
	switch hits[0] {
	case ErrQuorumUnreachable:
		// Fails only when it must: even with every other site answering,
		// the quorum is out of reach.
		if possible := len(c.r.Selected()) - lost; possible >= c.cfg.MinPerRound {
			c.fatalf(what, acts, "quorum-unreachable Fail with %d possible updates, %d needed", possible, c.cfg.MinPerRound)
		}
	case ErrDeadlineExceeded:
		if now.Before(c.r.Deadline()) {
			c.fatalf(what, acts, "deadline Fail at %v, before the deadline %v", now, c.r.Deadline())
		}
		if ok >= c.cfg.MinPerRound {
			c.fatalf(what, acts, "deadline Fail with %d aggregated updates, %d needed", ok, c.cfg.MinPerRound)
		}
	}
	if o := c.r.Outcome(); o.Phase != PhaseFailed || !errors.Is(o.Err, hits[0]) {
		c.fatalf(what, acts, "Outcome() = %+v after a Fail", o)
	}
}
