package hclogslog

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/go-hclog"
)

func records(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if line == "" {
			continue
		}
		m := map[string]any{}
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("decoding %q: %v", line, err)
		}
		delete(m, "time")
		delete(m, "source")
		out = append(out, m)
	}
	return out
}

func newJSON(buf *bytes.Buffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: LevelTrace}))
}

func TestDefaultLevelDropsDebug(t *testing.T) {
	var buf bytes.Buffer
	l := New(newJSON(&buf), Options{Name: "raft"})
	l.Trace("t")
	l.Debug("d", "k", 1)
	l.Info("entering follower state", "id", "a", "err", errors.New("boom"))
	l.Warn("w")
	l.Log(hclog.Error, "e")
	got := records(t, &buf)
	want := []map[string]any{
		{"level": "INFO", "msg": "entering follower state", "logger": "raft", "id": "a", "err": "boom"},
		{"level": "WARN", "msg": "w", "logger": "raft"},
		{"level": "ERROR", "msg": "e", "logger": "raft"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if l.IsDebug() || !l.IsInfo() {
		t.Errorf("IsDebug, IsInfo = %v, %v, want false, true", l.IsDebug(), l.IsInfo())
	}
}

func TestDerivedLoggersShareLevelAndArgs(t *testing.T) {
	var buf bytes.Buffer
	root := New(newJSON(&buf), Options{Name: "raft", Level: hclog.Warn})
	child := root.Named("net").With("node", "a")
	child.Info("dropped")
	root.SetLevel(hclog.Debug)
	child.Debug("kept", "n", hclog.Hex(255), "f", hclog.Fmt("%d-%s", 1, "x"), "odd")
	got := records(t, &buf)
	want := []map[string]any{
		{"level": "DEBUG", "msg": "kept", "logger": "raft.net", "node": "a", "n": "0xff", "f": "1-x", "EXTRA_VALUE_AT_END": "odd"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
	if got := child.GetLevel(); got != hclog.Debug {
		t.Errorf("child.GetLevel() = %v, want %v", got, hclog.Debug)
	}
	if got := root.ResetNamed("x").Name(); got != "x" {
		t.Errorf("ResetNamed(x).Name() = %q, want x", got)
	}
	if diff := cmp.Diff([]any{"node", "a"}, child.ImpliedArgs()); diff != "" {
		t.Errorf("ImpliedArgs (-want +got):\n%s", diff)
	}
}

func TestHandlerLevelApplies(t *testing.T) {
	var buf bytes.Buffer
	sl := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelError}))
	l := New(sl, Options{Level: hclog.Trace})
	l.Warn("w")
	if buf.Len() != 0 || l.IsWarn() {
		t.Errorf("a WARN record passed a handler at ERROR: %q", buf.String())
	}
	off := New(newJSON(&buf), Options{Level: hclog.Off})
	off.Error("e")
	if buf.Len() != 0 {
		t.Errorf("an Off logger wrote %q", buf.String())
	}
	New(nil, Options{}).Error("nil slog logger discards")
}

func TestStandardLogger(t *testing.T) {
	var buf bytes.Buffer
	l := New(newJSON(&buf), Options{})
	std := l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
	std.Print("[WARN] raft: heartbeat slow")
	std.Print("plain line")
	std.Print("[DEBUG] hidden")
	got := records(t, &buf)
	want := []map[string]any{
		{"level": "WARN", "msg": "raft: heartbeat slow"},
		{"level": "INFO", "msg": "plain line"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}
