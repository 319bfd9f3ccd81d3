package server

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

func newStatefulCoordinator(t *testing.T, dir string) *Coordinator {
	t.Helper()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	c, err := New(Config{StateDir: dir, Logger: log}, Deps{Tracker: nil, OpenTracker: func(context.Context, string) (Tracker, func(context.Context) error, error) {
		return nil, nil, fmt.Errorf("no tracking in this test")
	}, Models: &fakeModels{}})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// A restarted coordinator lists every job again: ended ones as they ended,
// queued ones queued again, running ones failed with the reason.
func TestRestartKeepsJobs(t *testing.T) {
	dir := t.TempDir()
	c1 := newStatefulCoordinator(t, dir)
	src := fmt.Sprintf(testJob, 2, "10s")
	queued, err := c1.SubmitJob(t.Context(), &pb.SubmitJobRequest{JobYaml: []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	running, err := c1.SubmitJob(t.Context(), &pb.SubmitJobRequest{JobYaml: []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	done, err := c1.SubmitJob(t.Context(), &pb.SubmitJobRequest{JobYaml: []byte(src)})
	if err != nil {
		t.Fatal(err)
	}
	// Pretend the second job was running and the third had succeeded when
	// the coordinator went away (c1.Run never ran, so nothing else moves).
	set := func(id string, st pb.JobState) {
		j, err := c1.jobs.get(id)
		if err != nil {
			t.Fatal(err)
		}
		j.emit(&pb.JobEvent{Kind: "test"}, func(info *pb.Job) { info.State, info.Arm, info.Round, info.Rounds = st, "fedavg", 2, 3 })
	}
	set(running.GetJob().GetJobId(), pb.JobState_JOB_STATE_RUNNING)
	set(done.GetJob().GetJobId(), pb.JobState_JOB_STATE_SUCCEEDED)

	c2 := newStatefulCoordinator(t, dir)
	list, err := c2.ListJobs(t.Context(), &pb.ListJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*pb.Job{}
	for _, j := range list.GetJobs() {
		got[j.GetJobId()] = j
	}
	if len(got) != 3 {
		t.Fatalf("restarted coordinator lists %d jobs, want 3: %v", len(got), list.GetJobs())
	}
	if s := got[queued.GetJob().GetJobId()].GetState(); s != pb.JobState_JOB_STATE_QUEUED {
		t.Errorf("queued job after restart: %s, want QUEUED", s)
	}
	if len(c2.jobs.queued) != 1 {
		t.Errorf("restarted coordinator has %d jobs in its queue, want 1", len(c2.jobs.queued))
	}
	r := got[running.GetJob().GetJobId()]
	if r.GetState() != pb.JobState_JOB_STATE_FAILED || !strings.Contains(r.GetError(), "restarted") || !strings.Contains(r.GetError(), "round 2 of 3") {
		t.Errorf("running job after restart: %s %q, want FAILED naming the restart and the round", r.GetState(), r.GetError())
	}
	if s := got[done.GetJob().GetJobId()].GetState(); s != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Errorf("succeeded job after restart: %s, want SUCCEEDED", s)
	}
	// The failure is itself persisted: a third start says the same.
	c3 := newStatefulCoordinator(t, dir)
	j3, err := c3.GetJob(t.Context(), &pb.GetJobRequest{JobId: running.GetJob().GetJobId()})
	if err != nil {
		t.Fatal(err)
	}
	if j3.GetJob().GetState() != pb.JobState_JOB_STATE_FAILED {
		t.Errorf("after a second restart the job is %s, want FAILED", j3.GetJob().GetState())
	}
}

// A corrupt record is skipped, not fatal, and leaves the others.
func TestRestartSkipsCorruptRecord(t *testing.T) {
	dir := t.TempDir()
	c1 := newStatefulCoordinator(t, dir)
	if _, err := c1.SubmitJob(t.Context(), &pb.SubmitJobRequest{JobYaml: []byte(fmt.Sprintf(testJob, 2, "10s"))}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "jobs", "garbage.json"), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	c2 := newStatefulCoordinator(t, dir)
	list, err := c2.ListJobs(t.Context(), &pb.ListJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetJobs()) != 1 {
		t.Errorf("jobs after restart with a corrupt record: %d, want 1", len(list.GetJobs()))
	}
}

func TestStateDirUnwritable(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(Config{StateDir: f}, Deps{Tracker: nil, OpenTracker: func(context.Context, string) (Tracker, func(context.Context) error, error) { return nil, nil, nil }, Models: &fakeModels{}})
	if err == nil || !strings.Contains(err.Error(), "state_dir") {
		t.Errorf("New with a file as state dir: %v, want an error naming state_dir", err)
	}
}
