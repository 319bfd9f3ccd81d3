package tracking

import (
	"fmt"
	"path"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// validateKey checks a metric, param or tag key as MLflow does: not empty,
// at most MaxKeyLength characters, only letters, digits, '_', '-', '.',
// ' ', ':' and '/', and not a path that normalizes to something else
// ("a//b", "a/./b", "/a", "a/", "..").
func validateKey(kind, key string) error {
	if key == "" {
		return fmt.Errorf("%w: %s key is empty; give it a name", ErrInvalid, kind)
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("%w: %s key %q is not valid UTF-8", ErrInvalid, kind, key)
	}
	if n := utf8.RuneCountInString(key); n > MaxKeyLength {
		return fmt.Errorf("%w: %s key %.40q… is %d characters long; the limit is %d", ErrInvalid, kind, key, n, MaxKeyLength)
	}
	for _, r := range key {
		if unicode.IsLetter(r) || unicode.IsDigit(r) || strings.ContainsRune("_-. :/", r) {
			continue
		}
		return fmt.Errorf("%w: %s key %q contains %q; keys may only contain letters, digits, '_', '-', '.', ' ', ':' and '/'", ErrInvalid, kind, key, r)
	}
	if norm := path.Clean(key); norm != key || norm == "." || strings.HasPrefix(norm, "..") || strings.HasPrefix(norm, "/") {
		return fmt.Errorf("%w: %s key %q would be read as the path %q; drop empty, '.' or '..' parts and leading or trailing '/'", ErrInvalid, kind, key, norm)
	}
	return nil
}

// validateValue checks a param or tag value: valid UTF-8, at most limit
// characters.
func validateValue(kind, key, value string, limit int) error {
	if !utf8.ValidString(value) {
		return fmt.Errorf("%w: %s %q value is not valid UTF-8", ErrInvalid, kind, key)
	}
	if len(value) > limit { // bytes ≥ runes: count runes only when it may matter
		if n := utf8.RuneCountInString(value); n > limit {
			return fmt.Errorf("%w: %s %q value is %d characters long; the limit is %d", ErrInvalid, kind, key, n, limit)
		}
	}
	return nil
}

func validateParam(p Param) error {
	if err := validateKey("param", p.Key); err != nil {
		return err
	}
	return validateValue("param", p.Key, p.Value, MaxParamValueLength)
}

func validateTag(t Tag) error {
	if err := validateKey("tag", t.Key); err != nil {
		return err
	}
	return validateValue("tag", t.Key, t.Value, MaxTagValueLength)
}

func validateExperimentTag(t Tag) error {
	if err := validateKey("experiment tag", t.Key); err != nil {
		return err
	}
	return validateValue("experiment tag", t.Key, t.Value, MaxExperimentTagValueLength)
}

// validateBatch checks LogBatch's sizes (MLflow's request limits, which
// also keep one transaction, and so the store's write lock, short) and
// every entity in it.
func validateBatch(metrics []Metric, params []Param, tags []Tag) error {
	switch {
	case len(metrics) > MaxMetricsPerBatch:
		return fmt.Errorf("%w: a batch holds at most %d metrics, got %d; split them across calls", ErrInvalid, MaxMetricsPerBatch, len(metrics))
	case len(params) > MaxParamsTagsPerBatch:
		return fmt.Errorf("%w: a batch holds at most %d params, got %d; split them across calls", ErrInvalid, MaxParamsTagsPerBatch, len(params))
	case len(tags) > MaxParamsTagsPerBatch:
		return fmt.Errorf("%w: a batch holds at most %d tags, got %d; split them across calls", ErrInvalid, MaxParamsTagsPerBatch, len(tags))
	case len(metrics)+len(params)+len(tags) > MaxEntitiesPerBatch:
		return fmt.Errorf("%w: a batch holds at most %d metrics, params and tags in all, got %d; split them across calls", ErrInvalid, MaxEntitiesPerBatch, len(metrics)+len(params)+len(tags))
	}
	for _, m := range metrics {
		if err := validateKey("metric", m.Key); err != nil {
			return err
		}
	}
	seen := make(map[string]string, len(params))
	for _, p := range params {
		if err := validateParam(p); err != nil {
			return err
		}
		if v, ok := seen[p.Key]; ok && v != p.Value {
			return fmt.Errorf("%w: param %q appears twice in the batch, as %q and %q", ErrParamConflict, p.Key, v, p.Value)
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

// parseExperimentID turns a decimal experiment ID into the stored integer.
func parseExperimentID(id string) (int64, error) {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil || n < 0 || strconv.FormatInt(n, 10) != id {
		return 0, fmt.Errorf("%w: experiment ID %q is not a decimal number such as %q", ErrInvalid, id, DefaultExperimentID)
	}
	return n, nil
}
