package mlflowserver

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/cohortfl/cohort/tracking"
)

// regServer is an httptest server over a real SQLite store.
type regServer struct {
	t     testing.TB
	store *tracking.SQLiteStore
	url   string
}

func newRegServer(t testing.TB) *regServer {
	t.Helper()
	dir := t.TempDir()
	store, err := tracking.OpenSQLite(context.Background(), filepath.Join(dir, "mlflow.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	s, err := New(store, Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return &regServer{t: t, store: store, url: srv.URL}
}

// do sends method path (with its query) and body (nil, a string of JSON,
// or a value to marshal) and returns the status and the JSON response.
func (f *regServer) do(method, path string, body any) (int, map[string]any) {
	f.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			f.t.Fatal(err)
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequest(method, f.url+path, rd)
	if err != nil {
		f.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			f.t.Fatalf("%s %s: response %.200q is not JSON: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode, out
}

// ok is do that fails the test on any status but 200.
func (f *regServer) ok(method, path string, body any) map[string]any {
	f.t.Helper()
	status, out := f.do(method, path, body)
	if status != http.StatusOK {
		f.t.Fatalf("%s %s: status %d, %v", method, path, status, out)
	}
	return out
}

func q(kv ...string) string {
	v := url.Values{}
	for i := 0; i+1 < len(kv); i += 2 {
		v.Add(kv[i], kv[i+1])
	}
	return "?" + v.Encode()
}

const regAPI = "/api/2.0/mlflow/"

// versionList returns name/version of each model version in a response list.
func versionList(out map[string]any, field string) []string {
	var got []string
	list, _ := out[field].([]any)
	for _, e := range list {
		m := e.(map[string]any)
		got = append(got, m["name"].(string)+"/"+m["version"].(string))
	}
	return got
}

func modelList(out map[string]any) []string {
	var got []string
	list, _ := out["registered_models"].([]any)
	for _, e := range list {
		got = append(got, e.(map[string]any)["name"].(string))
	}
	return got
}

func TestRegistryAPILifecycle(t *testing.T) {
	f := newRegServer(t)
	run, err := f.store.CreateRun(context.Background(), tracking.CreateRun{})
	if err != nil {
		t.Fatal(err)
	}
	runID := run.Info.RunID

	out := f.ok("POST", regAPI+"registered-models/create", map[string]any{
		"name": "fmnist", "description": "a CNN", "tags": []map[string]string{{"key": "team", "value": "kit"}},
	})
	rm := out["registered_model"].(map[string]any)
	if rm["name"] != "fmnist" || rm["description"] != "a CNN" || rm["creation_timestamp"].(float64) < 1.6e12 ||
		rm["last_updated_timestamp"] != rm["creation_timestamp"] {
		t.Fatalf("created %v", rm)
	}
	if tags := rm["tags"].([]any); len(tags) != 1 || tags[0].(map[string]any)["key"] != "team" || tags[0].(map[string]any)["value"] != "kit" {
		t.Fatalf("tags %v", rm["tags"])
	}
	for i, src := range []string{"runs:/" + runID + "/model", "/models/2", "/models/3"} {
		out := f.ok("POST", regAPI+"model-versions/create", map[string]any{
			"name": "fmnist", "source": src, "run_id": runID, "tags": []map[string]string{{"key": "round", "value": []string{"1", "2", "3"}[i]}},
		})
		mv := out["model_version"].(map[string]any)
		if mv["version"] != []string{"1", "2", "3"}[i] || mv["current_stage"] != "None" || mv["status"] != "READY" || mv["source"] != src || mv["run_id"] != runID {
			t.Fatalf("version %d: %v", i+1, mv)
		}
	}

	// Aliases.
	f.ok("POST", regAPI+"registered-models/alias", map[string]any{"name": "fmnist", "alias": "champion", "version": "1"})
	f.ok("POST", regAPI+"registered-models/alias", map[string]any{"name": "fmnist", "alias": "champion", "version": 2}) // moves it
	out = f.ok("GET", regAPI+"registered-models/alias"+q("name", "fmnist", "alias", "champion"), nil)
	if mv := out["model_version"].(map[string]any); mv["version"] != "2" || !slices.Equal(toStrings(mv["aliases"]), []string{"champion"}) {
		t.Fatalf("by alias: %v", mv)
	}

	// Search with filter and paging.
	var pages [][]string
	tok := ""
	for {
		args := []string{"filter", "name = 'fmnist' AND tags.round != '9'", "max_results", "2", "order_by", "version_number ASC"}
		if tok != "" {
			args = append(args, "page_token", tok)
		}
		out := f.ok("GET", regAPI+"model-versions/search"+q(args...), nil)
		pages = append(pages, versionList(out, "model_versions"))
		next, _ := out["next_page_token"].(string)
		if next == "" {
			break
		}
		tok = next
	}
	if len(pages) != 2 || !slices.Equal(pages[0], []string{"fmnist/1", "fmnist/2"}) || !slices.Equal(pages[1], []string{"fmnist/3"}) {
		t.Fatalf("pages %v; want [[fmnist/1 fmnist/2] [fmnist/3]]", pages)
	}
	out = f.ok("GET", regAPI+"model-versions/search"+q("filter", "tags.round = '2'"), nil)
	if got := versionList(out, "model_versions"); !slices.Equal(got, []string{"fmnist/2"}) {
		t.Fatalf("tag search %v", got)
	}
	out = f.ok("GET", "/ajax-api/2.0/mlflow/registered-models/search"+q("filter", "name LIKE 'fm%'", "order_by", "name DESC"), nil)
	if got := modelList(out); !slices.Equal(got, []string{"fmnist"}) {
		t.Fatalf("model search %v", got)
	}
	rm = out["registered_models"].([]any)[0].(map[string]any)
	if got := versionList(rm, "latest_versions"); !slices.Equal(got, []string{"fmnist/3"}) {
		t.Fatalf("latest_versions %v", got)
	}
	if al := rm["aliases"].([]any); len(al) != 1 || al[0].(map[string]any)["alias"] != "champion" || al[0].(map[string]any)["version"] != "2" {
		t.Fatalf("aliases %v", al)
	}

	// Stages.
	f.ok("POST", regAPI+"model-versions/transition-stage", map[string]any{"name": "fmnist", "version": "1", "stage": "Production", "archive_existing_versions": false})
	out = f.ok("POST", regAPI+"model-versions/transition-stage", map[string]any{"name": "fmnist", "version": "2", "stage": "production", "archive_existing_versions": true})
	if mv := out["model_version"].(map[string]any); mv["current_stage"] != "Production" {
		t.Fatalf("transition %v", mv)
	}
	out = f.ok("POST", regAPI+"registered-models/get-latest-versions", map[string]any{"name": "fmnist", "stages": []string{"Production"}})
	if got := versionList(out, "model_versions"); !slices.Equal(got, []string{"fmnist/2"}) {
		t.Fatalf("latest Production %v", got)
	}
	out = f.ok("GET", regAPI+"registered-models/get-latest-versions"+q("name", "fmnist", "stages", "Archived", "stages", "None"), nil)
	if got := versionList(out, "model_versions"); !slices.Equal(got, []string{"fmnist/1", "fmnist/3"}) {
		t.Fatalf("latest Archived, None %v; want v1 archived by archive_existing_versions, v3 None", got)
	}

	// Download URI: a runs:/ source resolves through the run.
	out = f.ok("GET", regAPI+"model-versions/get-download-uri"+q("name", "fmnist", "version", "1"), nil)
	if want := run.Info.ArtifactURI + "/model"; out["artifact_uri"] != want {
		t.Fatalf("artifact_uri %v; want %s", out["artifact_uri"], want)
	}

	// Updates and tags.
	out = f.ok("PATCH", regAPI+"registered-models/update", map[string]any{"name": "fmnist", "description": "new"})
	if out["registered_model"].(map[string]any)["description"] != "new" {
		t.Fatalf("update %v", out)
	}
	out = f.ok("PATCH", regAPI+"model-versions/update", map[string]any{"name": "fmnist", "version": "3", "description": "v3"})
	if out["model_version"].(map[string]any)["description"] != "v3" {
		t.Fatalf("update version %v", out)
	}
	f.ok("POST", regAPI+"registered-models/set-tag", map[string]any{"name": "fmnist", "key": "owner", "value": "ana"})
	f.ok("DELETE", regAPI+"registered-models/delete-tag"+q("name", "fmnist", "key", "team"), nil)
	f.ok("POST", regAPI+"model-versions/set-tag", map[string]any{"name": "fmnist", "version": "3", "key": "acc", "value": "0.93"})
	f.ok("DELETE", regAPI+"model-versions/delete-tag", map[string]any{"name": "fmnist", "version": "3", "key": "round"})
	out = f.ok("GET", regAPI+"model-versions/get"+q("name", "fmnist", "version", "3"), nil)
	if tags := out["model_version"].(map[string]any)["tags"].([]any); len(tags) != 1 || tags[0].(map[string]any)["key"] != "acc" {
		t.Fatalf("version tags %v", tags)
	}

	// Rename: the versions follow.
	out = f.ok("POST", regAPI+"registered-models/rename", map[string]any{"name": "fmnist", "new_name": "fmnist-cnn"})
	rm = out["registered_model"].(map[string]any)
	if rm["name"] != "fmnist-cnn" || len(rm["latest_versions"].([]any)) != 3 {
		t.Fatalf("rename %v", rm)
	}
	if tags := rm["tags"].([]any); len(tags) != 1 || tags[0].(map[string]any)["key"] != "owner" {
		t.Fatalf("renamed tags %v", tags)
	}
	out = f.ok("GET", regAPI+"model-versions/get"+q("name", "fmnist-cnn", "version", "2"), nil)
	if mv := out["model_version"].(map[string]any); mv["name"] != "fmnist-cnn" || !slices.Equal(toStrings(mv["aliases"]), []string{"champion"}) {
		t.Fatalf("renamed version %v", mv)
	}

	// Delete an alias, a version and the model.
	f.ok("DELETE", regAPI+"registered-models/alias"+q("name", "fmnist-cnn", "alias", "champion"), nil)
	f.ok("DELETE", regAPI+"model-versions/delete", map[string]any{"name": "fmnist-cnn", "version": "3"})
	out = f.ok("POST", regAPI+"model-versions/create", map[string]any{"name": "fmnist-cnn", "source": "/models/4"})
	if v := out["model_version"].(map[string]any)["version"]; v != "4" {
		t.Fatalf("after deleting version 3 the next is %v; want 4", v)
	}
	f.ok("DELETE", regAPI+"registered-models/delete"+q("name", "fmnist-cnn"), nil)
	if status, out := f.do("GET", regAPI+"model-versions/get"+q("name", "fmnist-cnn", "version", "1"), nil); status != http.StatusNotFound || out["error_code"] != "RESOURCE_DOES_NOT_EXIST" {
		t.Fatalf("version of a deleted model: %d %v", status, out)
	}
	out = f.ok("GET", regAPI+"model-versions/search", nil)
	if got := versionList(out, "model_versions"); len(got) != 0 {
		t.Fatalf("versions left after deleting the model: %v", got)
	}

	// Methods are MLflow's: a get is not served on POST, an update not on
	// POST (the server answers other methods with ENDPOINT_NOT_FOUND).
	for _, c := range []struct{ method, path string }{
		{"POST", "registered-models/get"}, {"POST", "registered-models/update"}, {"GET", "model-versions/create"}, {"POST", "model-versions/delete"},
	} {
		if status, out := f.do(c.method, regAPI+c.path, "{}"); status != http.StatusNotFound || out["error_code"] != "ENDPOINT_NOT_FOUND" {
			t.Errorf("%s %s: %d %v; want 404 ENDPOINT_NOT_FOUND", c.method, c.path, status, out)
		}
	}
}

func toStrings(v any) []string {
	var out []string
	list, _ := v.([]any)
	for _, e := range list {
		out = append(out, e.(string))
	}
	return out
}

func TestRegistryAPIBadInput(t *testing.T) {
	f := newRegServer(t)
	f.ok("POST", regAPI+"registered-models/create", map[string]any{"name": "m"})
	f.ok("POST", regAPI+"model-versions/create", map[string]any{"name": "m", "source": "/x"})
	f.ok("POST", regAPI+"registered-models/create", map[string]any{"name": "gone"})
	f.ok("POST", regAPI+"model-versions/create", map[string]any{"name": "gone", "source": "/y"})
	f.ok("DELETE", regAPI+"registered-models/delete", map[string]any{"name": "gone"})
	big := strings.Repeat("d", 10<<20)

	for _, c := range []struct {
		name         string
		method, path string
		body         any
		status       int
		code, msg    string
	}{
		{"no name", "POST", "registered-models/create", map[string]any{}, 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'name'"},
		{"duplicate name", "POST", "registered-models/create", map[string]any{"name": "m"}, 400, "RESOURCE_ALREADY_EXISTS", "Registered Model (name=m) already exists"},
		{"slash in name", "POST", "registered-models/create", map[string]any{"name": "a/b"}, 400, "INVALID_PARAMETER_VALUE", "may not contain '/'"},
		{"control in name", "POST", "registered-models/create", map[string]any{"name": "a\u0001b"}, 400, "INVALID_PARAMETER_VALUE", "control character"},
		{"slash in new name", "POST", "registered-models/rename", map[string]any{"name": "m", "new_name": "x/y"}, 400, "INVALID_PARAMETER_VALUE", "(new_name) contains '/'"},
		{"10 MB description", "POST", "registered-models/create", map[string]any{"name": "big", "description": big}, 400, "INVALID_PARAMETER_VALUE", "the description is 10485760 characters long; the limit is 5000"},
		{"10 MB version description", "POST", "model-versions/create", map[string]any{"name": "m", "source": "/z", "description": big}, 400, "INVALID_PARAMETER_VALUE", "the limit is 5000"},
		{"unknown model", "GET", "registered-models/get" + q("name", "nope"), nil, 404, "RESOURCE_DOES_NOT_EXIST", "Registered Model with name=nope not found"},
		{"unknown version", "GET", "model-versions/get" + q("name", "m", "version", "9"), nil, 404, "RESOURCE_DOES_NOT_EXIST", "Model Version (name=m, version=9) not found"},
		{"bad version", "GET", "model-versions/get" + q("name", "m", "version", "one"), nil, 400, "INVALID_PARAMETER_VALUE", "parameter 'version' must be a positive integer"},
		{"no version", "GET", "model-versions/get" + q("name", "m"), nil, 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'version'"},
		{"alias on missing version", "POST", "registered-models/alias", map[string]any{"name": "m", "alias": "champion", "version": "7"}, 404, "RESOURCE_DOES_NOT_EXIST", "Model Version (name=m, version=7) not found"},
		{"alias not set", "GET", "registered-models/alias" + q("name", "m", "alias", "nope"), nil, 400, "INVALID_PARAMETER_VALUE", "Registered model alias nope not found."},
		{"reserved alias", "POST", "registered-models/alias", map[string]any{"name": "m", "alias": "latest", "version": "1"}, 400, "INVALID_PARAMETER_VALUE", "reserved"},
		{"deleted model's version", "GET", "model-versions/get" + q("name", "gone", "version", "1"), nil, 404, "RESOURCE_DOES_NOT_EXIST", "Model Version (name=gone, version=1) not found"},
		{"version of a deleted model", "POST", "model-versions/create", map[string]any{"name": "gone", "source": "/y"}, 404, "RESOURCE_DOES_NOT_EXIST", "Registered Model with name=gone not found"},
		{"no source", "POST", "model-versions/create", map[string]any{"name": "m"}, 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'source'"},
		{"no archive flag", "POST", "model-versions/transition-stage", map[string]any{"name": "m", "version": "1", "stage": "Staging"}, 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'archive_existing_versions'"},
		{"bad stage", "POST", "model-versions/transition-stage", map[string]any{"name": "m", "version": "1", "stage": "Prod", "archive_existing_versions": false}, 400, "INVALID_PARAMETER_VALUE", "must be one of None, Staging, Production, Archived"},
		{"bad filter", "GET", "model-versions/search" + q("filter", "metrics.acc > 1"), nil, 400, "INVALID_PARAMETER_VALUE", "invalid entity"},
		{"bad order_by", "GET", "registered-models/search" + q("order_by", "run_id"), nil, 400, "INVALID_PARAMETER_VALUE", "invalid order_by key"},
		{"bad max_results", "GET", "model-versions/search" + q("max_results", "ten"), nil, 400, "INVALID_PARAMETER_VALUE", "Invalid value for parameter 'max_results'"},
		{"max_results too big", "GET", "registered-models/search" + q("max_results", "1001"), nil, 400, "INVALID_PARAMETER_VALUE", "between 1 and 1000"},
		{"bad page token", "GET", "registered-models/search" + q("page_token", "xyz"), nil, 400, "INVALID_PARAMETER_VALUE", "page token"},
		{"malformed JSON", "POST", "registered-models/create", `{"name": `, 400, "INVALID_PARAMETER_VALUE", "Malformed JSON"},
		{"tag without key", "POST", "registered-models/create", map[string]any{"name": "t", "tags": []map[string]string{{"value": "v"}}}, 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'tags[0].key'"},
		{"tag value missing", "POST", "registered-models/set-tag", map[string]any{"name": "m", "key": "k"}, 400, "INVALID_PARAMETER_VALUE", "Missing value for required parameter 'value'"},
		{"delete unknown model", "DELETE", "registered-models/delete" + q("name", "nope"), nil, 404, "RESOURCE_DOES_NOT_EXIST", "Registered Model with name=nope not found"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, out := f.do(c.method, regAPI+c.path, c.body)
			msg, _ := out["message"].(string)
			if status != c.status || out["error_code"] != c.code || !strings.Contains(msg, c.msg) {
				t.Fatalf("%s %s: %d %v %.300q; want %d %s containing %q", c.method, c.path, status, out["error_code"], msg, c.status, c.code, c.msg)
			}
			if strings.Contains(msg, "tracking.") || strings.Contains(msg, "regString") || strings.Contains(msg, "mlflowwire") {
				t.Fatalf("message names a Go type: %q", msg)
			}
		})
	}
	// Nothing half-written.
	if got := modelList(f.ok("GET", regAPI+"registered-models/search", nil)); !slices.Equal(got, []string{"m"}) {
		t.Fatalf("models after the bad requests: %v; want [m]", got)
	}
	if got := versionList(f.ok("GET", regAPI+"model-versions/search", nil), "model_versions"); !slices.Equal(got, []string{"m/1"}) {
		t.Fatalf("versions after the bad requests: %v; want [m/1]", got)
	}
	out := f.ok("GET", regAPI+"model-versions/get"+q("name", "m", "version", "1"), nil)
	if mv := out["model_version"].(map[string]any); mv["current_stage"] != "None" || mv["aliases"] != nil {
		t.Fatalf("version 1 changed by refused requests: %v", mv)
	}
}

// FuzzRegistrySearch sends arbitrary filter, order_by, max_results and
// page_token to both search endpoints: the answer is 200 or an MLflow 400
// INVALID_PARAMETER_VALUE, never a 5xx.
func FuzzRegistrySearch(f *testing.F) {
	for _, seed := range [][4]string{
		{"", "", "", ""}, {"name = 'm'", "name DESC", "1", ""}, {"tags.k LIKE '%'", "version_number", "5", "eyJvZmZzZXQiOiAxfQ=="},
		{"run_id IN ('a', 'b')", "timestamp", "0", ""}, {"version_number > '1'", "creation_timestamp ASC", "-1", "bad"},
		{"name = 'a' AND", "`name`", "9999999999999", ""},
	} {
		f.Add(seed[0], seed[1], seed[2], seed[3])
	}
	srv := newRegServer(f)
	srv.ok("POST", regAPI+"registered-models/create", map[string]any{"name": "m", "tags": []map[string]string{{"key": "k", "value": "v"}}})
	srv.ok("POST", regAPI+"model-versions/create", map[string]any{"name": "m", "source": "/x", "run_id": "a"})
	f.Fuzz(func(t *testing.T, filter, orderBy, maxResults, pageToken string) {
		srv.t = t
		v := url.Values{}
		for k, val := range map[string]string{"filter": filter, "order_by": orderBy, "max_results": maxResults, "page_token": pageToken} {
			if val != "" {
				v.Set(k, val)
			}
		}
		for _, path := range []string{"model-versions/search", "registered-models/search"} {
			status, out := srv.do("GET", regAPI+path+"?"+v.Encode(), nil)
			if status != http.StatusOK && (status != http.StatusBadRequest || out["error_code"] != "INVALID_PARAMETER_VALUE") {
				t.Fatalf("GET %s?%s: %d %v", path, v.Encode(), status, out)
			}
		}
	})
}
