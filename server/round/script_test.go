package round

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The scripts in testdata/*.txt drive a Round through scenarios. A script is
// a list of directives, each followed by a line "----" and the expected
// output, up to a blank line:
//
//	# comment
//	new candidates=a,b,c min=2 deadline=10m
//	----
//	selected: a b c
//
//	update a n=100 t=3s
//	----
//	aggregate a n=100
//
// Times are offsets from an arbitrary epoch; a directive without t= happens
// at the time of the previous one. Directives:
//
//	new [round=N] [candidates=a,b] [fraction=F] [min=N] [deadline=D] [seed=N] [over=F]
//	start [t=D]
//	update SITE [n=N] [t=D]            UpdateReceived (n defaults to 100)
//	aggregated SITE [t=D]              UpdateAggregated
//	reject SITE [reason=R] [t=D]       UpdateRejected
//	fail SITE [reason=R] [t=D]         SiteFailed
//	disconnect SITE [t=D]              SiteDisconnected
//	cancel [reason=R] [t=D]            Cancel
//	tick [t=D]                         Tick
//	state                              the round's queries
//
// Run with -rewrite to replace the expected outputs with the actual ones,
// then read the diff.
var rewrite = flag.Bool("rewrite", false, "rewrite the expected outputs of testdata/*.txt")

// epoch is the time t=0 of the scripts.
var epoch = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no scripts in testdata/*.txt")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			runScript(t, file)
		})
	}
}

// scriptState is what the directives of one script share.
type scriptState struct {
	r   *Round
	now time.Time
}

func runScript(t *testing.T, file string) {
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var out []string // the rewritten file
	st := &scriptState{now: epoch}
	for i := 0; i < len(lines); {
		line := lines[i]
		if strings.TrimSpace(line) == "" || strings.HasPrefix(line, "#") {
			out = append(out, line)
			i++
			continue
		}
		at := fmt.Sprintf("%s:%d", file, i+1)
		if i+1 >= len(lines) || lines[i+1] != "----" {
			t.Fatalf("%s: directive %q is not followed by a line \"----\"", at, line)
		}
		j := i + 2
		for j < len(lines) && strings.TrimSpace(lines[j]) != "" {
			j++
		}
		want := strings.Join(lines[i+2:j], "\n")
		got, err := st.run(line)
		if err != nil {
			t.Fatalf("%s: %v", at, err)
		}
		if got != want && !*rewrite {
			t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", at, line, got, want)
		}
		out = append(out, line, "----", got)
		i = j
	}
	if *rewrite {
		if err := os.WriteFile(file, []byte(strings.Join(out, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// run executes one directive and renders its output.
func (st *scriptState) run(line string) (string, error) {
	cmd, pos, kv, err := parseDirective(line)
	if err != nil {
		return "", err
	}
	arg := func(key, def string) string {
		if v, ok := kv[key]; ok {
			delete(kv, key)
			return v
		}
		return def
	}
	site := ""
	if len(pos) > 0 {
		site = pos[0]
	}
	if cmd == "new" {
		cfg, err := parseConfig(arg)
		if err != nil {
			return "", err
		}
		if len(kv) > 0 || len(pos) > 0 {
			return "", fmt.Errorf("unknown arguments %v %v", pos, kv)
		}
		st.r, err = New(cfg)
		if err != nil {
			st.r = nil
			return renderError("error", err), nil
		}
		return "selected: " + strings.Join(st.r.Selected(), " "), nil
	}
	if st.r == nil {
		return "", fmt.Errorf("%s before a successful new", cmd)
	}
	if v, ok := kv["t"]; ok {
		d, err := time.ParseDuration(v)
		if err != nil {
			return "", fmt.Errorf("t=%s: %w", v, err)
		}
		st.now = epoch.Add(d)
		delete(kv, "t")
	}
	needSite := func() error {
		if len(pos) != 1 {
			return fmt.Errorf("%s takes one site, got %v", cmd, pos)
		}
		return nil
	}
	var acts []Action
	switch cmd {
	case "start":
		acts = st.r.Start(st.now)
	case "update":
		if err := needSite(); err != nil {
			return "", err
		}
		n, err := strconv.ParseInt(arg("n", "100"), 10, 64)
		if err != nil {
			return "", fmt.Errorf("n: %w", err)
		}
		acts = st.r.Step(st.now, UpdateReceived{Site: site, NumSamples: n})
	case "aggregated":
		if err := needSite(); err != nil {
			return "", err
		}
		acts = st.r.Step(st.now, UpdateAggregated{Site: site})
	case "reject":
		if err := needSite(); err != nil {
			return "", err
		}
		acts = st.r.Step(st.now, UpdateRejected{Site: site, Reason: arg("reason", "NaN in layer fc1.weight")})
	case "fail":
		if err := needSite(); err != nil {
			return "", err
		}
		acts = st.r.Step(st.now, SiteFailed{Site: site, Reason: arg("reason", "CUDA out of memory")})
	case "disconnect":
		if err := needSite(); err != nil {
			return "", err
		}
		acts = st.r.Step(st.now, SiteDisconnected{Site: site})
	case "cancel":
		acts = st.r.Step(st.now, Cancel{Reason: arg("reason", "job canceled by admin")})
	case "tick":
		acts = st.r.Tick(st.now)
	case "state":
		return renderState(st.r), nil
	default:
		return "", fmt.Errorf("unknown directive %q", cmd)
	}
	if len(kv) > 0 {
		return "", fmt.Errorf("unknown arguments %v", kv)
	}
	return renderActions(acts), nil
}

func parseConfig(arg func(key, def string) string) (Config, error) {
	var cfg Config
	var err error
	if cfg.Round, err = strconv.Atoi(arg("round", "1")); err != nil {
		return cfg, fmt.Errorf("round: %w", err)
	}
	if c := arg("candidates", "a,b,c"); c != "" {
		cfg.Candidates = strings.Split(c, ",")
	}
	if cfg.Fraction, err = strconv.ParseFloat(arg("fraction", "1"), 64); err != nil {
		return cfg, fmt.Errorf("fraction: %w", err)
	}
	if cfg.MinPerRound, err = strconv.Atoi(arg("min", "1")); err != nil {
		return cfg, fmt.Errorf("min: %w", err)
	}
	if cfg.Deadline, err = time.ParseDuration(arg("deadline", "10m")); err != nil {
		return cfg, fmt.Errorf("deadline: %w", err)
	}
	if cfg.Seed, err = strconv.ParseInt(arg("seed", "42"), 10, 64); err != nil {
		return cfg, fmt.Errorf("seed: %w", err)
	}
	if cfg.OverSelect, err = strconv.ParseFloat(arg("over", "0"), 64); err != nil {
		return cfg, fmt.Errorf("over: %w", err)
	}
	return cfg, nil
}

// parseDirective splits a directive into its command, positional arguments
// and key=value arguments; a value may be a Go-quoted string.
func parseDirective(line string) (cmd string, pos []string, kv map[string]string, err error) {
	var fields []string
	for rest := strings.TrimSpace(line); rest != ""; rest = strings.TrimSpace(rest) {
		end := 0
		for end < len(rest) && rest[end] != ' ' {
			if rest[end] == '"' {
				q, err := strconv.QuotedPrefix(rest[end:])
				if err != nil {
					return "", nil, nil, fmt.Errorf("bad quoted string in %q: %w", rest, err)
				}
				end += len(q)
				continue
			}
			end++
		}
		fields = append(fields, rest[:end])
		rest = rest[end:]
	}
	kv = map[string]string{}
	for _, f := range fields[1:] {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			pos = append(pos, f)
			continue
		}
		if strings.HasPrefix(v, `"`) {
			if v, err = strconv.Unquote(v); err != nil {
				return "", nil, nil, fmt.Errorf("%s: %w", k, err)
			}
		}
		kv[k] = v
	}
	return fields[0], pos, kv, nil
}

func renderActions(acts []Action) string {
	if len(acts) == 0 {
		return "(none)"
	}
	lines := make([]string, len(acts))
	for i, a := range acts {
		lines[i] = renderAction(a)
	}
	return strings.Join(lines, "\n")
}

func renderAction(a Action) string {
	switch a := a.(type) {
	case SendTask:
		return "send-task " + a.Site
	case SetTimer:
		return "set-timer t=" + a.At.Sub(epoch).String()
	case Aggregate:
		return fmt.Sprintf("aggregate %s n=%d", a.Site, a.NumSamples)
	case CancelTask:
		return fmt.Sprintf("cancel-task %s reason=%q", a.Site, a.Reason)
	case RecordSite:
		if a.Reason == "" {
			return fmt.Sprintf("record %s %s", a.Site, a.Status)
		}
		return fmt.Sprintf("record %s %s reason=%q", a.Site, a.Status, a.Reason)
	case Ignored:
		if a.Site == "" {
			return fmt.Sprintf("ignored reason=%q", a.Reason)
		}
		return fmt.Sprintf("ignored %s reason=%q", a.Site, a.Reason)
	case Commit:
		return fmt.Sprintf("commit contributors=%v samples=%d failed=%v dropped=%v", a.Contributors, a.NumSamples, a.Failed, a.Dropped)
	case Fail:
		return renderError("fail", a.Err)
	}
	return fmt.Sprintf("unknown action %#v", a)
}

// renderError renders err one line per joined problem, each labelled with
// the sentinels it wraps.
func renderError(prefix string, err error) string {
	var labels []string
	for _, s := range []struct {
		name string
		err  error
	}{
		{"invalid-config", ErrInvalidConfig},
		{"not-enough-sites", ErrNotEnoughSites},
		{"quorum-unreachable", ErrQuorumUnreachable},
		{"deadline-exceeded", ErrDeadlineExceeded},
		{"canceled", ErrCanceled},
	} {
		if errors.Is(err, s.err) {
			labels = append(labels, s.name)
		}
	}
	var lines []string
	for _, l := range strings.Split(err.Error(), "\n") {
		lines = append(lines, fmt.Sprintf("%s %v: %s", prefix, labels, l))
	}
	return strings.Join(lines, "\n")
}

func renderState(r *Round) string {
	o := r.Outcome()
	lines := []string{
		"phase: " + o.Phase.String(),
		fmt.Sprintf("selected: %v", r.Selected()),
		fmt.Sprintf("pending: %v", r.Pending()),
		fmt.Sprintf("done: %v", r.Done()),
	}
	if !r.Deadline().IsZero() {
		lines = append(lines, "deadline: t="+r.Deadline().Sub(epoch).String())
	}
	if r.Done() {
		lines = append(lines, fmt.Sprintf("outcome: contributors=%v samples=%d failed=%v dropped=%v", o.Contributors, o.NumSamples, o.Failed, o.Dropped))
		if o.Err != nil {
			lines = append(lines, renderError("err", o.Err))
		}
	}
	return strings.Join(lines, "\n")
}
