package federation

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

// TestRunPyTorchExample runs examples/pytorch-fmnist/quick.yaml as
// `cohort run` does: every init, train and evaluate task is served by a
// real PyTorch process (train.py on the CPU), a persistent worker per site
// and arm started by the exec trainer.
func TestRunPyTorchExample(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping the PyTorch example in -short mode: it starts about 10 PyTorch processes")
	}
	const python = "/usr/bin/python3"
	if out, err := exec.Command(python, "-c", "import torch").CombinedOutput(); err != nil {
		t.Skipf("skipping the PyTorch example: %s cannot import torch (apt-get install python3-torch): %v\n%s", python, err, out)
	}
	dir, err := filepath.Abs("../../examples/pytorch-fmnist")
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dir, "quick.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // the trainer's scratch folder goes here
	db := filepath.Join(t.TempDir(), "cohort.db")
	var progress bytes.Buffer
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := Run(ctx, src, Options{BaseDir: dir, DBPath: db, Progress: &progress, Logger: log, Version: "test"})
	t.Logf("progress:\n%s", progress.String())
	if err != nil {
		t.Fatalf("Run(quick.yaml): %v", err)
	}
	if got := len(res.Comparison.Arms); got != 3 {
		t.Fatalf("comparison has %d arms, want 3", got)
	}
	for _, a := range res.Comparison.Arms {
		if a.Rounds != 2 {
			t.Errorf("arm %s: %d rounds logged, want 2", a.Name, a.Rounds)
		}
		// Chance is 0.1; two passes of a small CNN over the 6,000 images
		// reach about 0.7.
		if a.FinalAccuracy < 0.3 {
			t.Errorf("arm %s: final accuracy %.3f, want ≥ 0.3", a.Name, a.FinalAccuracy)
		}
	}
	// Persistent trainers: from the second round on, a site's task is
	// spent inside the trainer, not starting it (issue 13: ≥ 70% on the
	// CPU).
	store, err := tracking.OpenSQLite(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	checked := 0
	for _, a := range res.Comparison.Arms {
		sites, err := store.ChildRuns(ctx, a.RunID)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sites {
			task, _ := store.GetMetricHistory(ctx, s.Info.RunID, tracking.MetricTaskSeconds)
			trainer, _ := store.GetMetricHistory(ctx, s.Info.RunID, tracking.MetricTrainerSeconds)
			if len(task) != 2 || len(trainer) != 2 {
				t.Errorf("%s: %d task_seconds and %d trainer_seconds points, want one per round (2)", s.Info.RunName, len(task), len(trainer))
				continue
			}
			if share := trainer[1].Value / task[1].Value; share < 0.7 || share > 1.001 {
				t.Errorf("%s round 2: trainer_seconds / task_seconds = %.3f / %.3f = %.2f, want ≥ 0.7 (persistent trainer)", s.Info.RunName, trainer[1].Value, task[1].Value, share)
			}
			checked++
		}
	}
	if checked != 9 { // 4 + 4 federated sites, 1 centralized
		t.Errorf("checked %d site runs, want 9", checked)
	}
	if left, _ := os.ReadDir(tmp); len(left) != 0 {
		var names []string
		for _, e := range left {
			names = append(names, e.Name())
		}
		t.Errorf("TMPDIR holds %s after the run; the trainers' scratch folders should be gone", strings.Join(names, ", "))
	}
}

// BenchmarkPyTorchQuickModes runs examples/pytorch-fmnist/quick.yaml once
// with persistent trainers and once with a process per task, and reports
// both wall times and their ratio (issue 13: persistent at least 2× faster
// on the CPU):
//
//	go test -run XXX -bench PyTorchQuickModes -benchtime 1x ./internal/federation
func BenchmarkPyTorchQuickModes(b *testing.B) {
	const python = "/usr/bin/python3"
	if err := exec.Command(python, "-c", "import torch").Run(); err != nil {
		b.Skipf("%s cannot import torch: %v", python, err)
	}
	dir, err := filepath.Abs("../../examples/pytorch-fmnist")
	if err != nil {
		b.Fatal(err)
	}
	src, err := os.ReadFile(filepath.Join(dir, "quick.yaml"))
	if err != nil {
		b.Fatal(err)
	}
	if !bytes.Contains(src, []byte("exec: {mode: persistent}")) {
		b.Fatal("quick.yaml no longer says exec: {mode: persistent}; update the benchmark")
	}
	run := func(mode string) time.Duration {
		job := bytes.Replace(src, []byte("exec: {mode: persistent}"), []byte("exec: {mode: "+mode+"}"), 1)
		start := time.Now()
		if _, err := Run(context.Background(), job, Options{BaseDir: dir, DBPath: filepath.Join(b.TempDir(), "cohort.db"), Progress: io.Discard, Version: "bench"}); err != nil {
			b.Fatalf("%s: %v", mode, err)
		}
		return time.Since(start)
	}
	var persistent, perTask time.Duration
	for b.Loop() {
		persistent += run("persistent")
		perTask += run("per-task")
	}
	b.ReportMetric(persistent.Seconds()/float64(b.N), "persistent-s")
	b.ReportMetric(perTask.Seconds()/float64(b.N), "per-task-s")
	b.ReportMetric(perTask.Seconds()/persistent.Seconds(), "speedup")
}
