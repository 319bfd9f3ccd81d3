package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/model"
	"github.com/cohortfl/cohort/tracking"
)

// TestModelsRegisteredAndServed runs a job with register: that logs into
// `cohort ui` over MLflow's REST API, so the whole path is real: the
// coordinator logs each arm's model and registers it through the REST
// client, the server's registry stores it, and `cohort models` lists,
// shows, aliases and downloads it — through the server and straight from
// the SQLite file.
func TestModelsRegisteredAndServed(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "server.db")
	store, err := tracking.OpenSQLite(context.Background(), db)
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
	os.WriteFile(job, []byte(`name: registered
seed: 1
tracking: {uri: "`+srv.URL+`"}
data: {dataset: fashion-mnist, path: "`+subset+`"}
model: {kind: logreg}
sites: {count: 2}
rounds: 2
arms:
  - {name: centralized, centralized: {epochs: 1}}
  - {name: fedavg, strategy: fedavg}
register: {name: fmnist-logreg, alias_best: champion}
`), 0o600)
	cohort := func(args ...string) (string, error) {
		t.Helper()
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		return out.String() + errOut.String(), err
	}
	if out, err := cohort("run", job); err != nil || !strings.Contains(out, "registered as models:/fmnist-logreg/") {
		t.Fatalf("cohort run: %v\n%s", err, out)
	}
	out, err := cohort("models", "list", "--tracking", srv.URL)
	if err != nil || !strings.Contains(out, "fmnist-logreg") || !strings.Contains(out, "champion→") {
		t.Fatalf("models list: %v\n%s", err, out)
	}
	out, err = cohort("models", "show", "--tracking", srv.URL, "fmnist-logreg")
	if err != nil || !strings.Contains(out, "centralized") || !strings.Contains(out, "fedavg") {
		t.Fatalf("models show: %v\n%s", err, out)
	}
	// Logistic regression on 784 pixels and 10 classes.
	const params = 784*10 + 10
	for _, uri := range []string{srv.URL, "sqlite:" + db} {
		got := filepath.Join(t.TempDir(), "champion")
		if out, err := cohort("models", "download", "--tracking", uri, "--out", got, "models:/fmnist-logreg@champion"); err != nil {
			t.Fatalf("models download via %s: %v\n%s", uri, err, out)
		}
		ws, _, err := model.ReadSafetensorsFile(filepath.Join(got, "model.safetensors"))
		if err != nil {
			t.Fatalf("downloaded via %s: %v", uri, err)
		}
		if n := ws.NumParams(); n != params {
			t.Errorf("downloaded via %s: %d parameters, want %d", uri, n, params)
		}
		if mm, err := os.ReadFile(filepath.Join(got, "MLmodel")); err != nil || !bytes.Contains(mm, []byte("safetensors")) {
			t.Errorf("downloaded via %s: MLmodel %q (%v)", uri, mm, err)
		}
	}
	// The newest version, through the server's get-latest-versions.
	if out, err := cohort("models", "show", "--tracking", srv.URL, "models:/fmnist-logreg/latest"); err != nil || !strings.Contains(out, "version  2\n") {
		t.Fatalf("models show latest: %v\n%s", err, out)
	}
	if out, err := cohort("models", "alias", "--tracking", srv.URL, "fmnist-logreg", "staging", "1"); err != nil {
		t.Fatalf("models alias: %v\n%s", err, out)
	}
	out, err = cohort("models", "show", "--tracking", "sqlite:"+db, "models:/fmnist-logreg@staging")
	if err != nil || !strings.Contains(out, "version  1\n") || !strings.Contains(out, "cohort.arm = centralized") {
		t.Fatalf("models show @staging: %v\n%s", err, out)
	}
	_, err = cohort("models", "download", "--tracking", srv.URL, "models:/nope/1")
	if !errors.Is(err, tracking.ErrNotFound) && (err == nil || !strings.Contains(err.Error(), "not found")) {
		t.Errorf("download of a missing model: %v, want not found", err)
	}
	if _, err = cohort("models", "show", "--tracking", srv.URL, "models:/fmnist-logreg"); err == nil || !strings.Contains(err.Error(), "names no version") {
		t.Errorf("a models:/ URI without a version: %v", err)
	}
}
