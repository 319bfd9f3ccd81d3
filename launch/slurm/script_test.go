package slurm

import (
	"flag"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

func TestScriptGolden(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"minimal", Options{Kits: []string{"kits/sites/a"}}},
		{"full", Options{
			Kits:   []string{"/srv/kits/sites/hospital-a", "/srv/kits/sites/hospital-b", "/srv/kits/sites/lab-c"},
			Cohort: "/opt/cohort/bin/cohort", JobName: "fl-sites", Partition: "gpu", Time: "1:00:00",
			CPUsPerTask: 4, GPUs: 2, Output: "/scratch/logs/",
		}},
		{"hostile_kit_paths", Options{Kits: []string{"kits/my site", `it's "quoted"`, "$(touch pwned)`id`;rm -rf /", "line\nbreak"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Script(tt.opts)
			if err != nil {
				t.Fatalf("Script = %v, want a script", err)
			}
			golden := filepath.Join("testdata", tt.name+".sbatch")
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("Script(%s) =\n%s\nwant (%s)\n%s", tt.name, got, golden, want)
			}
		})
	}
}

// TestScriptQuotesKits runs the script's body under bash with a fake cohort
// and checks every array task hands its kit path over byte for byte, and
// that no path is executed.
func TestScriptQuotesKits(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash on PATH: the script's quoting cannot be run")
	}
	dir := t.TempDir()
	fake := filepath.Join(dir, "fake cohort's")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\0' \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	kits := []string{"kits/my site", `it's "quoted"`, "$(touch " + dir + "/pwned)`touch " + dir + "/pwned2`;x", "line\nbreak", `back\slash $HOME`}
	script, err := Script(Options{Kits: kits, Cohort: fake})
	if err != nil {
		t.Fatal(err)
	}
	for i, k := range kits {
		cmd := exec.Command(bash, "-c", string(script))
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "SLURM_ARRAY_TASK_ID="+string(rune('0'+i)))
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("task %d: bash: %v", i, err)
		}
		args := strings.Split(strings.TrimSuffix(string(out), "\x00"), "\x00")
		want := []string{"site", "-c", k + "/site.yaml"}
		if strings.Join(args, "|") != strings.Join(want, "|") {
			t.Errorf("task %d: cohort got %q, want %q", i, args, want)
		}
	}
	for _, f := range []string{"pwned", "pwned2"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			t.Errorf("a kit path ran a command (%s exists)", f)
		}
	}
}

func TestScriptRefusesBadOptions(t *testing.T) {
	ok := []string{"kits/sites/a"}
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no kits", Options{}, "kits: no site kit given"},
		{"empty kit", Options{Kits: []string{""}}, "kits[0]"},
		{"job name with space", Options{Kits: ok, JobName: "my job"}, `job name "my job"`},
		{"partition injects a line", Options{Kits: ok, Partition: "gpu\n#SBATCH --uid=0"}, "partition"},
		{"time in words", Options{Kits: ok, Time: "an hour"}, `time "an hour"`},
		{"time with seconds only wrong", Options{Kits: ok, Time: "1:00:00:00"}, "time"},
		{"negative gpus", Options{Kits: ok, GPUs: -1}, "gpus -1 is negative"},
		{"negative cpus", Options{Kits: ok, CPUsPerTask: -2}, "cpus per task -2"},
		{"output with space", Options{Kits: ok, Output: "/my logs"}, `output "/my logs"`},
		{"output with %", Options{Kits: ok, Output: "/logs/%j"}, "output"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Script(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Script(%+v) = %v, want an error containing %q", tt.opts, err, tt.want)
			}
		})
	}
}

func TestScriptTimeFormats(t *testing.T) {
	for _, tm := range []string{"90", "90:30", "1:00:00", "2-0", "2-00:00", "2-00:00:00"} {
		if _, err := Script(Options{Kits: []string{"k"}, Time: tm}); err != nil {
			t.Errorf("Script(Time: %q) = %v, want a script", tm, err)
		}
	}
}
