package mlflowclient

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/tracking"
)

// loseAnswers makes the fake apply the first n requests to endpoint and
// then lose each answer: the connection dropped (mode 2), a 503 (mode 1),
// or no answer until the client gives up (mode 3).
func loseAnswers(f *fakeMLflow, endpoint string, n, mode int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hook = func(w http.ResponseWriter, r *http.Request, ep string) bool {
		if r.Method+" "+ep != endpoint {
			return false
		}
		f.mu.Lock()
		if n == 0 {
			f.mu.Unlock()
			return false
		}
		n--
		body, _ := io.ReadAll(r.Body)
		f.calls = append(f.calls, r.Method+" "+ep)
		_, merr := f.handle(r, ep, body)
		f.mu.Unlock()
		if merr != nil {
			f.t.Errorf("the fake refused the request it was to apply: %s", merr.msg)
		}
		switch mode {
		case 1:
			http.Error(w, "upstream unavailable", http.StatusServiceUnavailable)
		case 2:
			conn, _, err := w.(http.Hijacker).Hijack()
			if err == nil {
				conn.Close()
			}
		case 3:
			<-r.Context().Done()
		}
		return true
	}
}

// runsNamed returns the IDs of the fake's runs of that name.
func (f *fakeMLflow) runsNamed(name string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var ids []string
	for _, id := range f.runOrder {
		if f.runs[id].tags[tracking.TagRunName] == name {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestCreateRunLostAnswerMakesOneRun: the server applies runs/create and
// the answer is lost; the retry finds the run by its create key instead
// of making a second one.
func TestCreateRunLostAnswerMakesOneRun(t *testing.T) {
	for _, tt := range []struct {
		name       string
		mode, lose int
	}{
		{"connection dropped", 2, 1},
		{"503", 1, 1},
		{"503 twice", 1, 2},
		{"request timeout", 3, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := startFake(t)
			cfg := testConfig(t, srv.URL)
			cfg.CreateTimeout = 20 * time.Second
			if tt.mode == 3 {
				cfg.RequestTimeout = 200 * time.Millisecond
			}
			c := newTestClient(t, cfg)
			ctx := t.Context()
			exp, err := c.EnsureExperiment(ctx, "e")
			if err != nil {
				t.Fatal(err)
			}
			loseAnswers(f, "POST runs/create", tt.lose, tt.mode)
			run, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "job"})
			if err != nil {
				t.Fatal(err)
			}
			ids := f.runsNamed("job")
			if len(ids) != 1 {
				t.Fatalf("runs on the server = %v, want exactly one", ids)
			}
			if run.Info.RunID != ids[0] {
				t.Errorf("CreateRun = %s, want the server's run %s", run.Info.RunID, ids[0])
			}
			if key, _ := run.Data.Tag(TagCreateKey); len(key) != 32 {
				t.Errorf("create key = %q, want 32 hex digits", key)
			}
			if n := f.countCalls("POST runs/create"); n != 1 {
				t.Errorf("runs/create calls = %d, want 1 (the retry found the run)", n)
			}
			if n := f.countCalls("POST runs/search"); n != 1 {
				t.Errorf("runs/search calls = %d, want 1", n)
			}
			// The run is usable under the ID CreateRun returned.
			if err := c.LogBatch(ctx, run.Info.RunID, metrics("acc", 1, 3), nil, nil); err != nil {
				t.Fatal(err)
			}
			flush(t, c)
			if diff := cmp.Diff(metrics("acc", 1, 3), f.history(ids[0], "acc")); diff != "" {
				t.Errorf("points (-want +got):\n%s", diff)
			}
		})
	}
}

// TestSpooledCreateLostAnswerMakesOneRun: a create spooled while the
// server was down is applied when it returns, and its answer is lost;
// the next attempt finds the run.
func TestSpooledCreateLostAnswerMakesOneRun(t *testing.T) {
	for _, mode := range []int{1, 2} {
		f, srv := startFake(t)
		c := newTestClient(t, testConfig(t, srv.URL))
		ctx := t.Context()
		exp, _ := c.EnsureExperiment(ctx, "e")
		f.setDown(1)
		arm, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "arm"})
		if err != nil || !isPlaceholder(arm.Info.RunID) {
			t.Fatalf("CreateRun with the server down = %s, %v; want a placeholder", arm.Info.RunID, err)
		}
		_ = c.LogBatch(ctx, arm.Info.RunID, metrics("acc", 1, 4), nil, nil)
		f.setDown(0)
		loseAnswers(f, "POST runs/create", 1, mode)
		flush(t, c)
		ids := f.runsNamed("arm")
		if len(ids) != 1 {
			t.Fatalf("mode %d: runs on the server = %v, want exactly one", mode, ids)
		}
		if diff := cmp.Diff(metrics("acc", 1, 4), f.history(ids[0], "acc")); diff != "" {
			t.Errorf("mode %d: points (-want +got):\n%s", mode, diff)
		}
		if got, err := c.GetRun(ctx, arm.Info.RunID); err != nil || got.Info.RunID != ids[0] {
			t.Errorf("mode %d: GetRun(placeholder) = %s, %v; want %s", mode, got.Info.RunID, err, ids[0])
		}
	}
}

// TestReplayedCreateAfterCrashMakesOneRun: a process sent a spooled
// create and died before it recorded the server's answer; the next
// process finds the run by its key rather than creating it again.
func TestReplayedCreateAfterCrashMakesOneRun(t *testing.T) {
	f, srv := startFake(t)
	cfg := testConfig(t, srv.URL)
	ctx := t.Context()
	c1 := newTestClient(t, cfg)
	exp, _ := c1.EnsureExperiment(ctx, "e")
	f.setDown(1)
	arm, _ := c1.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "arm"})
	_ = c1.LogBatch(ctx, arm.Info.RunID, metrics("acc", 1, 2), nil, nil)
	// What the dying process sent: the spooled create, as it is on disk.
	c1.mu.Lock()
	o, err := c1.sp.read(c1.queue[0])
	c1.mu.Unlock()
	if err != nil || o.Kind != opCreate {
		t.Fatalf("first spooled op = %+v, %v; want the create", o, err)
	}
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(o.Create)
	f.setDown(0)
	f.mu.Lock()
	r, _ := http.NewRequest("POST", srv.URL+"/api/2.0/mlflow/runs/create", nil)
	if _, merr := f.handle(r, "runs/create", body); merr != nil {
		t.Fatal(merr.msg)
	}
	f.mu.Unlock()

	c2 := newTestClient(t, cfg)
	flush(t, c2)
	ids := f.runsNamed("arm")
	if len(ids) != 1 {
		t.Fatalf("runs on the server = %v, want exactly one", ids)
	}
	if diff := cmp.Diff(metrics("acc", 1, 2), f.history(ids[0], "acc")); diff != "" {
		t.Errorf("replayed points (-want +got):\n%s", diff)
	}
}

// TestEnsureExperimentOffline: the server is down when the job starts and
// comes up later; EnsureExperiment answers at once with a placeholder,
// and every run and point arrives in the one experiment of that name.
func TestEnsureExperimentOffline(t *testing.T) {
	for _, tt := range []struct {
		name     string
		down     int
		existing bool // another client made the experiment meanwhile
		restart  bool // the process ends before the server returns
	}{
		{name: "connection refused", down: 2},
		{name: "503", down: 1},
		{name: "exists on the server", down: 1, existing: true},
		{name: "restart", down: 2, restart: true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := startFake(t)
			cfg := testConfig(t, srv.URL)
			cfg.CreateTimeout = 20 * time.Second // only the retries bound the first try
			cfg.MaxRetries = 1
			f.setDown(tt.down)
			ctx := t.Context()
			c := newTestClient(t, cfg)
			exp, err := c.EnsureExperiment(ctx, "e")
			if err != nil || !isPlaceholder(exp) {
				t.Fatalf("EnsureExperiment with the server down = %q, %v; want a placeholder", exp, err)
			}
			if again, err := c.EnsureExperiment(ctx, "e"); err != nil || again != exp {
				t.Errorf("EnsureExperiment again = %q, %v; want the same placeholder %q", again, err, exp)
			}
			if other, _ := c.EnsureExperiment(ctx, "other"); other == exp || !isPlaceholder(other) {
				t.Errorf("EnsureExperiment(other) = %q; want a placeholder of its own", other)
			}
			job, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "job"})
			if err != nil || !isPlaceholder(job.Info.RunID) || job.Info.ExperimentID != exp {
				t.Fatalf("CreateRun in a placeholder experiment = %+v, %v", job.Info, err)
			}
			arm, _ := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "arm", ParentRunID: job.Info.RunID})
			_ = c.LogBatch(ctx, arm.Info.RunID, metrics("acc", 1, 5), nil, nil)
			if tt.restart {
				if err := c.Close(); err != nil {
					t.Fatal(err)
				}
				c = newTestClient(t, cfg)
			}
			if tt.existing {
				f.mu.Lock()
				f.exps = append(f.exps, &fakeExp{id: "9", name: "e", stage: "active"})
				f.mu.Unlock()
			}
			f.setDown(0)
			flush(t, c)
			f.mu.Lock()
			var ids []string
			for _, e := range f.exps {
				if e.name == "e" {
					ids = append(ids, e.id)
				}
			}
			var armExp, parent string
			if r := f.runs[firstOr(f.runOrder, 1)]; r != nil {
				armExp, parent = r.info.ExperimentID, r.tags[tracking.TagParentRunID]
			}
			nruns, job0 := len(f.runs), firstOr(f.runOrder, 0)
			f.mu.Unlock()
			if len(ids) != 1 {
				t.Fatalf("experiments named e = %v, want one", ids)
			}
			if tt.existing && ids[0] != "9" {
				t.Errorf("experiment = %s, want the existing 9", ids[0])
			}
			if nruns != 2 || armExp != ids[0] || parent != job0 {
				t.Errorf("server holds %d runs, arm in experiment %q under %q; want 2, %q, %q", nruns, armExp, parent, ids[0], job0)
			}
			if diff := cmp.Diff(metrics("acc", 1, 5), f.history(f.runsNamed("arm")[0], "acc")); diff != "" {
				t.Errorf("points (-want +got):\n%s", diff)
			}
			for ph, want := range map[string]string{exp: ids[0], job.Info.RunID: job0, "123": "123"} {
				if got, err := c.ResolveID(ctx, ph); err != nil || got != want {
					t.Errorf("ResolveID(%s) = %q, %v; want %q", ph, got, err, want)
				}
			}
			if got, err := c.EnsureExperiment(ctx, "e"); err != nil || got != ids[0] {
				t.Errorf("EnsureExperiment once the server is back = %q, %v; want %q", got, err, ids[0])
			}
		})
	}
}

func firstOr(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return ""
}

// TestEnsureExperimentOfflineDeleted: the name turns out to be a deleted
// experiment; the spooled runs are reported, not sent elsewhere.
func TestEnsureExperimentOfflineDeleted(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	f.setDown(1)
	exp, _ := c.EnsureExperiment(ctx, "e")
	job, _ := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "job"})
	_ = c.LogBatch(ctx, job.Info.RunID, metrics("acc", 1, 1), nil, nil)
	f.mu.Lock()
	f.exps = append(f.exps, &fakeExp{id: "1", name: "e", stage: "deleted"})
	f.down = 0
	f.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	err := c.Flush(cctx)
	if !errors.Is(err, tracking.ErrExperimentDeleted) || !errors.Is(err, ErrPlaceholder) {
		t.Errorf("Flush = %v; want the deleted experiment, and the run that could not be made", err)
	}
	if n := len(f.runsNamed("job")); n != 0 {
		t.Errorf("%d runs made; want none", n)
	}
	if s := c.Stats(); s.Pending != 0 || s.Refused != 3 {
		t.Errorf("Stats = %+v; want nothing pending, 3 refused", s)
	}
}

// TestExperimentCreateLeavesLocationToServer: experiments/create carries
// no artifact_location, so a server that proxies artifacts gives the
// experiment mlflow-artifacts:/<id> (MLflow's default with
// --serve-artifacts) and its runs mlflow-artifacts:/ URIs.
func TestExperimentCreateLeavesLocationToServer(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	exp, err := c.EnsureExperiment(ctx, "e")
	if err != nil {
		t.Fatal(err)
	}
	f.mu.Lock()
	bodies := slices.Clone(f.bodies["experiments/create"])
	f.mu.Unlock()
	if diff := cmp.Diff([]string{`{"name":"e"}`}, bodies); diff != "" {
		t.Errorf("experiments/create bodies (-want +got):\n%s", diff)
	}
	run, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "r"})
	if err != nil {
		t.Fatal(err)
	}
	if want := "mlflow-artifacts:/" + exp + "/" + run.Info.RunID + "/artifacts"; run.Info.ArtifactURI != want {
		t.Errorf("artifact URI = %q, want %q", run.Info.ArtifactURI, want)
	}
}

// TestWarnsOfUnproxiedExperiment: an experiment whose location the server
// does not proxy is named in a warning that says how to fix it.
func TestWarnsOfUnproxiedExperiment(t *testing.T) {
	for _, proxied := range []bool{true, false} {
		f, srv := startFake(t)
		f.serveArtifacts = proxied
		var logs bytes.Buffer
		cfg := testConfig(t, srv.URL)
		cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		c := newTestClient(t, cfg)
		for range 2 { // created, then found
			if _, err := c.EnsureExperiment(t.Context(), "e"); err != nil {
				t.Fatal(err)
			}
		}
		n := strings.Count(logs.String(), "mlflow_experiment_not_proxied")
		if want := map[bool]int{true: 0, false: 2}[proxied]; n != want || (n > 0 && !strings.Contains(logs.String(), "--serve-artifacts")) {
			t.Errorf("proxied %v: %d warnings, want %d:\n%s", proxied, n, want, logs.String())
		}
	}
}
