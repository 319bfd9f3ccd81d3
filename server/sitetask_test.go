package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// siteModels prepares jobs whose initial model comes from an init task on
// initSite and whose evaluation is an evaluate task on evalSite.
type siteModels struct{ initSite, evalSite string }

func (m siteModels) Prepare(ctx context.Context, spec *job.Spec) (*Prepared, error) {
	return &Prepared{Spec: &pb.ModelSpec{Kind: "exec"}, InitSite: m.initSite, EvalSite: m.evalSite}, nil
}

func mean(w *model.Weights) float64 {
	var sum float64
	var n int
	for _, t := range w.Tensors {
		for _, v := range t.Data {
			sum += float64(v)
			n++
		}
	}
	return sum / float64(n)
}

// siteTasks answers init tasks with weights of 5 (or fails them with
// initErr) and evaluate tasks with the model's mean as its accuracy.
func siteTasks(initErr string) func(context.Context, pb.CoordinatorServiceClient, func(*pb.SiteMessage), *pb.Task) bool {
	return func(ctx context.Context, cli pb.CoordinatorServiceClient, send func(*pb.SiteMessage), t *pb.Task) bool {
		fail := func(reason string) {
			send(&pb.SiteMessage{Msg: &pb.SiteMessage_Failed{Failed: &pb.TaskFailed{TaskId: t.GetTaskId(), Reason: reason}}})
		}
		switch t.GetKind() {
		case pb.TaskKind_TASK_KIND_INIT:
			if initErr != "" {
				fail(initErr)
				return true
			}
			w := initialWeights()
			for i := range w.Tensors {
				for j := range w.Tensors[i].Data {
					w.Tensors[i].Data[j] = 5
				}
			}
			if err := pushWhole(ctx, cli, t, w, 0); err != nil {
				fail(err.Error())
			}
			return true
		case pb.TaskKind_TASK_KIND_EVALUATE:
			w, err := fetch(ctx, cli, t)
			if err != nil {
				fail(err.Error())
				return true
			}
			send(&pb.SiteMessage{Msg: &pb.SiteMessage_Result{Result: &pb.TaskResult{TaskId: t.GetTaskId(),
				Metrics: map[string]float64{"accuracy": mean(w), "loss": 1, "num_samples": 10}}}})
			return true
		}
		return false
	}
}

const siteTaskJob = `
name: test
seed: 1
data: {dataset: fashion-mnist, path: /nonexistent}
model: {kind: logreg}
sites: {names: [a, b, c]}
rounds: 2
deadline: {round: 20s}
arms:
  - {name: fedavg, strategy: fedavg}
`

// TestSiteInitAndEvaluate: the initial model comes from site a's init
// task, every round's global model is evaluated by site b, and the arm
// run says so.
func TestSiteInitAndEvaluate(t *testing.T) {
	c := newClusterWith(t, 10*time.Second, siteModels{initSite: "a", evalSite: "b"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, n := range []string{"a", "b", "c"} {
		c.startSite(t, ctx, &fakeSite{name: n, update: plusOne(10), handle: siteTasks("")})
	}
	j := submit(t, c, siteTaskJob)
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s: %s", got.GetState(), got.GetError())
	}
	arms, err := c.store.ChildRuns(ctx, got.GetTrackingRunId())
	if err != nil || len(arms) != 1 {
		t.Fatalf("arm runs: %v, %v", arms, err)
	}
	if m, _ := arms[0].Data.Tag(TagEvalMethod); m != "site:b" {
		t.Errorf("arm tag %s = %q, want site:b", TagEvalMethod, m)
	}
	hist, err := c.store.GetMetricHistory(ctx, arms[0].Info.RunID, tracking.MetricTestAccuracy)
	if err != nil {
		t.Fatal(err)
	}
	want := map[int64]float64{0: 5, 1: 6, 2: 7} // init 5, then +1 a round
	for _, m := range hist {
		if w, ok := want[m.Step]; !ok || m.Value != w {
			t.Errorf("test_accuracy at step %d = %g, want %g", m.Step, m.Value, w)
		}
		delete(want, m.Step)
	}
	if len(want) != 0 {
		t.Errorf("test_accuracy missing at steps %v", want)
	}
}

// TestSiteTaskFailures: an init site that never connects, and one that
// fails its task, fail the job with a message naming the site.
func TestSiteTaskFailures(t *testing.T) {
	tests := []struct {
		name     string
		initSite string
		initErr  string
		siteWait time.Duration
		want     []string
	}{
		{"never connects", "ghost", "", 300 * time.Millisecond, []string{`site "ghost" (model.init.site) did not connect within`, "start it"}},
		{"fails the task", "a", "no torch here", 10 * time.Second, []string{`site "a" failed the init task: no torch here`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClusterWith(t, tt.siteWait, siteModels{initSite: tt.initSite})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			for _, n := range []string{"a", "b", "c"} {
				c.startSite(t, ctx, &fakeSite{name: n, update: plusOne(10), handle: siteTasks(tt.initErr)})
			}
			j := submit(t, c, siteTaskJob)
			got := waitJob(t, c, j.GetJobId())
			if got.GetState() != pb.JobState_JOB_STATE_FAILED {
				t.Fatalf("job %s, want failed", got.GetState())
			}
			for _, w := range tt.want {
				if !strings.Contains(got.GetError(), w) {
					t.Errorf("job error = %q, want it to contain %q", got.GetError(), w)
				}
			}
		})
	}
}

// TestSiteTaskDisconnect: an init site that goes away mid-task fails the
// job with a message saying so.
func TestSiteTaskDisconnect(t *testing.T) {
	c := newClusterWith(t, 10*time.Second, siteModels{initSite: "a"})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	actx, leave := context.WithCancel(ctx)
	c.startSite(t, actx, &fakeSite{name: "a", update: plusOne(10),
		handle: func(context.Context, pb.CoordinatorServiceClient, func(*pb.SiteMessage), *pb.Task) bool {
			leave() // the site goes away holding the task
			return true
		}})
	j := submit(t, c, siteTaskJob)
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_FAILED || !strings.Contains(got.GetError(), `site "a" disconnected during the init task`) {
		t.Errorf("job %s: %q, want failed: site \"a\" disconnected during the init task", got.GetState(), got.GetError())
	}
}
