package tracking

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Registry limits, as MLflow's (mlflow/utils/validation.py and the column
// sizes of its SQL registry store). Lengths are in characters.
const (
	// MaxRegisteredModelNameLength bounds a registered model's name
	// (MLflow's name column is VARCHAR(256)).
	MaxRegisteredModelNameLength = 256
	// MaxRegistryDescriptionLength bounds the description of a registered
	// model or a model version (MLflow's VARCHAR(5000)).
	MaxRegistryDescriptionLength = 5000
	// MaxRegistryTagValueLength bounds a registered model or model version
	// tag's value (MLflow's MAX_MODEL_REGISTRY_TAG_VALUE_LENGTH).
	MaxRegistryTagValueLength = 5000
	// MaxModelAliasLength bounds an alias (MLflow's
	// MAX_REGISTERED_MODEL_ALIAS_LENGTH).
	MaxModelAliasLength = 255
	// MaxModelVersionSourceLength bounds a model version's source, run ID,
	// run link and user ID. MLflow's columns are narrower (500 characters
	// for the source); Cohort's file paths can be long, so it allows more.
	MaxModelVersionSourceLength = 5000
	// MaxRegistryTagsPerRequest bounds the tags a create call may carry.
	MaxRegistryTagsPerRequest = 100
	// DefaultRegisteredModelResults is the page size of
	// SearchRegisteredModels when RegistryQuery.MaxResults is 0.
	DefaultRegisteredModelResults = 100
	// MaxRegisteredModelResults bounds SearchRegisteredModels' page size.
	MaxRegisteredModelResults = 1000
	// DefaultModelVersionResults is the page size of SearchModelVersions
	// when RegistryQuery.MaxResults is 0.
	DefaultModelVersionResults = 10_000
	// MaxModelVersionResults bounds SearchModelVersions' page size.
	MaxModelVersionResults = 200_000
)

// validateModelName checks a registered model name: not empty, valid
// UTF-8, at most MaxRegisteredModelNameLength characters, and free of what
// would make it a path or break a models:/ URI: '/', '\', "..", control
// characters. MLflow only refuses the empty name; Cohort is stricter
// because names end up in URIs and file paths.
func validateModelName(field, name string) error {
	if name == "" {
		return fmt.Errorf("%w: the registered model name (%s) is empty; give the model a name such as \"fmnist-cnn\"", ErrInvalid, field)
	}
	if !utf8.ValidString(name) {
		return fmt.Errorf("%w: registered model name %q (%s) is not valid UTF-8", ErrInvalid, name, field)
	}
	if n := utf8.RuneCountInString(name); n > MaxRegisteredModelNameLength {
		return fmt.Errorf("%w: registered model name %.40q… (%s) is %d characters long; the limit is %d", ErrInvalid, name, field, n, MaxRegisteredModelNameLength)
	}
	for _, r := range name {
		if unicode.IsControl(r) {
			return fmt.Errorf("%w: registered model name %q (%s) contains the control character %U; use printable characters only", ErrInvalid, name, field, r)
		}
		if r == '/' || r == '\\' {
			return fmt.Errorf("%w: registered model name %q (%s) contains %q; names may not contain '/' or '\\' (use '-' or '_' instead)", ErrInvalid, name, field, r)
		}
	}
	if strings.Contains(name, "..") {
		return fmt.Errorf("%w: registered model name %q (%s) contains \"..\"; names may not contain \"..\"", ErrInvalid, name, field)
	}
	if strings.TrimSpace(name) == "" {
		return fmt.Errorf("%w: registered model name %q (%s) is only white space; give the model a name", ErrInvalid, name, field)
	}
	return nil
}

// parseModelVersion turns a version number ("3") into the stored integer,
// as MLflow's _validate_model_version.
func parseModelVersion(version string) (int64, error) {
	n, err := strconv.ParseInt(strings.TrimSpace(version), 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%w: parameter 'version' must be a positive integer, got %.40q", ErrInvalid, version)
	}
	return n, nil
}

// validateAlias checks an alias as MLflow's _validate_model_alias_name:
// letters, digits, '_' and '-', at most MaxModelAliasLength characters,
// not "latest" and not a version alias such as "v3".
func validateAlias(alias string) error {
	if alias == "" {
		return fmt.Errorf("%w: the alias is empty; give one such as \"champion\"", ErrInvalid)
	}
	if !utf8.ValidString(alias) {
		return fmt.Errorf("%w: alias %q is not valid UTF-8", ErrInvalid, alias)
	}
	for _, r := range alias {
		if !(unicode.IsLetter(r) || unicode.IsDigit(r) || r == '_' || r == '-') {
			return fmt.Errorf("%w: invalid alias name %q: names may only contain alphanumerics, underscores (_), and dashes (-)", ErrInvalid, alias)
		}
	}
	if n := utf8.RuneCountInString(alias); n > MaxModelAliasLength {
		return fmt.Errorf("%w: alias %.40q… is %d characters long; the limit is %d", ErrInvalid, alias, n, MaxModelAliasLength)
	}
	if strings.EqualFold(alias, "latest") {
		return fmt.Errorf("%w: the alias name 'latest' (case insensitive) is reserved; pick another", ErrInvalid)
	}
	if len(alias) > 1 && (alias[0] == 'v' || alias[0] == 'V') && strings.Trim(alias[1:], "0123456789") == "" {
		return fmt.Errorf("%w: the version alias name %q is reserved; pick a name that is not v<number>", ErrInvalid, alias)
	}
	return nil
}

// validateRegistryTag checks a registered model or model version tag as
// MLflow's _validate_registered_model_tag.
func validateRegistryTag(kind string, t Tag) error {
	if err := validateKey(kind, t.Key); err != nil {
		return err
	}
	return validateValue(kind, t.Key, t.Value, MaxRegistryTagValueLength)
}

// validateRegistryTags checks the tags of a create call.
func validateRegistryTags(kind string, tags map[string]string) ([]Tag, error) {
	if len(tags) > MaxRegistryTagsPerRequest {
		return nil, fmt.Errorf("%w: %d %ss given; at most %d may be set at creation, set the others with their set-tag call", ErrInvalid, len(tags), kind, MaxRegistryTagsPerRequest)
	}
	sorted := sortedTags(tags)
	for _, t := range sorted {
		if err := validateRegistryTag(kind, t); err != nil {
			return nil, err
		}
	}
	return sorted, nil
}

// validateText checks a free-text field (a description, a source): valid
// UTF-8 and at most limit characters.
func validateText(field, value string, limit int) error {
	if !utf8.ValidString(value) {
		return fmt.Errorf("%w: %s is not valid UTF-8", ErrInvalid, field)
	}
	if len(value) > limit {
		if n := utf8.RuneCountInString(value); n > limit {
			return fmt.Errorf("%w: %s is %d characters long; the limit is %d, shorten it", ErrInvalid, field, n, limit)
		}
	}
	return nil
}

// canonicalStage returns MLflow's spelling of a stage, matched without
// regard to case ("production" is Production).
func canonicalStage(stage string) (string, error) {
	for _, s := range []string{StageNone, StageStaging, StageProduction, StageArchived} {
		if strings.EqualFold(stage, s) {
			return s, nil
		}
	}
	return "", fmt.Errorf("%w: invalid model version stage %.40q; it must be one of None, Staging, Production, Archived", ErrInvalid, stage)
}
