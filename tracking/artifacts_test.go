package tracking

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func readArtifact(t *testing.T, s *SQLiteStore, run, rel string) string {
	t.Helper()
	rc, err := s.OpenArtifact(context.Background(), run, rel)
	if err != nil {
		t.Fatalf("OpenArtifact(%q) = %v", rel, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestArtifacts(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	run := mustCreateRun(t, s, CreateRun{})
	id := run.Info.RunID
	for rel, body := range map[string]string{
		"comparison.txt":         "table",
		"plots/accuracy.svg":     "<svg/>",
		"plots/deep/energy.json": "{}",
		"./plots//loss.svg":      "<svg>loss</svg>", // cleaned to plots/loss.svg
	} {
		if err := s.LogArtifact(ctx, id, rel, strings.NewReader(body)); err != nil {
			t.Fatalf("LogArtifact(%q) = %v", rel, err)
		}
	}
	// Files land under <root>/<experiment>/<run>/artifacts.
	onDisk := filepath.Join(s.root, "0", id, "artifacts", "plots", "accuracy.svg")
	if b, err := os.ReadFile(onDisk); err != nil || string(b) != "<svg/>" {
		t.Errorf("ReadFile(%s) = %q, %v; want \"<svg/>\"", onDisk, b, err)
	}
	if err := s.LogArtifact(ctx, id, "comparison.txt", strings.NewReader("new table")); err != nil {
		t.Fatalf("LogArtifact(overwrite) = %v", err)
	}
	if got := readArtifact(t, s, id, "comparison.txt"); got != "new table" {
		t.Errorf("OpenArtifact(comparison.txt) after overwrite = %q, want \"new table\"", got)
	}
	if got := readArtifact(t, s, id, "plots/loss.svg"); got != "<svg>loss</svg>" {
		t.Errorf("OpenArtifact(plots/loss.svg) = %q", got)
	}

	for _, c := range []struct {
		dir  string
		want []FileInfo
	}{
		{"", []FileInfo{{"comparison.txt", false, 9}, {"plots", true, 0}}},
		{"plots", []FileInfo{{"plots/accuracy.svg", false, 6}, {"plots/deep", true, 0}, {"plots/loss.svg", false, 15}}},
		{"plots/deep/", []FileInfo{{"plots/deep/energy.json", false, 2}}},
		{"nope", nil},
		{"comparison.txt", nil},
	} {
		got, err := s.ListArtifacts(ctx, id, c.dir)
		if err != nil {
			t.Errorf("ListArtifacts(%q) = %v", c.dir, err)
			continue
		}
		if diff := cmp.Diff(c.want, got); diff != "" {
			t.Errorf("ListArtifacts(%q) mismatch (-want +got):\n%s", c.dir, diff)
		}
	}
	if _, err := s.OpenArtifact(ctx, id, "missing.txt"); !errors.Is(err, ErrNotFound) {
		t.Errorf("OpenArtifact(missing) = %v, want ErrNotFound", err)
	}
	if _, err := s.OpenArtifact(ctx, id, "plots"); !errors.Is(err, ErrInvalid) {
		t.Errorf("OpenArtifact(directory) = %v, want ErrInvalid", err)
	}
	missing := "0123456789abcdef0123456789abcdef"
	if err := s.LogArtifact(ctx, missing, "a", strings.NewReader("")); !errors.Is(err, ErrNotFound) {
		t.Errorf("LogArtifact(missing run) = %v, want ErrNotFound", err)
	}
	if _, err := s.ListArtifacts(ctx, missing, ""); !errors.Is(err, ErrNotFound) {
		t.Errorf("ListArtifacts(missing run) = %v, want ErrNotFound", err)
	}
	// A run that never logged an artifact lists as empty.
	empty := mustCreateRun(t, s, CreateRun{}).Info.RunID
	if got, err := s.ListArtifacts(ctx, empty, ""); err != nil || len(got) != 0 {
		t.Errorf("ListArtifacts(new run) = %v, %v; want empty", got, err)
	}
}

func TestArtifactPathEscapes(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	id := mustCreateRun(t, s, CreateRun{}).Info.RunID
	outside := t.TempDir()
	for _, p := range []string{
		"../x", "/etc/passwd", "a/../../x", "a/../b", "..", "", ".", "./", "a\\..\\x", "x\x00y",
		"../../../../../../tmp/evil", ".cohort-tmp-123",
	} {
		if err := s.LogArtifact(ctx, id, p, strings.NewReader("evil")); !errors.Is(err, ErrInvalid) {
			t.Errorf("LogArtifact(%q) = %v, want ErrInvalid", p, err)
		}
		if _, err := s.OpenArtifact(ctx, id, p); !errors.Is(err, ErrInvalid) {
			t.Errorf("OpenArtifact(%q) = %v, want ErrInvalid", p, err)
		}
		if p == "" || p == "." || p == "./" {
			continue // the root: valid for ListArtifacts
		}
		if _, err := s.ListArtifacts(ctx, id, p); !errors.Is(err, ErrInvalid) {
			t.Errorf("ListArtifacts(%q) = %v, want ErrInvalid", p, err)
		}
	}
	// A symbolic link inside the artifacts cannot lead outside.
	if err := s.LogArtifact(ctx, id, "ok.txt", strings.NewReader("ok")); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(s.root, "0", id, "artifacts")
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := s.LogArtifact(ctx, id, "link/escaped.txt", strings.NewReader("evil")); err == nil {
		t.Errorf("LogArtifact through a symlink out of the run's artifacts = nil error, want one")
	}
	if _, err := os.Stat(filepath.Join(outside, "escaped.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file appeared outside the artifacts: Stat = %v", err)
	}
	if err := os.WriteFile(filepath.Join(outside, "secret"), []byte("s"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.OpenArtifact(ctx, id, "link/secret"); err == nil {
		t.Errorf("OpenArtifact through a symlink out of the run's artifacts = nil error, want one")
	}
}

func TestLogArtifactFailureLeavesNothing(t *testing.T) {
	s, _ := openStore(t)
	id := mustCreateRun(t, s, CreateRun{}).Info.RunID
	ctx := context.Background()
	if err := s.LogArtifact(ctx, id, "model.bin", strings.NewReader("old")); err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	r := io.MultiReader(strings.NewReader("partial"), errReader{boom})
	if err := s.LogArtifact(ctx, id, "model.bin", r); !errors.Is(err, boom) {
		t.Errorf("LogArtifact(failing reader) = %v, want boom", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.LogArtifact(cctx, id, "model.bin", strings.NewReader("new")); !errors.Is(err, context.Canceled) {
		t.Errorf("LogArtifact(cancelled) = %v, want context.Canceled", err)
	}
	if got := readArtifact(t, s, id, "model.bin"); got != "old" {
		t.Errorf("model.bin after failed writes = %q, want \"old\"", got)
	}
	entries, _ := os.ReadDir(filepath.Join(s.root, "0", id, "artifacts"))
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("artifact dir holds %v after failed writes, want only model.bin", names)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
