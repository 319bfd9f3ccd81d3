package mlflowclient_test

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/tracking"
)

// TestLoopbackRegistry registers a model through the client into Cohort's
// own MLflow server over a real SQLite store: ensure the model, create a
// version whose source is a run's artifact folder, alias it, get it by
// alias, and download its artifacts through the proxy.
func TestLoopbackRegistry(t *testing.T) {
	store, fl, uri := loopbackServer(t)
	c := loopbackClient(t, uri)
	ctx := t.Context()
	exp, err := c.EnsureExperiment(ctx, "registry")
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "fedavg"})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string]string{"MLmodel": "flavors: {cohort: {}}\n", "weights.bin": "\x00\x01weights", "meta/info.json": `{"rounds":3}`}
	for _, p := range slices.Sorted(mapsKeys(files)) {
		if err := c.LogArtifact(ctx, run.Info.RunID, "model/"+p, strings.NewReader(files[p])); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := c.EnsureRegisteredModel(ctx, "fmnist"); err != nil {
			t.Fatalf("EnsureRegisteredModel = %v", err)
		}
	}
	source := run.Info.ArtifactURI + "/model"
	// The server registers version 1 and the connection drops: the retry
	// finds it by its create key (name and tag filter) on the real server.
	fl.mu.Lock()
	fl.lose, fl.losePath = 1, "model-versions/create"
	fl.mu.Unlock()
	v1, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "fmnist", Source: source, RunID: run.Info.RunID, Tags: map[string]string{"arm": "fedavg"}})
	if err != nil {
		t.Fatalf("CreateModelVersion = %v", err)
	}
	v2, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "fmnist", Source: "runs:/" + run.Info.RunID + "/model", RunID: run.Info.RunID})
	if err != nil {
		t.Fatalf("CreateModelVersion(runs:/) = %v", err)
	}
	if v1.Version != "1" || v2.Version != "2" || v1.Source != source || v2.Source != source || v1.RunID != run.Info.RunID || v1.Status != tracking.VersionReady {
		t.Errorf("versions = %+v, %+v; want 1 and 2 from %s", v1, v2, source)
	}
	if err := c.SetRegisteredModelAlias(ctx, "fmnist", "champion", "1"); err != nil {
		t.Fatal(err)
	}
	got, err := c.GetModelVersionByAlias(ctx, "fmnist", "champion")
	if err != nil || got.Version != "1" || !slices.Equal(got.Aliases, []string{"champion"}) {
		t.Errorf("GetModelVersionByAlias = %+v, %v; want version 1 aliased champion", got, err)
	}
	m, err := c.GetRegisteredModel(ctx, "fmnist")
	if err != nil || !slices.Equal(m.Aliases, []tracking.ModelAlias{{Alias: "champion", Version: "1"}}) {
		t.Errorf("GetRegisteredModel = %+v, %v", m, err)
	}
	if n := len(storeVersions(t, store)); n != 2 {
		t.Errorf("versions in the store = %d, want 2 (the lost answer made no duplicate)", n)
	}
	// The store sees what the client wrote.
	sv, err := store.GetModelVersion(ctx, "fmnist", "1")
	if err != nil || sv.Source != source || sv.RunID != run.Info.RunID {
		t.Errorf("store version 1 = %+v, %v", sv, err)
	}
	vs, _, err := c.SearchModelVersions(ctx, tracking.RegistryQuery{Filter: "name = 'fmnist'"})
	if err != nil || len(vs) != 2 {
		t.Errorf("SearchModelVersions = %d versions, %v; want 2", len(vs), err)
	}
	ms, _, err := c.SearchRegisteredModels(ctx, tracking.RegistryQuery{Filter: "name LIKE 'fm%'"})
	if err != nil || len(ms) != 1 || ms[0].Name != "fmnist" {
		t.Errorf("SearchRegisteredModels = %+v, %v", ms, err)
	}
	for _, src := range []string{"models:/fmnist@champion", source} {
		dest := filepath.Join(t.TempDir(), "model")
		if err := c.DownloadArtifacts(ctx, src, dest); err != nil {
			t.Fatalf("DownloadArtifacts(%s) = %v", src, err)
		}
		if diff := cmp.Diff(files, tree(t, dest)); diff != "" {
			t.Errorf("DownloadArtifacts(%s) (-want +got):\n%s", src, diff)
		}
	}
	if err := c.DeleteRegisteredModelAlias(ctx, "fmnist", "champion"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetModelVersionByAlias(ctx, "fmnist", "champion"); !errors.Is(err, tracking.ErrNotFound) {
		t.Errorf("GetModelVersionByAlias after delete = %v, want ErrNotFound", err)
	}
}

func mapsKeys(m map[string]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

func tree(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		rel, _ := filepath.Rel(dir, p)
		out[filepath.ToSlash(rel)] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func storeVersions(t *testing.T, store *tracking.SQLiteStore) []tracking.ModelVersion {
	t.Helper()
	vs, _, err := store.SearchModelVersions(t.Context(), tracking.RegistryQuery{Filter: "name = 'fmnist'"})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}
