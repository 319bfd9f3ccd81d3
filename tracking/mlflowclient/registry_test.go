package mlflowclient

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

var _ tracking.ModelRegistrar = (*Client)(nil)

// registryFixture is a run with a model logged under model/.
type registryFixture struct {
	f   *fakeMLflow
	c   *Client
	run tracking.Run
}

var modelFiles = map[string]string{
	"model/MLmodel":            "flavors: {cohort: {}}\n",
	"model/weights.bin":        "\x00\x01\x02weights",
	"model/metadata/info.json": `{"rounds":3}`,
}

func newRegistryFixture(t *testing.T) registryFixture {
	t.Helper()
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	exp, err := c.EnsureExperiment(ctx, "e")
	if err != nil {
		t.Fatal(err)
	}
	run, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "fedavg"})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range slices.Sorted(mapsKeys(modelFiles)) {
		if err := c.LogArtifact(ctx, run.Info.RunID, p, strings.NewReader(modelFiles[p])); err != nil {
			t.Fatal(err)
		}
	}
	flush(t, c)
	return registryFixture{f, c, run}
}

// readTree returns every file under dir, by slash path.
func readTree(t *testing.T, dir string) map[string]string {
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

// TestRegistryJobEnd is what a job does at its end and what the CLI reads
// back: ensure the model, register two versions from a run's artifact
// folder, point an alias, and download the champion.
func TestRegistryJobEnd(t *testing.T) {
	fx := newRegistryFixture(t)
	c, ctx := fx.c, t.Context()
	for range 2 { // the second finds it there
		if err := c.EnsureRegisteredModel(ctx, "fmnist"); err != nil {
			t.Fatalf("EnsureRegisteredModel = %v", err)
		}
	}
	if n := fx.f.countCalls("POST registered-models/create"); n != 2 {
		t.Errorf("registered-models/create calls = %d, want 2", n)
	}
	var versions []tracking.ModelVersion
	for i := range 2 {
		v, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{
			Name: "fmnist", Source: "runs:/" + fx.run.Info.RunID + "/model", RunID: fx.run.Info.RunID,
			Description: "round 3", Tags: map[string]string{"arm": "fedavg"},
		})
		if err != nil {
			t.Fatalf("CreateModelVersion %d = %v", i, err)
		}
		versions = append(versions, v)
	}
	wantSource := fx.run.Info.ArtifactURI + "/model"
	if !strings.HasPrefix(wantSource, "mlflow-artifacts:/") {
		t.Fatalf("run artifact URI %q", fx.run.Info.ArtifactURI)
	}
	v := versions[1]
	if v.Version != "2" || versions[0].Version != "1" || v.Source != wantSource || v.RunID != fx.run.Info.RunID ||
		v.Status != tracking.VersionReady || v.CurrentStage != tracking.StageNone || v.Description != "round 3" || v.CreationTime.IsZero() {
		t.Errorf("CreateModelVersion = %+v; want version 2 from %s", v, wantSource)
	}
	if got, _ := tagValue(v.Tags, "arm"); got != "fedavg" {
		t.Errorf("version tags = %v", v.Tags)
	}
	if err := c.SetRegisteredModelAlias(ctx, "fmnist", "champion", "1"); err != nil {
		t.Fatal(err)
	}
	if err := c.SetRegisteredModelAlias(ctx, "fmnist", "champion", "2"); err != nil { // moves it
		t.Fatal(err)
	}
	champ, err := c.GetModelVersionByAlias(ctx, "fmnist", "champion")
	if err != nil || champ.Version != "2" || !slices.Equal(champ.Aliases, []string{"champion"}) {
		t.Errorf("GetModelVersionByAlias = %+v, %v; want version 2 aliased champion", champ, err)
	}
	m, err := c.GetRegisteredModel(ctx, "fmnist")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]tracking.ModelAlias{{Alias: "champion", Version: "2"}}, m.Aliases); diff != "" {
		t.Errorf("model aliases (-want +got):\n%s", diff)
	}
	if len(m.LatestVersions) != 1 || m.LatestVersions[0].Version != "2" || !m.LastUpdatedTime.Equal(v.CreationTime) {
		t.Errorf("GetRegisteredModel = %+v", m)
	}
	v1, err := c.GetModelVersion(ctx, "fmnist", "1")
	if err != nil || v1.Source != wantSource || len(v1.Aliases) != 0 {
		t.Errorf("GetModelVersion(1) = %+v, %v", v1, err)
	}
	uri, err := c.GetModelVersionDownloadURI(ctx, "fmnist", "2")
	if err != nil || uri != wantSource {
		t.Errorf("GetModelVersionDownloadURI = %q, %v; want %q", uri, err, wantSource)
	}
	want := map[string]string{}
	for k, v := range modelFiles {
		want[strings.TrimPrefix(k, "model/")] = v
	}
	for _, src := range []string{uri, "models:/fmnist@champion", "models:/fmnist/2", "runs:/" + fx.run.Info.RunID + "/model"} {
		dest := filepath.Join(t.TempDir(), "out")
		if err := c.DownloadArtifacts(ctx, src, dest); err != nil {
			t.Fatalf("DownloadArtifacts(%s) = %v", src, err)
		}
		if diff := cmp.Diff(want, readTree(t, dest)); diff != "" {
			t.Errorf("DownloadArtifacts(%s) (-want +got):\n%s", src, diff)
		}
	}
	// One file.
	dest := t.TempDir()
	if err := c.DownloadArtifacts(ctx, wantSource+"/MLmodel", dest); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"MLmodel": modelFiles["model/MLmodel"]}, readTree(t, dest)); diff != "" {
		t.Errorf("one file (-want +got):\n%s", diff)
	}
	if err := c.DeleteRegisteredModelAlias(ctx, "fmnist", "champion"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.GetModelVersionByAlias(ctx, "fmnist", "champion"); !errors.Is(err, tracking.ErrNotFound) {
		t.Errorf("GetModelVersionByAlias after delete = %v, want ErrNotFound", err)
	}
}

func TestRegistrySearch(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	for _, n := range []string{"a-1", "a-2", "a-3", "b-1"} {
		if err := c.EnsureRegisteredModel(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if _, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "a-2", Source: "mlflow-artifacts:/0/x/artifacts/model"}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	q := tracking.RegistryQuery{Filter: "name LIKE 'a-%'", MaxResults: 2}
	for {
		ms, next, err := c.SearchRegisteredModels(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range ms {
			names = append(names, m.Name)
		}
		if next == "" {
			break
		}
		q.PageToken = next
	}
	if diff := cmp.Diff([]string{"a-1", "a-2", "a-3"}, names); diff != "" {
		t.Errorf("SearchRegisteredModels (-want +got):\n%s", diff)
	}
	vs, next, err := c.SearchModelVersions(ctx, tracking.RegistryQuery{Filter: "name = 'a-2'", MaxResults: 2})
	if err != nil || len(vs) != 2 || vs[0].Version != "3" || next == "" {
		t.Errorf("SearchModelVersions = %+v, %q, %v; want versions 3, 2 and a next page", vs, next, err)
	}
	f.mu.Lock()
	query := ""
	for _, c := range f.calls {
		if c == "GET registered-models/search" {
			query = c
		}
	}
	f.mu.Unlock()
	if query == "" {
		t.Error("no registered-models/search call")
	}
	if _, _, err := c.SearchRegisteredModels(ctx, tracking.RegistryQuery{Filter: "nonsense"}); !errors.Is(err, tracking.ErrInvalid) {
		t.Errorf("bad filter = %v, want ErrInvalid", err)
	}
}

func TestRegistryErrors(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	tests := []struct {
		name string
		call func() error
		want error
		code string // MLflow's error_code, "" when no request is made
	}{
		{"get missing model", func() error { _, err := c.GetRegisteredModel(ctx, "nope"); return err }, tracking.ErrNotFound, "RESOURCE_DOES_NOT_EXIST"},
		{"version of missing model", func() error {
			_, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "nope", Source: "mlflow-artifacts:/x"})
			return err
		}, tracking.ErrNotFound, "RESOURCE_DOES_NOT_EXIST"},
		{"missing version", func() error { _, err := c.GetModelVersion(ctx, "m", "9"); return err }, tracking.ErrNotFound, "RESOURCE_DOES_NOT_EXIST"},
		{"alias to missing version", func() error { return c.SetRegisteredModelAlias(ctx, "m", "champion", "9") }, tracking.ErrNotFound, "RESOURCE_DOES_NOT_EXIST"},
		{"empty name", func() error { return c.EnsureRegisteredModel(ctx, " ") }, tracking.ErrInvalid, ""},
		{"empty source", func() error {
			_, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "m"})
			return err
		}, tracking.ErrInvalid, ""},
		{"empty alias", func() error { return c.SetRegisteredModelAlias(ctx, "m", "", "1") }, tracking.ErrInvalid, ""},
		{"unknown placeholder run", func() error {
			_, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "m", Source: "x", RunID: newPlaceholder()})
			return err
		}, tracking.ErrNotFound, ""},
		{"not proxied", func() error { return c.DownloadArtifacts(ctx, "s3://bucket/x", t.TempDir()) }, ErrNoArtifactProxy, ""},
		{"models URI without version", func() error { return c.DownloadArtifacts(ctx, "models:/m", t.TempDir()) }, tracking.ErrInvalid, ""},
	}
	if err := c.EnsureRegisteredModel(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := func() int {
				f.mu.Lock()
				defer f.mu.Unlock()
				return len(f.calls)
			}
			before := calls()
			err := tt.call()
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			var ae *APIError
			switch {
			case tt.code != "" && (!errors.As(err, &ae) || ae.Code != tt.code):
				t.Errorf("err = %v, want an APIError %s", err, tt.code)
			case tt.code == "" && calls() != before:
				t.Errorf("%d requests made, want none", calls()-before)
			}
		})
	}
}

// TestCreateModelVersionFromPlaceholderRun: the run was made while the
// server was down; CreateModelVersion flushes first and registers the
// run's real ID and artifact location.
func TestCreateModelVersionFromPlaceholderRun(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	ctx := t.Context()
	f.setDown(2)
	exp, _ := c.EnsureExperiment(ctx, "e")
	run, err := c.CreateRun(ctx, tracking.CreateRun{ExperimentID: exp, Name: "fedavg"})
	if err != nil || !isPlaceholder(run.Info.RunID) {
		t.Fatalf("CreateRun = %s, %v; want a placeholder", run.Info.RunID, err)
	}
	if err := c.LogArtifact(ctx, run.Info.RunID, "model/w.bin", strings.NewReader("w")); err != nil {
		t.Fatal(err)
	}
	f.setDown(0)
	if err := c.EnsureRegisteredModel(ctx, "m"); err != nil {
		t.Fatal(err)
	}
	v, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "m", RunID: run.Info.RunID, Source: "runs:/" + run.Info.RunID + "/model",
		RunLink: "http://ui/#/runs/" + run.Info.RunID})
	if err != nil {
		t.Fatal(err)
	}
	ids := f.runsNamed("fedavg")
	if len(ids) != 1 {
		t.Fatalf("runs = %v", ids)
	}
	want := "mlflow-artifacts:/1/" + ids[0] + "/artifacts/model"
	if v.RunID != ids[0] || v.Source != want || v.RunLink != "http://ui/#/runs/"+run.Info.RunID {
		t.Errorf("version: run %s, source %s, link %s; want %s, %s", v.RunID, v.Source, v.RunLink, ids[0], want)
	}
	// A placeholder inside a plain URI is replaced too.
	v2, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "m", Source: "mlflow-artifacts:/1/" + run.Info.RunID + "/artifacts/model"})
	if err != nil || v2.Source != want {
		t.Errorf("version 2 source = %q, %v; want %q", v2.Source, err, want)
	}
	dest := t.TempDir()
	if err := c.DownloadArtifacts(ctx, v.Source, dest); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(map[string]string{"w.bin": "w"}, readTree(t, dest)); diff != "" {
		t.Errorf("downloaded (-want +got):\n%s", diff)
	}
}

// TestCreateModelVersionLostAnswer: the server registers the version and
// the answer is lost; the retry finds it by its create key.
func TestCreateModelVersionLostAnswer(t *testing.T) {
	for _, mode := range []int{1, 2} {
		f, srv := startFake(t)
		c := newTestClient(t, testConfig(t, srv.URL))
		ctx := t.Context()
		if err := c.EnsureRegisteredModel(ctx, "m"); err != nil {
			t.Fatal(err)
		}
		loseAnswers(f, "POST model-versions/create", 1, mode)
		v, err := c.CreateModelVersion(ctx, tracking.CreateModelVersion{Name: "m", Source: "mlflow-artifacts:/x"})
		if err != nil {
			t.Fatal(err)
		}
		f.mu.Lock()
		n := len(f.models["m"].versions)
		f.mu.Unlock()
		if n != 1 || v.Version != "1" {
			t.Errorf("mode %d: %d versions, got version %q; want exactly one, 1", mode, n, v.Version)
		}
	}
}

// TestDownloadArtifactsRefusesEscapes: names the server lists that would
// leave the destination are refused, and nothing is written outside it.
func TestDownloadArtifactsRefusesEscapes(t *testing.T) {
	for _, name := range []string{"..", "../evil", "a/../../evil", "/etc/evil", `..\evil`, "", "."} {
		t.Run(name, func(t *testing.T) {
			f, srv := startFake(t)
			c := newTestClient(t, testConfig(t, srv.URL))
			f.mu.Lock()
			f.hook = func(w http.ResponseWriter, r *http.Request, endpoint string) bool {
				switch endpoint {
				case "mlflow-artifacts-list":
					writeJSON(w, 200, map[string]any{"files": []map[string]any{{"path": name, "is_dir": false, "file_size": 4}}})
				case "mlflow-artifacts":
					_, _ = w.Write([]byte("evil"))
				default:
					return false
				}
				return true
			}
			f.mu.Unlock()
			parent := t.TempDir()
			dest := filepath.Join(parent, "sub", "out")
			err := c.DownloadArtifacts(t.Context(), "mlflow-artifacts:/0/r/artifacts/model", dest)
			if !errors.Is(err, tracking.ErrInvalid) || !strings.Contains(err.Error(), "refusing") {
				t.Errorf("DownloadArtifacts = %v, want a refusal", err)
			}
			if got := readTree(t, parent); len(got) != 0 {
				t.Errorf("files written: %v", got)
			}
		})
	}
}

// TestDownloadArtifactsSymlinkInDest: a symbolic link inside the
// destination that points out of it is not followed.
func TestDownloadArtifactsSymlinkInDest(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	f.artifacts["0/r/artifacts/model/link/x"] = []byte("x")
	outside, dest := t.TempDir(), t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dest, "link")); err != nil {
		t.Skip("no symbolic links here:", err)
	}
	if err := c.DownloadArtifacts(t.Context(), "mlflow-artifacts:/0/r/artifacts/model", dest); err == nil {
		t.Error("DownloadArtifacts through a link out of the destination = nil, want an error")
	}
	if got := readTree(t, outside); len(got) != 0 {
		t.Errorf("written outside: %v", got)
	}
}

func TestDownloadArtifactsSizeLimit(t *testing.T) {
	tests := []struct {
		name  string
		lie   bool // the listing understates the size
		limit int64
	}{
		{"listed too large", false, 10},
		{"sent more than listed", true, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := startFake(t)
			cfg := testConfig(t, srv.URL)
			cfg.MaxDownloadBytes = tt.limit
			c := newTestClient(t, cfg)
			f.artifacts["m/a"] = []byte("12345678")
			f.artifacts["m/b"] = []byte("12345678")
			if tt.lie {
				f.hook = func(w http.ResponseWriter, r *http.Request, endpoint string) bool {
					if endpoint != "mlflow-artifacts-list" {
						return false
					}
					writeJSON(w, 200, map[string]any{"files": []map[string]any{{"path": "a", "file_size": 1}, {"path": "b", "file_size": 1}}})
					return true
				}
			}
			dest := t.TempDir()
			err := c.DownloadArtifacts(t.Context(), "mlflow-artifacts:/m", dest)
			if !errors.Is(err, ErrDownloadTooLarge) || !strings.Contains(err.Error(), "MaxDownloadBytes") {
				t.Errorf("DownloadArtifacts = %v, want ErrDownloadTooLarge naming the limit", err)
			}
			if diff := cmp.Diff(map[string]string{"a": "12345678"}, readTree(t, dest)); diff != "" {
				t.Errorf("written (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDownloadRetriesCutTransfer: a transfer cut short is fetched again
// and the destination never holds the partial file.
func TestDownloadRetriesCutTransfer(t *testing.T) {
	f, srv := startFake(t)
	c := newTestClient(t, testConfig(t, srv.URL))
	content := strings.Repeat("0123456789", 1000)
	f.artifacts["m/big"] = []byte(content)
	cut := 1
	f.hook = func(w http.ResponseWriter, r *http.Request, endpoint string) bool {
		if endpoint != "mlflow-artifacts" || cut == 0 {
			return false
		}
		cut--
		w.Header().Set("Content-Length", "10000")
		_, _ = w.Write([]byte(content[:100]))
		conn, _, _ := w.(http.Hijacker).Hijack()
		conn.Close()
		return true
	}
	dest := t.TempDir()
	if err := c.DownloadArtifacts(t.Context(), "mlflow-artifacts:/m", dest); err != nil {
		t.Fatal(err)
	}
	if got := readTree(t, dest); got["big"] != content || len(got) != 1 {
		t.Errorf("downloaded %d files, big %d bytes; want 1, %d", len(got), len(got["big"]), len(content))
	}
}

// FuzzRegistryDecode: whatever the server sends as a model or version
// decodes without a panic, and a version's fields survive.
func FuzzRegistryDecode(f *testing.F) {
	f.Add([]byte(`{"registered_model":{"name":"m","creation_timestamp":1700000000000,"latest_versions":[{"name":"m","version":"1","aliases":["a"]}],"aliases":[{"alias":"a","version":"1"}],"tags":[{"key":"k","value":"v"}]}}`))
	f.Add([]byte(`{"registered_model":{"name":"m","creation_timestamp":"1700000000000"}}`))
	f.Add([]byte(`{"model_version":{"version":"12","last_updated_timestamp":null}}`))
	f.Add([]byte(`{"files":[{"path":"a","is_dir":true},{"path":"b","file_size":"12"}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var m struct {
			RegisteredModel mlflowwire.RegisteredModel `json:"registered_model"`
			ModelVersion    mlflowwire.ModelVersion    `json:"model_version"`
			Files           []mlflowwire.FileInfo      `json:"files"`
		}
		if json.Unmarshal(b, &m) != nil {
			return
		}
		got := m.RegisteredModel.ToTracking()
		if got.Name != m.RegisteredModel.Name || len(got.Aliases) != len(m.RegisteredModel.Aliases) || len(got.LatestVersions) != len(m.RegisteredModel.LatestVersions) {
			t.Errorf("model() = %+v from %+v", got, m.RegisteredModel)
		}
		v := m.ModelVersion.ToTracking()
		if v.Version != m.ModelVersion.Version || (m.ModelVersion.CreationTimestamp != 0 && v.CreationTime.UnixMilli() != int64(m.ModelVersion.CreationTimestamp)) {
			t.Errorf("version() = %+v from %+v", v, m.ModelVersion)
		}
	})
}

// FuzzListedName: a name the server lists is accepted only when it is one
// local path element, so the file it becomes stays in the destination.
func FuzzListedName(f *testing.F) {
	for _, s := range []string{"a", "..", "../x", "m/a", "m/../a", "/etc", `a\b`, "a:b", "", ".", "m/", "x\x00"} {
		f.Add("m", s)
	}
	f.Fuzz(func(t *testing.T, parent, listed string) {
		name, err := listedName(parent, listed)
		if err != nil {
			return
		}
		dest := filepath.Join("dest", "dir")
		full := filepath.Join(dest, name)
		if !filepath.IsLocal(name) || strings.ContainsAny(name, `/\`) || filepath.Dir(full) != dest {
			t.Errorf("listedName(%q, %q) = %q, which leaves %s (%s)", parent, listed, name, dest, full)
		}
	})
}

// BenchmarkDownloadArtifacts downloads a model of 64 files of 64 KiB in
// two folders from the fake server.
func BenchmarkDownloadArtifacts(b *testing.B) {
	f := newFake(nil)
	srv := httptest.NewServer(f)
	defer srv.Close()
	blob := []byte(strings.Repeat("w", 64<<10))
	for i := range 64 {
		f.artifacts[fmt.Sprintf("0/r/artifacts/model/part-%d/f%02d.bin", i%2, i)] = blob
	}
	c, err := newClient(Config{URI: srv.URL, SpoolDir: b.TempDir()}, noEnv)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(64 * 64 << 10)
	for b.Loop() {
		if err := c.DownloadArtifacts(b.Context(), "mlflow-artifacts:/0/r/artifacts/model", b.TempDir()); err != nil {
			b.Fatal(err)
		}
	}
}
