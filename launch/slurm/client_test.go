package slurm

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// call is one command a fake runner answers.
type call struct {
	cmd            string // name and args joined by spaces
	stdout, stderr string
	err            error
}

// fakeSlurm answers the calls in order and fails the test on any other.
func fakeSlurm(t *testing.T, calls ...call) *Client {
	t.Helper()
	i := 0
	return &Client{Run: func(_ context.Context, stdin []byte, name string, args ...string) ([]byte, []byte, error) {
		got := strings.Join(append([]string{name}, args...), " ")
		if i >= len(calls) {
			t.Fatalf("unexpected command %q", got)
		}
		c := calls[i]
		i++
		if got != c.cmd {
			t.Fatalf("command %d = %q, want %q", i, got, c.cmd)
		}
		return []byte(c.stdout), []byte(c.stderr), c.err
	}}
}

var exit1 = errors.New("exit status 1")

func TestSubmit(t *testing.T) {
	tests := []struct {
		name    string
		answer  call
		want    string
		wantErr string
		refused bool
	}{
		{"id", call{stdout: "4242\n"}, "4242", "", false},
		{"id and cluster", call{stdout: "4242;hpc\n"}, "4242", "", false},
		{"warning first", call{stdout: "sbatch: warning: something\n17\n"}, "17", "", false},
		{"partition refused", call{stderr: "sbatch: error: invalid partition specified: gpu\nsbatch: error: Batch job submission failed: Invalid partition name specified\n", err: exit1},
			"", "invalid partition specified: gpu", true},
		{"no controller", call{stderr: "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)\n", err: exit1},
			"", "Unable to contact slurm controller", true},
		{"not slurm", call{stdout: "hello\n"}, "", `holds no job id`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.answer.cmd = "sbatch --parsable"
			id, err := fakeSlurm(t, tt.answer).Submit(context.Background(), []byte("#!/bin/bash\n"))
			if tt.wantErr == "" {
				if err != nil || id != tt.want {
					t.Fatalf("Submit = %q, %v, want %q", id, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Submit = %q, %v, want an error containing %q", id, err, tt.wantErr)
			}
			if errors.Is(err, ErrRefused) != tt.refused {
				t.Errorf("errors.Is(%v, ErrRefused) = %v, want %v", err, !tt.refused, tt.refused)
			}
		})
	}
}

func TestCancel(t *testing.T) {
	if err := fakeSlurm(t, call{cmd: "scancel 12"}).Cancel(context.Background(), "12"); err != nil {
		t.Errorf("Cancel(12) = %v, want nil", err)
	}
	err := fakeSlurm(t, call{cmd: "scancel 12", stderr: "scancel: error: Kill job error on job id 12: Access/permission denied\n", err: exit1}).Cancel(context.Background(), "12")
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "Access/permission denied") {
		t.Errorf("Cancel refused = %v, want ErrRefused with scancel's message", err)
	}
	if err := fakeSlurm(t).Cancel(context.Background(), "12; rm -rf /"); err == nil {
		t.Error("Cancel(\"12; rm -rf /\") = nil, want an error before any command runs")
	}
}

func TestState(t *testing.T) {
	const sq, sa = "squeue -h -t all -j 7 -o %T", "sacct -n -X -P -j 7 -o State"
	tests := []struct {
		name    string
		calls   []call
		want    []string
		unknown bool
	}{
		{"running array", []call{{cmd: sq, stdout: "RUNNING\nRUNNING\nPENDING\n"}}, []string{"RUNNING", "RUNNING", "PENDING"}, false},
		{"squeue forgot, sacct", []call{{cmd: sq, stderr: "slurm_load_jobs error: Invalid job id specified", err: exit1}, {cmd: sa, stdout: "COMPLETED\nCANCELLED by 0\n"}},
			[]string{"COMPLETED", "CANCELLED"}, false},
		{"squeue empty, sacct", []call{{cmd: sq}, {cmd: sa, stdout: "FAILED\n"}}, []string{"FAILED"}, false},
		{"nobody knows", []call{{cmd: sq, err: exit1}, {cmd: sa}}, nil, true},
		{"no accounting", []call{{cmd: sq, err: exit1}, {cmd: sa, stderr: "Slurm accounting storage is disabled", err: exit1}}, nil, true},
		{"no controller", []call{{cmd: sq, stderr: "slurm_load_jobs error: Unable to contact slurm controller (connect failure)", err: exit1}, {cmd: sa, stderr: "sacct: error: Problem talking to the database", err: exit1}}, []string{"Unable to contact slurm controller"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := fakeSlurm(t, tt.calls...).State(context.Background(), "7")
			if tt.unknown {
				if !errors.Is(err, ErrUnknownJob) {
					t.Fatalf("State = %v, %v, want ErrUnknownJob", got, err)
				}
				for _, w := range tt.want { // what the error must say
					if !strings.Contains(err.Error(), w) {
						t.Errorf("State error %q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil || fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Fatalf("State = %v, %v, want %v", got, err, tt.want)
			}
		})
	}
}

func TestDone(t *testing.T) {
	tests := []struct {
		states []string
		want   bool
	}{
		{nil, false},
		{[]string{"COMPLETED", "FAILED"}, true},
		{[]string{"COMPLETED", "RUNNING"}, false},
		{[]string{"CANCELLED", "TIMEOUT"}, true},
		{[]string{"COMPLETING"}, false},
	}
	for _, tt := range tests {
		if got := Done(tt.states); got != tt.want {
			t.Errorf("Done(%v) = %v, want %v", tt.states, got, tt.want)
		}
	}
}

func TestWaitFollowsUntilDone(t *testing.T) {
	const sq = "squeue -h -t all -j 9 -o %T"
	c := fakeSlurm(t, call{cmd: sq, stdout: "PENDING\n"}, call{cmd: sq, stdout: "RUNNING\nRUNNING\n"}, call{cmd: sq, stdout: "COMPLETED\nFAILED\n"})
	var seen []string
	got, err := c.Wait(context.Background(), "9", time.Millisecond, func(s []string) { seen = append(seen, strings.Join(s, ",")) })
	if err != nil || fmt.Sprint(got) != "[COMPLETED FAILED]" {
		t.Fatalf("Wait = %v, %v, want [COMPLETED FAILED]", got, err)
	}
	if want := "PENDING RUNNING,RUNNING COMPLETED,FAILED"; strings.Join(seen, " ") != want {
		t.Errorf("progress saw %q, want %q", strings.Join(seen, " "), want)
	}
}

func TestWaitStopsOnContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{Run: func(context.Context, []byte, string, ...string) ([]byte, []byte, error) {
		cancel() // Ctrl-C while the job runs
		return []byte("RUNNING\n"), nil, nil
	}}
	if _, err := c.Wait(ctx, "9", time.Hour, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait = %v, want context.Canceled", err)
	}
}
