package tracking

import (
	"errors"
	"testing"
)

func TestRunStatus(t *testing.T) {
	for _, c := range []struct {
		s               RunStatus
		valid, terminal bool
	}{
		{StatusRunning, true, false},
		{StatusScheduled, true, false},
		{StatusFinished, true, true},
		{StatusFailed, true, true},
		{StatusKilled, true, true},
		{"", false, false},
		{"finished", false, false},
	} {
		if got := c.s.Valid(); got != c.valid {
			t.Errorf("RunStatus(%q).Valid() = %v, want %v", c.s, got, c.valid)
		}
		if got := c.s.Terminal(); got != c.terminal {
			t.Errorf("RunStatus(%q).Terminal() = %v, want %v", c.s, got, c.terminal)
		}
	}
}

func TestViewTypeString(t *testing.T) {
	for v, want := range map[ViewType]string{ViewActiveOnly: "ACTIVE_ONLY", ViewDeletedOnly: "DELETED_ONLY", ViewAll: "ALL", 9: "ViewType(9)"} {
		if got := v.String(); got != want {
			t.Errorf("ViewType(%d).String() = %q, want %q", int(v), got, want)
		}
	}
}

func TestRunDataLookups(t *testing.T) {
	d := RunData{
		Metrics: []Metric{{Key: "acc", Value: 0.9}},
		Params:  []Param{{"lr", "0.1"}},
		Tags:    []Tag{{"t", "v"}},
	}
	if m, ok := d.Metric("acc"); !ok || m.Value != 0.9 {
		t.Errorf("Metric(acc) = %v, %v; want 0.9, true", m, ok)
	}
	if v, ok := d.Param("lr"); !ok || v != "0.1" {
		t.Errorf("Param(lr) = %q, %v; want \"0.1\", true", v, ok)
	}
	if v, ok := d.Tag("t"); !ok || v != "v" {
		t.Errorf("Tag(t) = %q, %v; want \"v\", true", v, ok)
	}
	if _, ok := d.Metric("x"); ok {
		t.Errorf("Metric(x) found, want missing")
	}
	if _, ok := d.Param("x"); ok {
		t.Errorf("Param(x) found, want missing")
	}
	if _, ok := d.Tag("x"); ok {
		t.Errorf("Tag(x) found, want missing")
	}
}

func TestLocalPath(t *testing.T) {
	for _, c := range []struct {
		uri, want string
		err       error
	}{
		{"file:///data/artifacts/1", "/data/artifacts/1", nil},
		{"file://localhost/data/a%20b", "/data/a b", nil},
		{"/data/mlruns/0", "/data/mlruns/0", nil}, // MLflow stores local roots as plain paths
		{"s3://bucket/0", "", ErrInvalid},
		{"mlflow-artifacts:/0", "", ErrInvalid},
		{"file://otherhost/x", "", ErrInvalid},
		{"relative/path", "", ErrInvalid},
	} {
		got, err := localPath(c.uri)
		if got != c.want || !errors.Is(err, c.err) {
			t.Errorf("localPath(%q) = %q, %v; want %q, %v", c.uri, got, err, c.want, c.err)
		}
	}
	if uri := fileURI("/data/a b#c"); uri != "file:///data/a%20b%23c" {
		t.Errorf("fileURI(\"/data/a b#c\") = %q, want file:///data/a%%20b%%23c", uri)
	}
}
