package federation

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// virtualJob is a simulation of 20M virtual clients, perRound a round,
// trained by workers workers, on the Fashion-MNIST subset.
func virtualJob(workers, perRound, rounds int) string {
	return fmt.Sprintf(`
name: virtual-tiny
seed: 5
data: {dataset: fashion-mnist, path: %q, partition: {kind: dirichlet, alpha: 0.5}}
model: {kind: logreg}
sites: {virtual: 20000000, per_round: %d, workers: %d}
rounds: %d
train: {epochs: 1, batch_size: 8, lr: 0.05}
arms:
  - {name: fedavg, strategy: fedavg}
deadline: {round: 1m}
`, subset, perRound, workers, rounds)
}

// runVirtual runs a virtual-client job and returns its comparison.
func runVirtual(t *testing.T, src string) (*Result, string) {
	t.Helper()
	var progress bytes.Buffer
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := Run(ctx, []byte(src), Options{DBPath: filepath.Join(t.TempDir(), "c.db"), Progress: &progress, Logger: log, Version: "test"})
	if err != nil {
		t.Fatalf("Run: %v\nprogress:\n%s", err, progress.String())
	}
	if res.Job.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job state %v: %s", res.Job.GetState(), res.Job.GetError())
	}
	return res, progress.String()
}

// TestVirtualWorkersSameAccuracy is issue 17's acceptance check: the same
// seed gives the same accuracy every round whether one, two or three
// workers train the round's virtual clients.
func TestVirtualWorkersSameAccuracy(t *testing.T) {
	const rounds = 3
	var want, wantLoss []tracking.Metric
	for _, workers := range []int{1, 2, 3} {
		res, out := runVirtual(t, virtualJob(workers, 60, rounds))
		if len(res.Comparison.Arms) != 1 {
			t.Fatalf("%d workers: comparison has %d arms, want 1", workers, len(res.Comparison.Arms))
		}
		if line := fmt.Sprintf("fedavg   %d/%d  sites %d ", rounds, rounds, workers); !strings.Contains(out, line) {
			t.Errorf("%d workers: progress lacks %q:\n%s", workers, line, out)
		}
		got := res.Comparison.Arms[0].AccuracyHistory
		loss := testLoss(t, res)
		t.Logf("%d workers: accuracy by round %v, loss %v", workers, got, loss)
		if len(got) != rounds+1 { // the initial model, then each round
			t.Fatalf("%d workers: %d accuracy points, want %d", workers, len(got), rounds+1)
		}
		if want == nil {
			want, wantLoss = got, loss
			if got[rounds].Value < 0.3 {
				t.Errorf("accuracy after %d rounds = %.4f, want ≥ 0.3 (the clients learn)", rounds, got[rounds].Value)
			}
			continue
		}
		for i := range got {
			if math.Abs(got[i].Value-want[i].Value) > 1e-6 {
				t.Errorf("%d workers: round %d accuracy = %.6f, want %.6f (1 worker)", workers, got[i].Step, got[i].Value, want[i].Value)
			}
		}
		// The loss tells weights apart that the accuracy over 1,000 test
		// samples does not.
		for i := range min(len(loss), len(wantLoss)) {
			if math.Abs(loss[i].Value-wantLoss[i].Value) > 1e-7*wantLoss[i].Value {
				t.Errorf("%d workers: round %d test loss = %.9f, want %.9f (1 worker) within 1e-7 relative", workers, loss[i].Step, loss[i].Value, wantLoss[i].Value)
			}
		}
		if len(loss) != len(wantLoss) {
			t.Errorf("%d workers: %d test-loss points, want %d", workers, len(loss), len(wantLoss))
		}
	}
}

// testLoss reads the arm's test loss by round from the job's tracking
// store.
func testLoss(t *testing.T, res *Result) []tracking.Metric {
	t.Helper()
	ctx := context.Background()
	store, err := tracking.OpenSQLite(ctx, res.DBPath)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h, err := store.GetMetricHistory(ctx, res.Comparison.Arms[0].RunID, tracking.MetricTestLoss)
	if err != nil {
		t.Fatal(err)
	}
	return h
}
