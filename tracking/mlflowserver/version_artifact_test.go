package mlflowserver

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/tracking"
)

// A model version's files are served by name and version, whether its
// source is a folder of the run that logged it or a folder of the
// artifact proxy that no run owns.
func TestModelVersionGetArtifact(t *testing.T) {
	f := newFixture(t, Config{})
	ctx := context.Background()
	run := f.createRun("0", nil)
	if err := f.store.LogArtifact(ctx, run, "model/MLmodel", strings.NewReader("flavors: {}\n")); err != nil {
		t.Fatal(err)
	}
	r, err := f.store.GetRun(ctx, run)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.CreateRegisteredModel(ctx, "m", "", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "m", Source: r.Info.ArtifactURI + "/model", RunID: run}); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(f.store.ProxyArtifactRoot(), "shared", "m2"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(f.store.ProxyArtifactRoot(), "shared", "m2", "weights.bin"), []byte("xyz"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "m", Source: "mlflow-artifacts:/shared/m2"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		query      string
		status     int
		body, code string
	}{
		{"name=m&version=1&path=MLmodel", 200, "flavors: {}\n", ""},
		{"name=m&version=2&path=weights.bin", 200, "xyz", ""},
		{"name=m&version=1&path=nope", 404, "", "RESOURCE_DOES_NOT_EXIST"},
		{"name=m&version=1&path=../../x", 400, "", "INVALID_PARAMETER_VALUE"},
		{"name=m&version=9&path=MLmodel", 404, "", "RESOURCE_DOES_NOT_EXIST"},
		{"name=m&version=1", 400, "", "INVALID_PARAMETER_VALUE"},
		{"version=1&path=MLmodel", 400, "", "INVALID_PARAMETER_VALUE"},
		{"name=m&version=2&path=.", 400, "", "INVALID_PARAMETER_VALUE"},
	}
	for _, tt := range tests {
		resp, err := http.Get(f.srv.URL + "/model-versions/get-artifact?" + tt.query)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tt.status {
			t.Errorf("%s: status %d (%s), want %d", tt.query, resp.StatusCode, b, tt.status)
			continue
		}
		if tt.code == "" && string(b) != tt.body {
			t.Errorf("%s: body %q, want %q", tt.query, b, tt.body)
		}
		if tt.code != "" && !strings.Contains(string(b), tt.code) {
			t.Errorf("%s: %s, want error code %s", tt.query, b, tt.code)
		}
	}
}
