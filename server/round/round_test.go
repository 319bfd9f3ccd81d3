package round

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// validConfig returns a config New accepts, for tests to break one field.
func validConfig() Config {
	return Config{Round: 1, Candidates: []string{"a", "b", "c"}, Fraction: 1, MinPerRound: 2, Deadline: time.Minute, Seed: 1}
}

func TestNewErrors(t *testing.T) {
	tests := []struct {
		name    string
		edit    func(*Config)
		is      error
		mention string
	}{
		{name: "round 0", edit: func(c *Config) { c.Round = 0 }, is: ErrInvalidConfig, mention: "numbered from 1"},
		{name: "no candidates", edit: func(c *Config) { c.Candidates = nil }, is: ErrNotEnoughSites, mention: "only 0 distinct sites"},
		{name: "min above candidates", edit: func(c *Config) { c.MinPerRound = 4 }, is: ErrNotEnoughSites, mention: "min per round is 4 but only 3"},
		{name: "negative min", edit: func(c *Config) { c.MinPerRound = -1 }, is: ErrInvalidConfig, mention: "sites.min_per_round"},
		{name: "zero fraction", edit: func(c *Config) { c.Fraction = 0 }, is: ErrInvalidConfig, mention: "sites.fraction"},
		{name: "zero deadline", edit: func(c *Config) { c.Deadline = 0 }, is: ErrInvalidConfig, mention: "deadline.round"},
		{name: "negative over-selection", edit: func(c *Config) { c.OverSelect = -0.1 }, is: ErrInvalidConfig, mention: "over-selection is -0.1"},
		{name: "duplicate candidate", edit: func(c *Config) { c.Candidates = []string{"a", "b", "a"} }, is: ErrInvalidConfig, mention: `"a" is listed twice`},
	}
	for _, tt := range tests {
		cfg := validConfig()
		tt.edit(&cfg)
		r, err := New(cfg)
		if !errors.Is(err, tt.is) {
			t.Errorf("%s: New(%+v) error = %v, want one wrapping %v", tt.name, cfg, err, tt.is)
			continue
		}
		if r != nil {
			t.Errorf("%s: New(%+v) returned a round with its error", tt.name, cfg)
		}
		if !strings.Contains(err.Error(), tt.mention) {
			t.Errorf("%s: New(%+v) error = %q, want it to mention %q", tt.name, cfg, err, tt.mention)
		}
	}
	if _, err := New(validConfig()); err != nil {
		t.Errorf("New(validConfig()) = %v, want no error", err)
	}
}

func TestNewSelectsAsSelect(t *testing.T) {
	cands := names(30)
	for seed := range int64(50) {
		cfg := Config{Round: 3, Candidates: cands, Fraction: 0.2, MinPerRound: 2, Deadline: time.Minute, Seed: seed}
		want, err := Select(cands, cfg.Fraction, cfg.MinPerRound, seed, cfg.Round)
		if err != nil {
			t.Fatal(err)
		}
		r, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, r.Selected()); diff != "" {
			t.Errorf("New(seed %d).Selected() differs from Select (-Select +New):\n%s", seed, diff)
		}
		// Over-selection adds sites to the same choice.
		cfg.OverSelect = 0.5
		over, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		got := over.Selected()
		if len(got) != 9 { // ceil(6 × 1.5)
			t.Errorf("len(New(seed %d, over 0.5).Selected()) = %d, want 9", seed, len(got))
		}
		for _, s := range want {
			if !slices.Contains(got, s) {
				t.Errorf("New(seed %d, over 0.5).Selected() = %v, want it to include Select's %v", seed, got, want)
				break
			}
		}
	}
}

func TestOverSelectCapped(t *testing.T) {
	cfg := validConfig()
	cfg.OverSelect = 100
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if got := r.Selected(); len(got) != 3 {
		t.Errorf("New(3 candidates, over 100).Selected() = %v, want all 3", got)
	}
}

func TestRoundDoesNotAlias(t *testing.T) {
	cfg := validConfig()
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.Candidates[0] = "changed"
	sel := r.Selected()
	sel[0] = "changed too"
	if diff := cmp.Diff([]string{"a", "b", "c"}, r.Selected()); diff != "" {
		t.Errorf("Selected() changed through the caller's slices (-want +got):\n%s", diff)
	}
	r.Start(epoch)
	for _, s := range []string{"a", "b", "c"} {
		r.Step(epoch, UpdateReceived{Site: s, NumSamples: 1})
		r.Step(epoch, UpdateAggregated{Site: s})
	}
	o := r.Outcome()
	o.Contributors[0] = "changed"
	if got := r.Outcome().Contributors; !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Errorf("Outcome().Contributors = %v after the caller changed its copy, want [a b c]", got)
	}
}

func TestUnknownEvent(t *testing.T) {
	r, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	r.Start(epoch)
	// A pointer satisfies Event too; the round ignores it rather than
	// guessing.
	got := r.Step(epoch, &UpdateReceived{Site: "a", NumSamples: 1})
	want := []Action{Ignored{Reason: "unknown event type *round.UpdateReceived"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Step(&UpdateReceived{}) mismatch (-want +got):\n%s", diff)
	}
	if p := r.Pending(); len(p) != 3 {
		t.Errorf("Pending() = %v after an unknown event, want all 3 sites", p)
	}
}

func TestZeroTimeSkipsDeadline(t *testing.T) {
	r, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	r.Start(epoch)
	// The deadline is epoch+1m, but a zero time means "unknown", not "long
	// ago" or "far future": the update is accepted.
	got := r.Step(time.Time{}, UpdateReceived{Site: "a", NumSamples: 5})
	if diff := cmp.Diff([]Action{Aggregate{Site: "a", NumSamples: 5}}, got); diff != "" {
		t.Errorf("Step(zero time, update) mismatch (-want +got):\n%s", diff)
	}
	if got := r.Tick(time.Time{}); len(got) != 0 {
		t.Errorf("Tick(zero time) = %v, want nothing", got)
	}
}

func TestTimeGoingBack(t *testing.T) {
	r, err := New(validConfig())
	if err != nil {
		t.Fatal(err)
	}
	r.Start(epoch)
	r.Step(epoch, UpdateReceived{Site: "a", NumSamples: 5})
	r.Step(epoch, UpdateAggregated{Site: "a"})
	r.Tick(epoch.Add(time.Hour)) // the deadline passes: b and c are dropped, the round fails
	if !r.Done() {
		t.Fatalf("Done() = false after the deadline with 1 of 2 updates")
	}
	// A clock that steps back does not reopen the round.
	if got := r.Step(epoch, UpdateReceived{Site: "b", NumSamples: 5}); len(got) != 1 || got[0].(RecordSite).Status != StatusLate {
		t.Errorf("Step(earlier time, update from dropped site) = %v, want one late RecordSite", got)
	}
}

func TestStrings(t *testing.T) {
	tests := []struct {
		v    fmt.Stringer
		want string
	}{
		{StatusOK, "ok"},
		{StatusRejected, "rejected"},
		{StatusFailed, "failed"},
		{StatusDropped, "dropped"},
		{StatusLate, "late"},
		{Status(0), "Status(0)"},
		{PhaseNew, "new"},
		{PhaseRunning, "running"},
		{PhaseCommitted, "committed"},
		{PhaseFailed, "failed"},
		{Phase(9), "Phase(9)"},
	}
	for _, tt := range tests {
		if got := tt.v.String(); got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.v, got, tt.want)
		}
	}
}
