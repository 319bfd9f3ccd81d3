package mlflowclient

import (
	"cmp"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// rawBody is a response the fake sends as it is, not as JSON.
type rawBody []byte

// listArtifacts answers GET mlflow-artifacts/artifacts?path=p as MLflow
// does: the base names of the folder's entries; nothing for a file or a
// missing folder.
func (f *fakeMLflow) listArtifacts(p string) map[string]any {
	seen := map[string]bool{}
	var files []map[string]any
	prefix := p + "/"
	if p == "" {
		prefix = ""
	}
	for _, k := range slices.Sorted(mapsKeys(f.artifacts)) {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok || rest == "" {
			continue
		}
		name, _, dir := strings.Cut(rest, "/")
		if seen[name] {
			continue
		}
		seen[name] = true
		fi := map[string]any{"path": name, "is_dir": dir}
		if !dir {
			fi["file_size"] = len(f.artifacts[k])
		}
		files = append(files, fi)
	}
	out := map[string]any{}
	if files != nil {
		out["files"] = files
	}
	return out
}

func (f *fakeMLflow) modelJSON(m *fakeModel) map[string]any {
	out := map[string]any{"name": m.name, "creation_timestamp": m.created, "last_updated_timestamp": m.updated}
	if m.description != "" {
		out["description"] = m.description
	}
	var tags []mlflowwire.KeyValue
	for _, k := range slices.Sorted(mapsKeys(m.tags)) {
		tags = append(tags, mlflowwire.KeyValue{Key: k, Value: m.tags[k]})
	}
	if tags != nil {
		out["tags"] = tags
	}
	var aliases []mlflowwire.ModelAlias
	for _, a := range slices.Sorted(mapsKeys(m.aliases)) {
		aliases = append(aliases, mlflowwire.ModelAlias{Alias: a, Version: m.aliases[a]})
	}
	if aliases != nil {
		out["aliases"] = aliases
	}
	if n := len(m.versions); n > 0 {
		out["latest_versions"] = []any{f.versionJSON(m, m.versions[n-1])}
	}
	return out
}

// versionJSON writes a version as MLflow does: version a string, aliases
// strings, timestamps numbers.
func (f *fakeMLflow) versionJSON(m *fakeModel, v *mlflowwire.ModelVersion) map[string]any {
	out := map[string]any{"name": v.Name, "version": v.Version, "creation_timestamp": int64(v.CreationTimestamp),
		"last_updated_timestamp": int64(v.LastUpdatedTimestamp), "current_stage": "None", "source": v.Source,
		"status": "READY"}
	if v.RunID != "" {
		out["run_id"] = v.RunID
	}
	if v.RunLink != "" {
		out["run_link"] = v.RunLink
	}
	if v.Description != "" {
		out["description"] = v.Description
	}
	if v.Tags != nil {
		out["tags"] = v.Tags
	}
	var aliases []string
	for _, a := range slices.Sorted(mapsKeys(m.aliases)) {
		if m.aliases[a] == v.Version {
			aliases = append(aliases, a)
		}
	}
	if aliases != nil {
		out["aliases"] = aliases
	}
	return out
}

func (f *fakeMLflow) model(name string) (*fakeModel, *mlflowErr) {
	if name == "" {
		return nil, invalid("Missing value for required parameter 'name'.")
	}
	m := f.models[name]
	if m == nil {
		return nil, notExist("Registered Model with name=%s not found", name)
	}
	return m, nil
}

func (f *fakeMLflow) version(m *fakeModel, v string) (*mlflowwire.ModelVersion, *mlflowErr) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return nil, invalid("Parameter 'version' must be an integer, got '%s'.", v)
	}
	if n > len(m.versions) {
		return nil, notExist("Model Version (name=%s, version=%s) not found", m.name, v)
	}
	return m.versions[n-1], nil
}

var (
	versionFilterRE = regexp.MustCompile(`^name = '([^']*)'(?: AND tags\.cohort\.create_key = '([0-9a-f]+)')?$`)
	modelFilterRE   = regexp.MustCompile(`^name LIKE '([^'%]*)%'$`)
)

// handleRegistry serves the model-registry endpoints; ok is false for any
// other.
func (f *fakeMLflow) handleRegistry(r *http.Request, endpoint string, body []byte) (any, *mlflowErr, bool) {
	q := r.URL.Query()
	switch r.Method + " " + endpoint {
	case "POST registered-models/create":
		var req struct {
			Name        string                `json:"name"`
			Tags        []mlflowwire.KeyValue `json:"tags"`
			Description string                `json:"description"`
		}
		if e := decode(body, &req); e != nil {
			return nil, e, true
		}
		if req.Name == "" {
			return nil, invalid("Missing value for required parameter 'name'."), true
		}
		if f.models[req.Name] != nil {
			return nil, &mlflowErr{400, "RESOURCE_ALREADY_EXISTS", fmt.Sprintf("Registered Model (name=%s) already exists.", req.Name)}, true
		}
		f.modelSeq++
		m := &fakeModel{name: req.Name, description: req.Description, created: 1700000000000 + f.modelSeq, tags: map[string]string{}, aliases: map[string]string{}}
		m.updated = m.created
		for _, t := range req.Tags {
			m.tags[t.Key] = t.Value
		}
		f.models[req.Name] = m
		return map[string]any{"registered_model": f.modelJSON(m)}, nil, true
	case "GET registered-models/get":
		m, e := f.model(q.Get("name"))
		if e != nil {
			return nil, e, true
		}
		return map[string]any{"registered_model": f.modelJSON(m)}, nil, true
	case "GET registered-models/search":
		var names []string
		for _, n := range slices.Sorted(mapsKeys(f.models)) {
			switch flt := q.Get("filter"); {
			case flt == "":
			case modelFilterRE.MatchString(flt):
				if !strings.HasPrefix(n, modelFilterRE.FindStringSubmatch(flt)[1]) {
					continue
				}
			default:
				return nil, invalid("Invalid filter '%s'", flt), true
			}
			names = append(names, n)
		}
		var ms []any
		for _, n := range names {
			ms = append(ms, f.modelJSON(f.models[n]))
		}
		return f.page(q, "registered_models", ms), nil, true
	case "POST model-versions/create":
		var req createVersionReq
		if e := decode(body, &req); e != nil {
			return nil, e, true
		}
		if req.Source == "" {
			return nil, invalid("Missing value for required parameter 'source'."), true
		}
		m, e := f.model(req.Name)
		if e != nil {
			return nil, e, true
		}
		f.modelSeq++
		v := &mlflowwire.ModelVersion{Name: m.name, Version: strconv.Itoa(len(m.versions) + 1), CreationTimestamp: mlflowwire.Int64(1700000000000 + f.modelSeq),
			Source: req.Source, RunID: req.RunID, RunLink: req.RunLink, Description: req.Description, Tags: req.Tags}
		v.LastUpdatedTimestamp = v.CreationTimestamp
		m.versions = append(m.versions, v)
		m.updated = int64(v.CreationTimestamp)
		return map[string]any{"model_version": f.versionJSON(m, v)}, nil, true
	case "GET model-versions/get", "GET model-versions/get-download-uri":
		m, e := f.model(q.Get("name"))
		if e != nil {
			return nil, e, true
		}
		v, e := f.version(m, q.Get("version"))
		if e != nil {
			return nil, e, true
		}
		if endpoint == "model-versions/get" {
			return map[string]any{"model_version": f.versionJSON(m, v)}, nil, true
		}
		return map[string]any{"artifact_uri": v.Source}, nil, true
	case "GET model-versions/search":
		mm := versionFilterRE.FindStringSubmatch(q.Get("filter"))
		if mm == nil {
			return nil, invalid("Invalid filter '%s'", q.Get("filter")), true
		}
		var vs []any
		if m := f.models[mm[1]]; m != nil {
			for _, v := range slices.Backward(m.versions) { // MLflow: newest first
				key := ""
				for _, t := range v.Tags {
					if t.Key == TagCreateKey {
						key = t.Value
					}
				}
				if mm[2] == "" || key == mm[2] {
					vs = append(vs, f.versionJSON(m, v))
				}
			}
		}
		return f.page(q, "model_versions", vs), nil, true
	case "POST registered-models/alias":
		var req struct {
			Name    string `json:"name"`
			Alias   string `json:"alias"`
			Version string `json:"version"`
		}
		if e := decode(body, &req); e != nil {
			return nil, e, true
		}
		m, e := f.model(req.Name)
		if e != nil {
			return nil, e, true
		}
		if _, e := f.version(m, req.Version); e != nil {
			return nil, e, true
		}
		m.aliases[req.Alias] = req.Version
		return map[string]any{}, nil, true
	case "DELETE registered-models/alias":
		// MLflow's server reads a DELETE's fields from the JSON body.
		var req struct {
			Name  string `json:"name"`
			Alias string `json:"alias"`
		}
		if e := decode(body, &req); e != nil {
			return nil, e, true
		}
		m, e := f.model(req.Name)
		if e != nil {
			return nil, e, true
		}
		delete(m.aliases, req.Alias)
		return map[string]any{}, nil, true
	case "GET registered-models/alias":
		m, e := f.model(q.Get("name"))
		if e != nil {
			return nil, e, true
		}
		v, ok := m.aliases[q.Get("alias")]
		if !ok {
			// MLflow's code for it, not RESOURCE_DOES_NOT_EXIST.
			return nil, invalid("Registered model alias %s not found.", q.Get("alias")), true
		}
		mv, _ := f.version(m, v)
		return map[string]any{"model_version": f.versionJSON(m, mv)}, nil, true
	}
	return nil, nil, false
}

// page cuts a search result into pages of max_results (at most 2, to
// exercise paging).
func (f *fakeMLflow) page(q map[string][]string, field string, all []any) map[string]any {
	get := func(k string) string {
		if v := q[k]; len(v) > 0 {
			return v[0]
		}
		return ""
	}
	off, _ := strconv.Atoi(get("page_token"))
	n, _ := strconv.Atoi(get("max_results"))
	n = min(cmp.Or(n, 100), 2)
	end := min(off+n, len(all))
	out := map[string]any{}
	if page := all[min(off, len(all)):end]; len(page) > 0 {
		out[field] = page
	}
	if end < len(all) {
		out["next_page_token"] = strconv.Itoa(end)
	}
	return out
}
