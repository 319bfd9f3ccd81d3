package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/tracking/mlflowserver"
)

// TestHelpExitsZero checks that every sub-command's --help (and -h, and
// `cohort help X`) prints its usage to stdout and exits 0.
func TestHelpExitsZero(t *testing.T) {
	cmds := [][]string{
		{"run"}, {"provision"}, {"coordinator"}, {"site"}, {"submit"}, {"jobs"},
		{"status"}, {"cancel"}, {"logs"}, {"cluster"}, {"cluster", "status"},
		{"ui"}, {"ui", "passwd"}, {"models"}, {"models", "list"}, {"compare"}, {"data"},
		{"data", "split"}, {"energy"}, {"energy", "probe"},
	}
	for _, c := range cmds {
		for _, h := range []string{"--help", "-h"} {
			args := append(slices.Clone(c), h)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var out, errOut bytes.Buffer
				err := run(context.Background(), args, &out, &errOut)
				if !errors.Is(err, flag.ErrHelp) && err != nil {
					t.Fatalf("cohort %v = %v, want the usage", args, err)
				}
				if got := exitStatus(err, &errOut); got != 0 {
					t.Errorf("cohort %v exits %d, want 0", args, got)
				}
				if !strings.Contains(out.String(), "Usage") {
					t.Errorf("cohort %v printed %q to stdout, want the usage", args, out.String())
				}
				if errOut.Len() != 0 {
					t.Errorf("cohort %v printed %q to stderr, want nothing", args, errOut.String())
				}
			})
		}
	}
	for _, args := range [][]string{{"--help"}, {"help"}, {"-h"}, {"help", "run"}} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		if exitStatus(err, &errOut) != 0 || !strings.Contains(out.String(), "Usage") {
			t.Errorf("cohort %v = %v, stdout %q; want the usage and exit 0", args, err, out.String())
		}
	}
}

func TestParseFlagsInterleaved(t *testing.T) {
	tests := []struct {
		args    []string
		db      string
		verbose bool
		pos     []string
	}{
		{[]string{"job.yaml"}, "", false, []string{"job.yaml"}},
		{[]string{"--db", "x", "job.yaml"}, "x", false, []string{"job.yaml"}},
		{[]string{"job.yaml", "--db", "x"}, "x", false, []string{"job.yaml"}},
		{[]string{"a", "-v", "b", "--db=y", "c"}, "y", true, []string{"a", "b", "c"}},
		{[]string{"a", "--", "--db", "x"}, "", false, []string{"a", "--db", "x"}},
		{[]string{"--db", "--", "a"}, "--", false, []string{"a"}},
		{[]string{"--", "-v"}, "", false, []string{"-v"}},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		db := fs.String("db", "", "")
		v := fs.Bool("v", false, "")
		if err := parseFlags(fs, tt.args, &bytes.Buffer{}); err != nil {
			t.Errorf("parseFlags(%q) = %v", tt.args, err)
			continue
		}
		if *db != tt.db || *v != tt.verbose || !slices.Equal(fs.Args(), tt.pos) {
			t.Errorf("parseFlags(%q): db %q v %v args %q, want %q %v %q", tt.args, *db, *v, fs.Args(), tt.db, tt.verbose, tt.pos)
		}
	}
	// A bad flag after the positional argument is still an error.
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var errOut bytes.Buffer
	fs.SetOutput(&errOut)
	if err := parseFlags(fs, []string{"a", "--nope"}, &bytes.Buffer{}); err == nil || !strings.Contains(errOut.String(), "nope") {
		t.Errorf("parseFlags(a --nope) = %v, stderr %q; want an error naming the flag", err, errOut.String())
	}
}

// TestRunFlagsAfterJobFile checks the issue's example: `cohort run job.yaml
// --db x` is parsed (and fails on the job, not on the arguments).
func TestRunFlagsAfterJobFile(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"run", "/no/such/job.yaml", "--db", "x.db"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "reading the job file") {
		t.Errorf("cohort run job.yaml --db x = %v, want it to read the job file", err)
	}
}

// TestUIPasswd checks that `cohort ui passwd` writes a bcrypt line that
// `cohort ui --auth basic` then loads.
func TestUIPasswd(t *testing.T) {
	t.Parallel() // bcrypt under -race takes seconds; its own file
	p := filepath.Join(t.TempDir(), "users")
	var out, errOut bytes.Buffer
	if err := passwdCmd([]string{"alice", "--file", p}, strings.NewReader("s3cret\nrest"), &out, &errOut); err != nil {
		t.Fatalf("ui passwd: %v\n%s", err, errOut.String())
	}
	b, err := os.ReadFile(p)
	if err != nil || !strings.HasPrefix(string(b), "alice:$2a$10$") {
		t.Fatalf("users file = %q, %v; want alice's bcrypt line", b, err)
	}
	a, err := mlflowserver.LoadAuth("basic", p)
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.SetBasicAuth("alice", "s3cret")
	if u, err := a.Authenticate(r); err != nil || u != "alice" {
		t.Errorf("Authenticate(alice) = %q, %v", u, err)
	}
	if err := passwdCmd([]string{"--file", p, "bob"}, strings.NewReader(""), &out, &errOut); err == nil {
		t.Error("ui passwd with an empty stdin succeeded")
	}
}
