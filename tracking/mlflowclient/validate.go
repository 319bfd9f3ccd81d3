package mlflowclient

import (
	"fmt"
	"path"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// The checks below are tracking/validate.go's (MLflow's own limits), made
// before a write is spooled, so a write the server would refuse fails at
// the call instead of later in the flusher.

func validateKey(kind, key string) error {
	if key == "" {
		return fmt.Errorf("%w: %s key is empty; give it a name", tracking.ErrInvalid, kind)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: %s key %q is not valid UTF-8", tracking.ErrInvalid, kind, key)
	}
	if n := utf8.RuneCountInString(key); n > tracking.MaxKeyLength {
		return fmt.Errorf("%w: %s key %.40q… is %d characters long; the limit is %d", tracking.ErrInvalid, kind, key, n, tracking.MaxKeyLength)
	}
	for _, r := range key {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("_-. :/", r) {
			continue
		}
		return fmt.Errorf("%w: %s key %q contains %q; keys may only contain letters, digits, '_', '-', '.', ' ', ':' and '/'", tracking.ErrInvalid, kind, key, r)
	}
	if norm := path.Clean(key); norm != key || norm == "." || strings.HasPrefix(norm, "..") || strings.HasPrefix(norm, "/") {
		return fmt.Errorf("%w: %s key %q would be read as the path %q; drop empty, '.' or '..' parts and leading or trailing '/'", tracking.ErrInvalid, kind, key, norm)
	}
	return nil
}

func validateValue(kind, key, value string, limit int) error {
	if !utf8.ValidString(value) {
		return fmt.Errorf("%w: %s %q value is not valid UTF-8", tracking.ErrInvalid, kind, key)
	}
	if len(value) > limit {
		if n := utf8.RuneCountInString(value); n > limit {
			return fmt.Errorf("%w: %s %q value is %d characters long; the limit is %d", tracking.ErrInvalid, kind, key, n, limit)
		}
	}
	return nil
}

func validateTag(t tracking.Tag) error {
	if err := validateKey("tag", t.Key); err != nil {
		return err
	}
	return validateValue("tag", t.Key, t.Value, tracking.MaxTagValueLength)
}

// validateEntities checks every entity of a LogBatch; sizes are not
// checked, as LogBatch splits a large batch into requests MLflow takes.
func validateEntities(metrics []tracking.Metric, params []tracking.Param, tags []tracking.Tag) error {
	for _, m := range metrics {
		if err := validateKey("metric", m.Key); err != nil {
			return err
		}
	}
	seen := make(map[string]string, len(params))
	for _, p := range params {
		if err := validateKey("param", p.Key); err != nil {
			return err
		}
		if err := validateValue("param", p.Key, p.Value, tracking.MaxParamValueLength); err != nil {
			return err
		}
		if v, ok := seen[p.Key]; ok && v != p.Value {
			return fmt.Errorf("%w: param %q appears twice in the batch, as %q and %q", tracking.ErrParamConflict, p.Key, v, p.Value)
		}
		seen[p.Key] = p.Value
	}
	for _, t := range tags {
		if err := validateTag(t); err != nil {
			return err
		}
	}
	return nil
}

// validateInputs checks what MLflow requires of a dataset input.
func validateInputs(inputs []tracking.DatasetInput) error {
	for i, in := range inputs {
		d := in.Dataset
		switch {
		case d.Name == "":
			return fmt.Errorf("%w: dataset %d has no name", tracking.ErrInvalid, i)
		case d.Digest == "":
			return fmt.Errorf("%w: dataset %q has no digest", tracking.ErrInvalid, d.Name)
		case utf8.RuneCountInString(d.Digest) > tracking.MaxDatasetDigestLength:
			return fmt.Errorf("%w: dataset %q digest is %d characters long; the limit is %d", tracking.ErrInvalid, d.Name, utf8.RuneCountInString(d.Digest), tracking.MaxDatasetDigestLength)
		case d.SourceType == "":
			return fmt.Errorf("%w: dataset %q has no source type", tracking.ErrInvalid, d.Name)
		case d.Source == "":
			return fmt.Errorf("%w: dataset %q has no source", tracking.ErrInvalid, d.Name)
		}
		for _, t := range in.Tags {
			if err := validateKey("input tag", t.Key); err != nil {
				return err
			}
		}
	}
	return nil
}

// cleanArtifactPath checks a relative artifact path: forward slashes, not
// absolute, not climbing out with "..".
func cleanArtifactPath(p string) (string, error) {
	p = strings.ReplaceAll(p, "\\", "/")
	c := path.Clean(p)
	if p == "" || c == "." || path.IsAbs(c) || c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("%w: artifact path %q must be relative to the run's artifact root and stay inside it", tracking.ErrInvalid, p)
	}
	return c, nil
}

// splitBatch cuts a batch into requests within MLflow's limits: at most
// 1000 metrics, 100 params, 100 tags and 1000 entities in all. Order is
// kept within each kind; params and tags go first.
func splitBatch(metrics []mlflowwire.Metric, params, tags []mlflowwire.KeyValue) []mlflowwire.LogBatch {
	var out []mlflowwire.LogBatch
	for len(metrics)+len(params)+len(tags) > 0 {
		var r mlflowwire.LogBatch
		np := min(len(params), tracking.MaxParamsTagsPerBatch)
		r.Params, params = params[:np:np], params[np:]
		nt := min(len(tags), tracking.MaxParamsTagsPerBatch)
		r.Tags, tags = tags[:nt:nt], tags[nt:]
		nm := min(len(metrics), tracking.MaxMetricsPerBatch, tracking.MaxEntitiesPerBatch-np-nt)
		r.Metrics, metrics = metrics[:nm:nm], metrics[nm:]
		if len(r.Params) == 0 {
			r.Params = nil
		}
		if len(r.Tags) == 0 {
			r.Tags = nil
		}
		if len(r.Metrics) == 0 {
			r.Metrics = nil
		}
		out = append(out, r)
	}
	return out
}
