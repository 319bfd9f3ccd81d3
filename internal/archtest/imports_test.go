package archtest

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/cohortfl/cohort"

type pkg struct {
	ImportPath string
	Imports    []string
}

// rules lists, per package prefix (relative to the module), the module
// packages and third-party prefixes it must not import.
var rules = []struct {
	pkg       string
	forbidden []string
	allowed   []string // exceptions under a forbidden prefix
}{
	{"server", []string{"client", "cmd", "internal", "deploy"}, []string{"internal/hclogslog"}},
	// deploy and job decode their files with the one strict-YAML decoder.
	{"deploy", []string{"model", "aggregators", "server", "client", "tracking", "job", "energy", "proto", "internal"}, []string{"internal/strictyaml"}},
	{"client", []string{"server", "cmd", "internal", "tracking", "deploy"}, nil},
	{"train", []string{"server", "client", "cmd", "internal", "tracking", "deploy", "aggregators", "job"}, nil},
	{"data", []string{"server", "client", "cmd", "internal", "tracking", "deploy", "aggregators", "job", "train", "model", "energy"}, nil},
	{"model", []string{"aggregators", "server", "client", "tracking", "job", "energy", "proto", "internal"}, nil},
	{"aggregators", []string{"server", "client", "tracking", "job", "energy", "proto", "internal"}, nil},
	{"energy", []string{"model", "aggregators", "server", "client", "tracking", "job", "proto", "internal"}, nil},
	{"tracking", []string{"model", "aggregators", "server", "client", "job", "energy", "proto", "internal"}, nil},
	{"job", []string{"model", "aggregators", "server", "client", "tracking", "energy", "proto", "internal"}, []string{"internal/strictyaml"}},
	{"proto", []string{"model", "aggregators", "server", "client", "tracking", "job", "energy", "internal"}, nil},
}

// gorgonia stays inside train.
const gorgonia = "gorgonia.org/"

func TestImportRules(t *testing.T) {
	out, err := exec.Command("go", "list", "-json", module+"/...").Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	var n int
	for {
		var p pkg
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("decoding go list output: %v", err)
		}
		n++
		rel := strings.TrimPrefix(strings.TrimPrefix(p.ImportPath, module), "/")
		for _, imp := range p.Imports {
			if strings.HasPrefix(imp, gorgonia) && !under(rel, "train") {
				t.Errorf("%s imports %s: gorgonia stays inside train; pass model.Weights across packages", rel, imp)
			}
			if !strings.HasPrefix(imp, module+"/") {
				continue
			}
			irel := strings.TrimPrefix(imp, module+"/")
			for _, r := range rules {
				if !under(rel, r.pkg) {
					continue
				}
				for _, f := range r.forbidden {
					if under(irel, f) && !under(irel, r.pkg) && !slices.ContainsFunc(r.allowed, func(a string) bool { return under(irel, a) }) {
						t.Errorf("%s imports %s: %s must not depend on %s (see DESIGN.md, Layout)", rel, irel, r.pkg, f)
					}
				}
			}
		}
	}
	if n < 8 {
		t.Fatalf("go list found %d packages; want the whole module", n)
	}
}

func under(path, prefix string) bool {
	return path == prefix || strings.HasPrefix(path, prefix+"/")
}

func TestUnder(t *testing.T) {
	tests := []struct {
		path, prefix string
		want         bool
	}{
		{"server", "server", true},
		{"server/round", "server", true},
		{"serverless", "server", false},
		{"client/agent", "client", true},
		{"cmd/cohort", "client", false},
	}
	for _, tt := range tests {
		if got := under(tt.path, tt.prefix); got != tt.want {
			t.Errorf("under(%q, %q) = %v, want %v", tt.path, tt.prefix, got, tt.want)
		}
	}
}
