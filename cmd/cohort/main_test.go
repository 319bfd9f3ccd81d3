package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/tracking"
)

// TestRunQuickExample runs the README's first command end to end: the
// shipped quick job over real loopback TCP, through the sub-command.
func TestRunQuickExample(t *testing.T) {
	t.Parallel() // in process, on its own database; beside the process tests
	var out, errOut bytes.Buffer
	db := filepath.Join(t.TempDir(), "cohort.db")
	err := run(context.Background(), []string{"run", "--db", db, "../../examples/fashion-mnist/quick.yaml"}, &out, &errOut)
	if err != nil {
		t.Fatalf("cohort run: %v\nstdout:\n%s\nstderr:\n%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{"arm centralized", "arm fedavg", "arm fedprox", "final acc", "acc/kJ", "tracking: " + db} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}

	// cohort compare reads the same job back by its experiment's name.
	out.Reset()
	img := filepath.Join(t.TempDir(), "cmp.svg")
	if err := run(context.Background(), []string{"compare", "--db", db, "--out", img, "fashion-mnist-quick"}, &out, &errOut); err != nil {
		t.Fatalf("cohort compare: %v\n%s", err, errOut.String())
	}
	for _, want := range []string{"centralized", "fedavg", "fedprox", "final acc", "plot: " + img} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("compare output lacks %q:\n%s", want, out.String())
		}
	}
	if b, err := os.ReadFile(img); err != nil || !strings.Contains(string(b), "fedprox") {
		t.Errorf("compare's plot %s: %v, or it lacks the fedprox series", img, err)
	}
	// The job run keeps the plot as an artifact.
	store, err := tracking.OpenSQLite(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	id := strings.Fields(strings.TrimPrefix(strings.SplitN(out.String(), "\n", 2)[0], "job run "))[0]
	rc, err := store.OpenArtifact(context.Background(), id, "comparison.png")
	if err != nil {
		t.Fatalf("job run %s has no comparison.png: %v", id, err)
	}
	rc.Close()
}

func TestCommandErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{nil, "no command"},
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{"run"}, "one job file"},
		{[]string{"run", "/no/such/job.yaml"}, "reading the job file"},
		{[]string{"run", "--log-level", "loud", "../../examples/fashion-mnist/quick.yaml"}, "--log-level"},
		{[]string{"energy"}, "energy probe"},
		{[]string{"energy", "probe", "--seconds", "0"}, "--seconds"},
		{[]string{"coordinator", "-c", "/no/such/coordinator.yaml"}, "coordinator.yaml"},
		{[]string{"site", "-c", "/no/such/site.yaml"}, "site.yaml"},
		{[]string{"submit", "-c", "/no/such/admin.yaml", "../../examples/fashion-mnist/quick.yaml"}, "admin.yaml"},
		{[]string{"submit", "-c", "/no/such/admin.yaml"}, "one job file"},
		// The job file is checked before the coordinator is dialled, with
		// its problems at FILE:LINE:COL.
		{[]string{"submit", "-c", "/no/such/admin.yaml", "testdata/typo.yaml"}, `testdata/typo.yaml:3:1: unknown key "round"`},
		{[]string{"status"}, "one job ID"},
		{[]string{"jobs", "-c", "/no/such/admin.yaml"}, "admin.yaml"},
		{[]string{"data"}, "split"},
		{[]string{"compare"}, "one job run ID"},
		{[]string{"compare", "--db", "/no/such.db", "x"}, "/no/such.db"},
		{[]string{"compare", "--out", "x.gif", "x"}, ".png or .svg"},
		{[]string{"data", "split", "--out", "x"}, "at least one site"},
		{[]string{"data", "split", "--out", "x", "../up"}, "folder name"},
		{[]string{"ui", "--auth", "magic"}, "magic"},
	}
	for _, tt := range tests {
		var out, errOut bytes.Buffer
		err := run(context.Background(), tt.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("cohort %v = %v, want an error mentioning %q", tt.args, err, tt.want)
		}
	}
}

func TestEnergyProbe(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"energy", "probe", "--seconds", "0.2"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"energy sources:", "nvml", "rapl", "estimate", "measured energy:"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("probe output lacks %q:\n%s", want, out.String())
		}
	}
}
