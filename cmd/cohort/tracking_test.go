package main

import (
	"bytes"
	"context"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/tracking"
)

// TestRunLogsIntoMLflowServer runs a job whose tracking.uri is an MLflow
// server — Cohort's own `cohort ui` handler over a SQLite file — so the
// whole path is real: the coordinator logs through the MLflow REST client
// (spool, log-batch, log-inputs, artifacts through the proxy) into the
// REST server, and the run tree arrives nested as MLflow nests it.
func TestRunLogsIntoMLflowServer(t *testing.T) {
	dir := t.TempDir()
	store, err := tracking.OpenSQLite(context.Background(), filepath.Join(dir, "server.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	h, err := trackingHandler(store, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer srv.Close()
	t.Setenv("XDG_CACHE_HOME", filepath.Join(dir, "cache")) // the client's spool
	job := filepath.Join(dir, "job.yaml")
	subset, _ := filepath.Abs("../../data/testdata/fmnist-subset")
	os.WriteFile(job, []byte(`name: remote
seed: 1
tracking: {uri: "`+srv.URL+`", experiment: remote-exp}
data: {dataset: fashion-mnist, path: "`+subset+`"}
model: {kind: logreg}
sites: {count: 2}
rounds: 2
arms:
  - {name: centralized, centralized: {epochs: 1}}
  - {name: fedavg, strategy: fedavg}
`), 0o600)
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"run", job}, &out, &errOut); err != nil {
		t.Fatalf("cohort run: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "tracking: "+srv.URL) {
		t.Errorf("output does not name the tracking server:\n%s", out.String())
	}
	exp, err := store.GetExperimentByName(context.Background(), "remote-exp")
	if err != nil {
		t.Fatal(err)
	}
	runs, _, err := store.SearchRuns(context.Background(), tracking.RunQuery{ExperimentIDs: []string{exp.ExperimentID}})
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]int{}
	var siteRun *tracking.Run
	for i, r := range runs {
		k, _ := r.Data.Tag(tracking.TagKind)
		kinds[k]++
		if k == "site" {
			siteRun = &runs[i]
		}
	}
	// One job run, two arm runs, two site runs under the federated arm and
	// one under the centralized arm (the pooled-data site).
	if kinds["job"] != 1 || kinds["centralized"] != 1 || kinds["federated"] != 1 || kinds["site"] != 3 {
		t.Fatalf("runs by kind = %v, want 1 job, 1 centralized and 1 federated arm, 3 sites", kinds)
	}
	if siteRun == nil {
		t.Fatal("no site run")
	}
	if _, ok := siteRun.Data.Metric("train_loss"); !ok {
		t.Errorf("site run has no train_loss: %v", siteRun.Data.Metrics)
	}
	full, err := store.GetRun(context.Background(), siteRun.Info.RunID)
	if err != nil {
		t.Fatal(err)
	}
	if len(full.Inputs) == 0 || len(full.Inputs[0].Dataset.Digest) == 0 {
		t.Errorf("site run has no dataset input: %+v", full.Inputs)
	}
	for _, r := range runs {
		if k, _ := r.Data.Tag(tracking.TagKind); k == "job" {
			files, err := store.ListArtifacts(context.Background(), r.Info.RunID, "")
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, f := range files {
				names = append(names, f.Path)
			}
			if !strings.Contains(strings.Join(names, " "), "comparison.txt") {
				t.Errorf("job run artifacts = %v, want comparison.txt uploaded through the proxy", names)
			}
		}
	}
}
