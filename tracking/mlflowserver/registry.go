package mlflowserver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"strconv"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// registryRoutes adds MLflow's model-registry endpoints (REST API 2.0,
// model_registry.proto) with the HTTP methods MLflow serves them on.
func (s *Server) registryRoutes(api func(method, path string, h handler)) {
	api("POST", "registered-models/create", s.createRegisteredModel)
	api("GET", "registered-models/get", s.getRegisteredModel)
	api("POST", "registered-models/rename", s.renameRegisteredModel)
	api("PATCH", "registered-models/update", s.updateRegisteredModel)
	api("DELETE", "registered-models/delete", s.deleteRegisteredModel)
	api("GET", "registered-models/search", s.searchRegisteredModels)
	api("POST", "registered-models/set-tag", s.setRegisteredModelTag)
	api("DELETE", "registered-models/delete-tag", s.deleteRegisteredModelTag)
	api("POST", "registered-models/alias", s.setRegisteredModelAlias)
	api("DELETE", "registered-models/alias", s.deleteRegisteredModelAlias)
	api("GET", "registered-models/alias", s.getModelVersionByAlias)
	api("POST", "registered-models/get-latest-versions", s.getLatestVersions)
	api("GET", "registered-models/get-latest-versions", s.getLatestVersions)
	api("POST", "model-versions/create", s.createModelVersion)
	api("GET", "model-versions/get", s.getModelVersion)
	api("PATCH", "model-versions/update", s.updateModelVersion)
	api("DELETE", "model-versions/delete", s.deleteModelVersion)
	api("GET", "model-versions/search", s.searchModelVersions)
	api("POST", "model-versions/set-tag", s.setModelVersionTag)
	api("DELETE", "model-versions/delete-tag", s.deleteModelVersionTag)
	api("POST", "model-versions/transition-stage", s.transitionModelVersionStage)
	api("GET", "model-versions/get-download-uri", s.getModelVersionDownloadURI)
}

// regString is a protobuf string field in JSON; it also takes a number
// (a version given as 3 rather than "3"). set records whether it was
// present.
type regString struct {
	v   string
	set bool
}

func (j *regString) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		return nil
	case len(b) > 0 && b[0] == '"':
		if err := json.Unmarshal(b, &j.v); err != nil {
			return err
		}
	default:
		if _, err := strconv.ParseInt(string(b), 10, 64); err != nil {
			return &json.UnmarshalTypeError{Value: "value " + string(b), Type: stringType}
		}
		j.v = string(b)
	}
	j.set = true
	return nil
}

var stringType = reflect.TypeFor[string]()

// req returns the field's value, or MLflow's missing-parameter error when
// it is absent or empty.
func (j regString) req(field string) (string, error) {
	if j.v == "" {
		return "", missing(field)
	}
	return j.v, nil
}

// regListParams are the query parameters a GET may repeat.
var regListParams = map[string]bool{"stages": true, "order_by": true}

// regDecode reads a registry request into v: a GET's or DELETE's query
// parameters (as MLflow reads them), then a JSON body for every method but
// GET. Body fields win over query parameters.
func (s *Server) regDecode(w http.ResponseWriter, r *http.Request, v any) error {
	if r.Method == http.MethodGet || r.Method == http.MethodDelete {
		if err := queryInto(r.URL.Query(), v); err != nil {
			return err
		}
	}
	if r.Method == http.MethodGet {
		return nil
	}
	return s.decode(w, r, v)
}

// queryInto sets v's JSON fields from query parameters.
func queryInto(q url.Values, v any) error {
	if len(q) == 0 {
		return nil
	}
	m := make(map[string]any, len(q))
	for k, vals := range q {
		if regListParams[k] {
			m[k] = vals
		} else {
			m[k] = vals[0]
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		return invalid("Malformed query parameters: %v", err)
	}
	if err := json.NewDecoder(bytes.NewReader(b)).Decode(v); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) && te.Field != "" {
			return invalid("Invalid value for parameter '%s' supplied: %s (want %s)", te.Field, te.Value, te.Type)
		}
		return invalid("Malformed query parameters: %v", err)
	}
	return nil
}

// mlflowMessager is an error that knows MLflow's message for itself (the
// store's registry errors).
type mlflowMessager interface{ MLflowMessage() string }

// regError maps a store error to MLflow's code, with MLflow's message
// where the store gives one ("Registered Model with name=x not found").
func regError(err error) error {
	ae := toAPIError(err)
	var m mlflowMessager
	if errors.As(err, &m) {
		ae.msg = m.MLflowMessage()
	}
	return ae
}

func regOK(w http.ResponseWriter, v any) error {
	if v == nil {
		v = struct{}{}
	}
	writeJSON(w, http.StatusOK, v)
	return nil
}

// --- registered models ---

func (s *Server) createRegisteredModel(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name        regString             `json:"name"`
		Tags        []mlflowwire.KeyValue `json:"tags"`
		Description string                `json:"description"`
	}
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.req("name")
	if err != nil {
		return err
	}
	tags, err := regTagMap(req.Tags)
	if err != nil {
		return err
	}
	rm, err := s.store.CreateRegisteredModel(r.Context(), name, req.Description, tags)
	if err != nil {
		return regError(err)
	}
	return regOK(w, mlflowwire.RegisteredModelResponse{RegisteredModel: mlflowwire.FromRegisteredModel(rm)})
}

// regTagMap turns request tags into a map, refusing a key given twice
// with different values and a tag without a key.
func regTagMap(tags []mlflowwire.KeyValue) (map[string]string, error) {
	m := make(map[string]string, len(tags))
	for i, t := range tags {
		if t.Key == "" {
			return nil, missing(fmt.Sprintf("tags[%d].key", i))
		}
		if v, ok := m[t.Key]; ok && v != t.Value {
			return nil, invalid("Invalid value for parameter 'tags' supplied: key %q is given twice, as %q and %q", t.Key, v, t.Value)
		}
		m[t.Key] = t.Value
	}
	return m, nil
}

type regNameRequest struct {
	Name regString `json:"name"`
}

func (s *Server) getRegisteredModel(w http.ResponseWriter, r *http.Request) error {
	var req regNameRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.req("name")
	if err != nil {
		return err
	}
	rm, err := s.store.GetRegisteredModel(r.Context(), name)
	if err != nil {
		return regError(err)
	}
	return regOK(w, mlflowwire.RegisteredModelResponse{RegisteredModel: mlflowwire.FromRegisteredModel(rm)})
}

func (s *Server) renameRegisteredModel(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name    regString `json:"name"`
		NewName regString `json:"new_name"`
	}
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.req("name")
	if err != nil {
		return err
	}
	newName, err := req.NewName.req("new_name")
	if err != nil {
		return err
	}
	rm, err := s.store.RenameRegisteredModel(r.Context(), name, newName)
	if err != nil {
		return regError(err)
	}
	return regOK(w, mlflowwire.RegisteredModelResponse{RegisteredModel: mlflowwire.FromRegisteredModel(rm)})
}

func (s *Server) updateRegisteredModel(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name        regString `json:"name"`
		Description string    `json:"description"`
	}
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.req("name")
	if err != nil {
		return err
	}
	rm, err := s.store.UpdateRegisteredModel(r.Context(), name, req.Description)
	if err != nil {
		return regError(err)
	}
	return regOK(w, mlflowwire.RegisteredModelResponse{RegisteredModel: mlflowwire.FromRegisteredModel(rm)})
}

func (s *Server) deleteRegisteredModel(w http.ResponseWriter, r *http.Request) error {
	var req regNameRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.req("name")
	if err != nil {
		return err
	}
	if err := s.store.DeleteRegisteredModel(r.Context(), name); err != nil {
		return regError(err)
	}
	return regOK(w, nil)
}

type regSearchRequest struct {
	Filter     string            `json:"filter"`
	MaxResults *mlflowwire.Int64 `json:"max_results"`
	OrderBy    []string          `json:"order_by"`
	PageToken  string            `json:"page_token"`
}

func (q regSearchRequest) query() (tracking.RegistryQuery, error) {
	var n int64
	if q.MaxResults != nil {
		n = int64(*q.MaxResults)
		if n < 1 {
			return tracking.RegistryQuery{}, invalid("Invalid value %d for parameter 'max_results' supplied: it must be a positive integer", n)
		}
	}
	if n > 1<<31 {
		return tracking.RegistryQuery{}, invalid("Invalid value %d for parameter 'max_results' supplied: it is too large", n)
	}
	return tracking.RegistryQuery{Filter: q.Filter, OrderBy: q.OrderBy, MaxResults: int(n), PageToken: q.PageToken}, nil
}

func (s *Server) searchRegisteredModels(w http.ResponseWriter, r *http.Request) error {
	var req regSearchRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	q, err := req.query()
	if err != nil {
		return err
	}
	rms, next, err := s.store.SearchRegisteredModels(r.Context(), q)
	if err != nil {
		return regError(err)
	}
	out := mlflowwire.SearchRegisteredModelsResponse{NextPageToken: next}
	for _, rm := range rms {
		out.RegisteredModels = append(out.RegisteredModels, mlflowwire.FromRegisteredModel(rm))
	}
	return regOK(w, out)
}

type regTagRequest struct {
	Name    regString `json:"name"`
	Version regString `json:"version"`
	Key     regString `json:"key"`
	Value   regString `json:"value"`
}

func (s *Server) setRegisteredModelTag(w http.ResponseWriter, r *http.Request) error {
	var req regTagRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.req("name")
	if err != nil {
		return err
	}
	key, err := req.Key.req("key")
	if err != nil {
		return err
	}
	if !req.Value.set {
		return missing("value")
	}
	if err := s.store.SetRegisteredModelTag(r.Context(), name, tracking.Tag{Key: key, Value: req.Value.v}); err != nil {
		return regError(err)
	}
	return regOK(w, nil)
}

func (s *Server) deleteRegisteredModelTag(w http.ResponseWriter, r *http.Request) error {
	var req regTagRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.req("name")
	if err != nil {
		return err
	}
	key, err := req.Key.req("key")
	if err != nil {
		return err
	}
	if err := s.store.DeleteRegisteredModelTag(r.Context(), name, key); err != nil {
		return regError(err)
	}
	return regOK(w, nil)
}

type regAliasRequest struct {
	Name    regString `json:"name"`
	Alias   regString `json:"alias"`
	Version regString `json:"version"`
}

func (r regAliasRequest) nameAlias() (string, string, error) {
	name, err := r.Name.req("name")
	if err != nil {
		return "", "", err
	}
	alias, err := r.Alias.req("alias")
	return name, alias, err
}

func (s *Server) setRegisteredModelAlias(w http.ResponseWriter, r *http.Request) error {
	var req regAliasRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, alias, err := req.nameAlias()
	if err != nil {
		return err
	}
	version, err := req.Version.req("version")
	if err != nil {
		return err
	}
	if err := s.store.SetRegisteredModelAlias(r.Context(), name, alias, version); err != nil {
		return regError(err)
	}
	return regOK(w, nil)
}

func (s *Server) deleteRegisteredModelAlias(w http.ResponseWriter, r *http.Request) error {
	var req regAliasRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, alias, err := req.nameAlias()
	if err != nil {
		return err
	}
	if err := s.store.DeleteRegisteredModelAlias(r.Context(), name, alias); err != nil {
		return regError(err)
	}
	return regOK(w, nil)
}

func (s *Server) getModelVersionByAlias(w http.ResponseWriter, r *http.Request) error {
	var req regAliasRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, alias, err := req.nameAlias()
	if err != nil {
		return err
	}
	mv, err := s.store.GetModelVersionByAlias(r.Context(), name, alias)
	if errors.Is(err, tracking.ErrNotFound) {
		// MLflow answers an alias that is not set with INVALID_PARAMETER_VALUE.
		return apiError{code: codeInvalidParameter, msg: fmt.Sprintf("Registered model alias %s not found.", alias), err: err}
	}
	if err != nil {
		return regError(err)
	}
	return regOK(w, mlflowwire.ModelVersionResponse{ModelVersion: mlflowwire.FromModelVersion(mv)})
}

func (s *Server) getLatestVersions(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name   regString `json:"name"`
		Stages []string  `json:"stages"`
	}
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.req("name")
	if err != nil {
		return err
	}
	mvs, err := s.store.GetLatestVersions(r.Context(), name, req.Stages)
	if err != nil {
		return regError(err)
	}
	out := mlflowwire.ModelVersionsResponse{}
	if len(mvs) > 0 {
		out.ModelVersions = mlflowwire.FromModelVersions(mvs)
	}
	return regOK(w, out)
}

// --- model versions ---

func (s *Server) createModelVersion(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		Name        regString             `json:"name"`
		Source      regString             `json:"source"`
		RunID       string                `json:"run_id"`
		Tags        []mlflowwire.KeyValue `json:"tags"`
		RunLink     string                `json:"run_link"`
		Description string                `json:"description"`
	}
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, err := req.Name.req("name")
	if err != nil {
		return err
	}
	source, err := req.Source.req("source")
	if err != nil {
		return err
	}
	tags, err := regTagMap(req.Tags)
	if err != nil {
		return err
	}
	mv, err := s.store.CreateModelVersion(r.Context(), tracking.CreateModelVersion{
		Name: name, Source: source, RunID: req.RunID, RunLink: req.RunLink, Description: req.Description, Tags: tags,
	})
	if err != nil {
		return regError(err)
	}
	return regOK(w, mlflowwire.ModelVersionResponse{ModelVersion: mlflowwire.FromModelVersion(mv)})
}

type regVersionRequest struct {
	Name    regString `json:"name"`
	Version regString `json:"version"`
}

func (r regVersionRequest) args() (string, string, error) {
	name, err := r.Name.req("name")
	if err != nil {
		return "", "", err
	}
	version, err := r.Version.req("version")
	return name, version, err
}

func (s *Server) getModelVersion(w http.ResponseWriter, r *http.Request) error {
	var req regVersionRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, version, err := req.args()
	if err != nil {
		return err
	}
	mv, err := s.store.GetModelVersion(r.Context(), name, version)
	if err != nil {
		return regError(err)
	}
	return regOK(w, mlflowwire.ModelVersionResponse{ModelVersion: mlflowwire.FromModelVersion(mv)})
}

func (s *Server) updateModelVersion(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		regVersionRequest
		Description string `json:"description"`
	}
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, version, err := req.args()
	if err != nil {
		return err
	}
	mv, err := s.store.UpdateModelVersion(r.Context(), name, version, req.Description)
	if err != nil {
		return regError(err)
	}
	return regOK(w, mlflowwire.ModelVersionResponse{ModelVersion: mlflowwire.FromModelVersion(mv)})
}

func (s *Server) deleteModelVersion(w http.ResponseWriter, r *http.Request) error {
	var req regVersionRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, version, err := req.args()
	if err != nil {
		return err
	}
	if err := s.store.DeleteModelVersion(r.Context(), name, version); err != nil {
		return regError(err)
	}
	return regOK(w, nil)
}

func (s *Server) searchModelVersions(w http.ResponseWriter, r *http.Request) error {
	var req regSearchRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	q, err := req.query()
	if err != nil {
		return err
	}
	mvs, next, err := s.store.SearchModelVersions(r.Context(), q)
	if err != nil {
		return regError(err)
	}
	out := mlflowwire.ModelVersionsResponse{NextPageToken: next}
	if len(mvs) > 0 {
		out.ModelVersions = mlflowwire.FromModelVersions(mvs)
	}
	return regOK(w, out)
}

func (s *Server) setModelVersionTag(w http.ResponseWriter, r *http.Request) error {
	var req regTagRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, version, err := regVersionRequest{req.Name, req.Version}.args()
	if err != nil {
		return err
	}
	key, err := req.Key.req("key")
	if err != nil {
		return err
	}
	if !req.Value.set {
		return missing("value")
	}
	if err := s.store.SetModelVersionTag(r.Context(), name, version, tracking.Tag{Key: key, Value: req.Value.v}); err != nil {
		return regError(err)
	}
	return regOK(w, nil)
}

func (s *Server) deleteModelVersionTag(w http.ResponseWriter, r *http.Request) error {
	var req regTagRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, version, err := regVersionRequest{req.Name, req.Version}.args()
	if err != nil {
		return err
	}
	key, err := req.Key.req("key")
	if err != nil {
		return err
	}
	if err := s.store.DeleteModelVersionTag(r.Context(), name, version, key); err != nil {
		return regError(err)
	}
	return regOK(w, nil)
}

func (s *Server) transitionModelVersionStage(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		regVersionRequest
		Stage   regString `json:"stage"`
		Archive *bool     `json:"archive_existing_versions"`
	}
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, version, err := req.args()
	if err != nil {
		return err
	}
	stage, err := req.Stage.req("stage")
	if err != nil {
		return err
	}
	if req.Archive == nil {
		return missing("archive_existing_versions")
	}
	mv, err := s.store.TransitionModelVersionStage(r.Context(), name, version, stage, *req.Archive)
	if err != nil {
		return regError(err)
	}
	return regOK(w, mlflowwire.ModelVersionResponse{ModelVersion: mlflowwire.FromModelVersion(mv)})
}

func (s *Server) getModelVersionDownloadURI(w http.ResponseWriter, r *http.Request) error {
	var req regVersionRequest
	if err := s.regDecode(w, r, &req); err != nil {
		return err
	}
	name, version, err := req.args()
	if err != nil {
		return err
	}
	uri, err := s.store.GetModelVersionDownloadURI(r.Context(), name, version)
	if err != nil {
		return regError(err)
	}
	return regOK(w, map[string]string{"artifact_uri": uri})
}
