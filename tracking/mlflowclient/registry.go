package mlflowclient

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// The model registry, through MLflow's REST API (model-registry section).
// The writes ([Client.EnsureRegisteredModel], [Client.CreateModelVersion],
// [Client.SetRegisteredModelAlias]) happen once at a job's end: they are
// synchronous, with the client's usual retries, and are not spooled.
// The reads serve a CLI (cohort models list | show | alias | download).

var _ tracking.ModelRegistrar = (*Client)(nil)

// maxRegistryPages bounds the pages a lookup of a version by its create
// key reads.
const maxRegistryPages = 10

func checkName(what, name string) error {
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("%s: %w: the registered model name is empty", what, tracking.ErrInvalid)
	}
	return nil
}

// EnsureRegisteredModel creates the registered model unless it exists
// (RESOURCE_ALREADY_EXISTS is success; the existing model is kept as it
// is).
func (c *Client) EnsureRegisteredModel(ctx context.Context, name string) error {
	what := fmt.Sprintf("ensuring registered model %q", name)
	if err := checkName(what, name); err != nil {
		return err
	}
	err := c.call(ctx, "POST", "registered-models/create", nil, map[string]string{"name": name}, nil)
	if err != nil && !errors.Is(err, tracking.ErrAlreadyExists) {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

type createVersionReq struct {
	Name        string                `json:"name"`
	Source      string                `json:"source"`
	RunID       string                `json:"run_id,omitempty"`
	Tags        []mlflowwire.KeyValue `json:"tags,omitempty"`
	RunLink     string                `json:"run_link,omitempty"`
	Description string                `json:"description,omitempty"`
}

// placeholderRE finds placeholder IDs inside a source URI.
var placeholderRE = regexp.MustCompile(regexp.QuoteMeta(placeholderPrefix) + `[0-9a-f]{32}`)

// CreateModelVersion registers a new version of an existing model. It
// flushes the spool first (the version's source run must exist on the
// server), resolves placeholder run IDs in RunID and Source, and turns a
// runs:/<run id>/<path> Source into the run's artifact location, as
// MLflow's client does. The version gets a random [TagCreateKey] tag, so a
// retry after a lost answer finds the version instead of adding a second.
func (c *Client) CreateModelVersion(ctx context.Context, req tracking.CreateModelVersion) (tracking.ModelVersion, error) {
	what := fmt.Sprintf("creating a version of registered model %q", req.Name)
	if err := checkName(what, req.Name); err != nil {
		return tracking.ModelVersion{}, err
	}
	if req.Source == "" {
		return tracking.ModelVersion{}, fmt.Errorf("%s: %w: the source is empty; give the artifact URI of the model (a run's artifact folder)", what, tracking.ErrInvalid)
	}
	if err := c.flushForRead(ctx); err != nil {
		return tracking.ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	w := createVersionReq{Name: req.Name, RunLink: req.RunLink, Description: req.Description}
	var err error
	if w.RunID, err = c.resolve(req.RunID); err != nil {
		return tracking.ModelVersion{}, fmt.Errorf("%s: run %w", what, err)
	}
	w.Source = placeholderRE.ReplaceAllStringFunc(req.Source, func(id string) string {
		if err != nil {
			return id
		}
		var real string
		real, err = c.resolve(id)
		return real
	})
	if err != nil {
		return tracking.ModelVersion{}, fmt.Errorf("%s: source %w", what, err)
	}
	if w.Source, err = c.underlyingURI(ctx, w.Source); err != nil {
		return tracking.ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	tags := maps.Clone(req.Tags)
	if tags == nil {
		tags = map[string]string{}
	}
	if tags[TagCreateKey] == "" {
		tags[TagCreateKey] = randomKey()
	}
	key := tags[TagCreateKey]
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		if err := validateTag(tracking.Tag{Key: k, Value: tags[k]}); err != nil {
			return tracking.ModelVersion{}, fmt.Errorf("%s: %w", what, err)
		}
		w.Tags = append(w.Tags, mlflowwire.KeyValue{Key: k, Value: tags[k]})
	}
	var v tracking.ModelVersion
	err = c.createOnce(ctx, "model-versions/create", false,
		func() (bool, error) {
			got, found, ferr := c.findVersion(ctx, req.Name, key)
			if found {
				v = got
			}
			return found, ferr
		},
		func() error {
			var got mlflowwire.ModelVersionResponse
			if err := c.callRetries(ctx, 0, "POST", "model-versions/create", nil, &w, &got); err != nil {
				return err
			}
			v = got.ModelVersion.ToTracking()
			return nil
		})
	if err != nil {
		return tracking.ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	return v, nil
}

// underlyingURI turns runs:/<run id>/<path> into the run's artifact URI
// joined with path; other URIs are returned as they are.
func (c *Client) underlyingURI(ctx context.Context, uri string) (string, error) {
	rest, ok := strings.CutPrefix(uri, "runs:/")
	if !ok {
		return uri, nil
	}
	runID, rel, _ := strings.Cut(strings.TrimLeft(rest, "/"), "/")
	if runID == "" {
		return "", fmt.Errorf("%w: %q names no run; write runs:/<run id>/<path>", tracking.ErrInvalid, uri)
	}
	run, err := c.getRun(ctx, runID)
	if err != nil {
		return "", fmt.Errorf("resolving %s: %w", uri, err)
	}
	base := strings.TrimRight(run.Info.ArtifactURI, "/")
	if rel = strings.Trim(rel, "/"); rel != "" {
		base += "/" + rel
	}
	return base, nil
}

// findVersion looks for the version of model name that carries the
// create key.
func (c *Client) findVersion(ctx context.Context, name, key string) (tracking.ModelVersion, bool, error) {
	q := tracking.RegistryQuery{Filter: fmt.Sprintf("name = '%s' AND tags.%s = '%s'", escapeQuote(name), TagCreateKey, key)}
	for range maxRegistryPages {
		vs, next, err := c.searchVersions(ctx, q, 0)
		if err != nil {
			return tracking.ModelVersion{}, false, err
		}
		for _, v := range vs {
			if got, _ := tagValue(v.Tags, TagCreateKey); v.Name == name && got == key {
				return v, true, nil
			}
		}
		if next == "" || next == q.PageToken {
			break
		}
		q.PageToken = next
	}
	return tracking.ModelVersion{}, false, nil
}

func tagValue(tags []tracking.Tag, key string) (string, bool) {
	for _, t := range tags {
		if t.Key == key {
			return t.Value, true
		}
	}
	return "", false
}

// escapeQuote escapes a value for a single-quoted filter string.
func escapeQuote(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`)
}

// SetRegisteredModelAlias points alias at version of the model, moving
// it from another version if it named one.
func (c *Client) SetRegisteredModelAlias(ctx context.Context, name, alias, version string) error {
	what := fmt.Sprintf("setting alias %q of registered model %q to version %s", alias, name, version)
	if err := checkName(what, name); err != nil {
		return err
	}
	if alias == "" || version == "" {
		return fmt.Errorf("%s: %w: the alias and the version must not be empty", what, tracking.ErrInvalid)
	}
	body := map[string]string{"name": name, "alias": alias, "version": version}
	if err := c.call(ctx, "POST", "registered-models/alias", nil, body, nil); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// DeleteRegisteredModelAlias removes an alias of a registered model.
func (c *Client) DeleteRegisteredModelAlias(ctx context.Context, name, alias string) error {
	what := fmt.Sprintf("deleting alias %q of registered model %q", alias, name)
	if err := checkName(what, name); err != nil {
		return err
	}
	if alias == "" {
		return fmt.Errorf("%s: %w: the alias is empty", what, tracking.ErrInvalid)
	}
	// MLflow's server reads a DELETE's fields from its JSON body; the query
	// carries them too, for servers that read them there.
	body := map[string]string{"name": name, "alias": alias}
	if err := c.call(ctx, "DELETE", "registered-models/alias", url.Values{"name": {name}, "alias": {alias}}, body, nil); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// GetRegisteredModel returns a registered model, with its latest
// versions, tags and aliases.
func (c *Client) GetRegisteredModel(ctx context.Context, name string) (tracking.RegisteredModel, error) {
	what := fmt.Sprintf("getting registered model %q", name)
	if err := checkName(what, name); err != nil {
		return tracking.RegisteredModel{}, err
	}
	var got mlflowwire.RegisteredModelResponse
	if err := c.call(ctx, "GET", "registered-models/get", url.Values{"name": {name}}, nil, &got); err != nil {
		return tracking.RegisteredModel{}, fmt.Errorf("%s: %w", what, err)
	}
	return got.RegisteredModel.ToTracking(), nil
}

// GetModelVersion returns one version of a registered model.
func (c *Client) GetModelVersion(ctx context.Context, name, version string) (tracking.ModelVersion, error) {
	what := fmt.Sprintf("getting version %s of registered model %q", version, name)
	if err := checkName(what, name); err != nil {
		return tracking.ModelVersion{}, err
	}
	if version == "" {
		return tracking.ModelVersion{}, fmt.Errorf("%s: %w: the version is empty", what, tracking.ErrInvalid)
	}
	var got mlflowwire.ModelVersionResponse
	if err := c.call(ctx, "GET", "model-versions/get", url.Values{"name": {name}, "version": {version}}, nil, &got); err != nil {
		return tracking.ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	return got.ModelVersion.ToTracking(), nil
}

// GetLatestVersions returns the newest version of each stage of a
// registered model, or of the stages named (registered-models/get-latest-versions).
func (c *Client) GetLatestVersions(ctx context.Context, name string, stages []string) ([]tracking.ModelVersion, error) {
	what := fmt.Sprintf("getting the latest versions of registered model %q", name)
	if err := checkName(what, name); err != nil {
		return nil, err
	}
	var got mlflowwire.ModelVersionsResponse
	body := map[string]any{"name": name, "stages": stages}
	if err := c.call(ctx, "POST", "registered-models/get-latest-versions", nil, body, &got); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	vs := make([]tracking.ModelVersion, len(got.ModelVersions))
	for i, v := range got.ModelVersions {
		vs[i] = v.ToTracking()
	}
	return vs, nil
}

// ResolveModelURI returns the version a models:/ URI names, as
// [tracking.SQLiteStore.ResolveModelURI] does: models:/<name>/<version>,
// models:/<name>@<alias>, models:/<name>/<stage> or models:/<name>/latest.
func (c *Client) ResolveModelURI(ctx context.Context, uri string) (tracking.ModelVersion, error) {
	m, err := tracking.ParseModelURI(uri)
	if err != nil {
		return tracking.ModelVersion{}, fmt.Errorf("resolving %w", err)
	}
	switch {
	case m.Alias != "":
		return c.GetModelVersionByAlias(ctx, m.Name, m.Alias)
	case m.Version != "":
		return c.GetModelVersion(ctx, m.Name, m.Version)
	}
	var stages []string
	if m.Stage != "" {
		stages = []string{m.Stage}
	}
	vs, err := c.GetLatestVersions(ctx, m.Name, stages)
	if err != nil {
		return tracking.ModelVersion{}, fmt.Errorf("resolving model URI %q: %w", uri, err)
	}
	best, ok := tracking.NewestVersion(vs)
	if !ok {
		return tracking.ModelVersion{}, fmt.Errorf("resolving model URI %q: %w", uri, m.NoVersion())
	}
	return best, nil
}

// GetModelVersionByAlias returns the version an alias of a registered
// model names. An alias that is not set is [tracking.ErrNotFound] (MLflow
// answers it with INVALID_PARAMETER_VALUE, kept in the [APIError]).
func (c *Client) GetModelVersionByAlias(ctx context.Context, name, alias string) (tracking.ModelVersion, error) {
	what := fmt.Sprintf("getting version %q of registered model %q", "@"+alias, name)
	if err := checkName(what, name); err != nil {
		return tracking.ModelVersion{}, err
	}
	if alias == "" {
		return tracking.ModelVersion{}, fmt.Errorf("%s: %w: the alias is empty", what, tracking.ErrInvalid)
	}
	var got mlflowwire.ModelVersionResponse
	if err := c.call(ctx, "GET", "registered-models/alias", url.Values{"name": {name}, "alias": {alias}}, nil, &got); err != nil {
		// MLflow answers an alias that is not set with INVALID_PARAMETER_VALUE
		// "Registered model alias … not found."; it is ErrNotFound here too.
		var ae *APIError
		if errors.As(err, &ae) && ae.Code == "INVALID_PARAMETER_VALUE" && strings.Contains(ae.Message, "alias") && strings.Contains(ae.Message, "not found") {
			return tracking.ModelVersion{}, fmt.Errorf("%s: %w: %w", what, tracking.ErrNotFound, err)
		}
		return tracking.ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	return got.ModelVersion.ToTracking(), nil
}

// GetModelVersionDownloadURI returns where the artifacts of a model
// version are (model-versions/get-download-uri).
func (c *Client) GetModelVersionDownloadURI(ctx context.Context, name, version string) (string, error) {
	what := fmt.Sprintf("getting the download URI of version %s of registered model %q", version, name)
	if err := checkName(what, name); err != nil {
		return "", err
	}
	if version == "" {
		return "", fmt.Errorf("%s: %w: the version is empty", what, tracking.ErrInvalid)
	}
	var got struct {
		ArtifactURI string `json:"artifact_uri"`
	}
	if err := c.call(ctx, "GET", "model-versions/get-download-uri", url.Values{"name": {name}, "version": {version}}, nil, &got); err != nil {
		return "", fmt.Errorf("%s: %w", what, err)
	}
	if got.ArtifactURI == "" {
		return "", fmt.Errorf("%s: the server answered no artifact_uri", what)
	}
	return got.ArtifactURI, nil
}

// registryQuery turns q into the query string of a search.
func registryQuery(q tracking.RegistryQuery) url.Values {
	v := url.Values{}
	if q.Filter != "" {
		v.Set("filter", q.Filter)
	}
	if q.MaxResults > 0 {
		v.Set("max_results", strconv.Itoa(q.MaxResults))
	}
	for _, o := range q.OrderBy {
		v.Add("order_by", o)
	}
	if q.PageToken != "" {
		v.Set("page_token", q.PageToken)
	}
	return v
}

// SearchRegisteredModels returns one page of the registered models q
// selects (registered-models/search) and the token of the next page, ""
// after the last.
func (c *Client) SearchRegisteredModels(ctx context.Context, q tracking.RegistryQuery) ([]tracking.RegisteredModel, string, error) {
	if q.MaxResults < 0 {
		return nil, "", fmt.Errorf("searching registered models: %w: MaxResults %d is negative", tracking.ErrInvalid, q.MaxResults)
	}
	var got mlflowwire.SearchRegisteredModelsResponse
	if err := c.call(ctx, "GET", "registered-models/search", registryQuery(q), nil, &got); err != nil {
		return nil, "", fmt.Errorf("searching registered models: %w", err)
	}
	out := make([]tracking.RegisteredModel, 0, len(got.RegisteredModels))
	for _, m := range got.RegisteredModels {
		out = append(out, m.ToTracking())
	}
	return out, got.NextPageToken, nil
}

// SearchModelVersions returns one page of the model versions q selects
// (model-versions/search) and the token of the next page, "" after the
// last.
func (c *Client) SearchModelVersions(ctx context.Context, q tracking.RegistryQuery) ([]tracking.ModelVersion, string, error) {
	vs, next, err := c.searchVersions(ctx, q, c.cfg.MaxRetries)
	if err != nil {
		return nil, "", fmt.Errorf("searching model versions: %w", err)
	}
	return vs, next, nil
}

func (c *Client) searchVersions(ctx context.Context, q tracking.RegistryQuery, retries int) ([]tracking.ModelVersion, string, error) {
	if q.MaxResults < 0 {
		return nil, "", fmt.Errorf("%w: MaxResults %d is negative", tracking.ErrInvalid, q.MaxResults)
	}
	var got mlflowwire.ModelVersionsResponse
	if err := c.callRetries(ctx, retries, "GET", "model-versions/search", registryQuery(q), nil, &got); err != nil {
		return nil, "", err
	}
	out := make([]tracking.ModelVersion, 0, len(got.ModelVersions))
	for _, v := range got.ModelVersions {
		out = append(out, v.ToTracking())
	}
	return out, got.NextPageToken, nil
}
