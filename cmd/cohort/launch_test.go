package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/launch/slurm"
)

// kitFolder writes a provisioned-looking folder with the given sites' kits.
func kitFolder(t *testing.T, sites ...string) string {
	t.Helper()
	dir := t.TempDir()
	for _, s := range sites {
		kit := filepath.Join(dir, "sites", s)
		if err := os.MkdirAll(kit, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(kit, "site.yaml"), []byte("name: "+s+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(dir, "sites", "not-a-kit"), 0o755); err != nil { // no site.yaml
		t.Fatal(err)
	}
	return dir
}

// fakeSlurmCmd answers sbatch, squeue and scancel from the tables and
// records the commands run.
type fakeSlurmCmd struct {
	submit       string // sbatch's stdout
	submitErr    string // sbatch's stderr; non-empty: it refuses
	states       []string
	onState      func()
	ran          []string
	submitScript string
}

func (f *fakeSlurmCmd) client() *slurm.Client {
	return &slurm.Client{Run: func(_ context.Context, stdin []byte, name string, args ...string) ([]byte, []byte, error) {
		f.ran = append(f.ran, name+" "+strings.Join(args, " "))
		switch name {
		case "sbatch":
			f.submitScript = string(stdin)
			if f.submitErr != "" {
				return nil, []byte(f.submitErr), errors.New("exit status 1")
			}
			return []byte(f.submit), nil, nil
		case "squeue":
			if f.onState != nil {
				f.onState()
			}
			s := f.states[0]
			if len(f.states) > 1 {
				f.states = f.states[1:]
			}
			return []byte(s), nil, nil
		case "scancel":
			return nil, nil, nil
		}
		return nil, nil, errors.New("unexpected command " + name)
	}}
}

func TestLaunchSlurmDryRun(t *testing.T) {
	dir := kitFolder(t, "b", "a", "c")
	tests := []struct {
		name    string
		args    []string
		want    []string // in the script
		wantErr string
	}{
		{"every site, sorted", []string{"--time", "2:00:00", "--gpus", "1", "--partition", "gpu"},
			[]string{"#SBATCH --array=0-2", "#SBATCH --time=2:00:00", "#SBATCH --gres=gpu:1", "#SBATCH --partition=gpu",
				"  '" + dir + "/sites/a'\n  '" + dir + "/sites/b'\n  '" + dir + "/sites/c'\n", "exec '/opt/cohort' site -c \"$kit/site.yaml\""}, ""},
		{"chosen sites", []string{"--sites", "c,a"}, []string{"#SBATCH --array=0-1", "  '" + dir + "/sites/c'\n  '" + dir + "/sites/a'\n"}, ""},
		{"unknown site", []string{"--sites", "a,zz"}, nil, `--sites names "zz", which has no kit under ` + dir + `/sites; the sites there are a, b, c`},
		{"site twice", []string{"--sites", "a,a"}, nil, `--sites names "a" twice`},
		{"bad time", []string{"--time", "soon"}, nil, `time "soon": use a Slurm time limit`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			f := &fakeSlurmCmd{}
			args := append([]string{"--kits", dir, "--cohort", "/opt/cohort", "--dry-run"}, tt.args...)
			err := launchSlurmCmd(context.Background(), args, &out, &errb, f.client(), time.Millisecond)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("launch slurm %q = %v, want an error containing %q", args, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("launch slurm %q = %v", args, err)
			}
			for _, w := range tt.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("script lacks %q:\n%s", w, out.String())
				}
			}
			if len(f.ran) != 0 {
				t.Errorf("--dry-run ran %q, want nothing", f.ran)
			}
		})
	}
}

func TestLaunchSlurmRefusesBadInput(t *testing.T) {
	tests := []struct {
		args    []string
		wantErr string
	}{
		{nil, "launch needs an engine"},
		{[]string{"kubernetes"}, `unknown engine "kubernetes"`},
		{[]string{"slurm"}, "--kits is required"},
		{[]string{"slurm", "--kits", t.TempDir()}, "no site kit under"},
		{[]string{"slurm", "--kits", "x", "extra"}, "takes no arguments"},
	}
	for _, tt := range tests {
		var out, errb bytes.Buffer
		err := launchCmd(context.Background(), tt.args, &out, &errb)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("launch %q = %v, want an error containing %q", tt.args, err, tt.wantErr)
		}
	}
}

func TestLaunchSlurmSubmits(t *testing.T) {
	dir := kitFolder(t, "a", "b")
	var out, errb bytes.Buffer
	f := &fakeSlurmCmd{submit: "4711;hpc\n"}
	if err := launchSlurmCmd(context.Background(), []string{"--kits", dir}, &out, &errb, f.client(), time.Millisecond); err != nil {
		t.Fatalf("launch slurm = %v", err)
	}
	if want := "submitted job 4711: 2 site agents\ncancel with: scancel 4711\n"; out.String() != want {
		t.Errorf("output = %q, want %q", out.String(), want)
	}
	self, _ := os.Executable()
	if !strings.Contains(f.submitScript, "exec "+slurm.Quote(self)+" site") {
		t.Errorf("the script does not run this binary (%s):\n%s", self, f.submitScript)
	}
}

func TestLaunchSlurmReportsRefusal(t *testing.T) {
	dir := kitFolder(t, "a")
	var out, errb bytes.Buffer
	f := &fakeSlurmCmd{submitErr: "sbatch: error: Batch job submission failed: Invalid partition name specified\n"}
	err := launchSlurmCmd(context.Background(), []string{"--kits", dir, "--partition", "gpu"}, &out, &errb, f.client(), time.Millisecond)
	if !errors.Is(err, slurm.ErrRefused) || !strings.Contains(err.Error(), "Invalid partition name specified") {
		t.Errorf("launch slurm = %v, want slurm.ErrRefused with sbatch's message", err)
	}
}

func TestLaunchSlurmWait(t *testing.T) {
	tests := []struct {
		name    string
		states  []string
		wantErr string
		wantOut string
	}{
		{"completed", []string{"PENDING\n", "RUNNING\nRUNNING\n", "COMPLETED\nCOMPLETED\n"}, "", "job 8 completed\n"},
		{"a site failed", []string{"RUNNING\nRUNNING\n", "COMPLETED\nFAILED\n"}, "job 8 ended COMPLETED FAILED; see the agents' logs (cohort-site-8_*.out)", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			f := &fakeSlurmCmd{submit: "8\n", states: tt.states}
			err := launchSlurmCmd(context.Background(), []string{"--kits", kitFolder(t, "a", "b"), "--wait"}, &out, &errb, f.client(), time.Millisecond)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("launch slurm --wait = %v, want an error containing %q", err, tt.wantErr)
				}
			} else if err != nil || !strings.HasSuffix(out.String(), tt.wantOut) {
				t.Fatalf("launch slurm --wait = %v, output %q, want it to end %q", err, out.String(), tt.wantOut)
			}
			if !strings.Contains(errb.String(), "job 8: RUNNING RUNNING\n") {
				t.Errorf("progress %q lacks the running array", errb.String())
			}
		})
	}
}

func TestLaunchSlurmWaitCancelsOnInterrupt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb bytes.Buffer
	f := &fakeSlurmCmd{submit: "9\n", states: []string{"RUNNING\n"}, onState: cancel} // Ctrl-C while it runs
	err := launchSlurmCmd(ctx, []string{"--kits", kitFolder(t, "a"), "--wait"}, &out, &errb, f.client(), time.Hour)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("launch slurm --wait, interrupted = %v, want context.Canceled", err)
	}
	if last := f.ran[len(f.ran)-1]; last != "scancel 9" {
		t.Errorf("last command %q, want scancel 9 (commands: %q)", last, f.ran)
	}
}
