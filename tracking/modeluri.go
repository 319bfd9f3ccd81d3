package tracking

import (
	"fmt"
	"strings"
)

// ModelURI is a parsed models:/ URI. Exactly one of Version, Alias, Stage
// and Latest says which version of model Name it names.
type ModelURI struct {
	Name string
	// Version is a version number: models:/<name>/<version>.
	Version string
	// Alias is an alias: models:/<name>@<alias>.
	Alias string
	// Stage is a stage (canonical: None, Staging, Production, Archived):
	// models:/<name>/<stage>, the newest version in that stage.
	Stage string
	// Latest is models:/<name>/latest: the newest version.
	Latest bool
}

// ParseModelURI reads models:/<name>/<version>, models:/<name>@<alias>,
// models:/<name>/<stage> and models:/<name>/latest. Registered model
// names hold no '/', so a '/' starts the version or stage; without one,
// the last '@' starts the alias (names may hold '@'). Another form is
// [ErrInvalid], with the forms named.
func ParseModelURI(uri string) (ModelURI, error) {
	bad := func(why string) (ModelURI, error) {
		return ModelURI{}, fmt.Errorf("model URI %.200q: %w: %s; use models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/<stage> or models:/<name>/latest", uri, ErrInvalid, why)
	}
	rest, ok := strings.CutPrefix(uri, "models:/")
	if !ok {
		return bad("it does not start with models:/")
	}
	if strings.HasPrefix(rest, "/") {
		return bad("it names a host (models://…), which is not served")
	}
	name, suffix, ok := strings.Cut(rest, "/")
	if !ok {
		i := strings.LastIndexByte(rest, '@')
		if i <= 0 || i == len(rest)-1 {
			return bad("it names no version: it has no /<version>, /<stage>, /latest or @<alias> after the name")
		}
		return ModelURI{Name: rest[:i], Alias: rest[i+1:]}, nil
	}
	if name == "" || suffix == "" || strings.Contains(suffix, "/") {
		return bad("it names no version: it has no /<version>, /<stage> or /latest after the name")
	}
	switch {
	case suffix[0] >= '0' && suffix[0] <= '9':
		return ModelURI{Name: name, Version: suffix}, nil
	case strings.EqualFold(suffix, "latest"):
		return ModelURI{Name: name, Latest: true}, nil
	}
	stage, err := canonicalStage(suffix)
	if err != nil {
		return bad(fmt.Sprintf("%q is neither a version number, a stage nor latest", suffix))
	}
	return ModelURI{Name: name, Stage: stage}, nil
}

// NewestVersion returns the version with the highest number of vs, and
// false when vs is empty: what models:/<name>/latest and
// models:/<name>/<stage> resolve to among a model's latest versions.
func NewestVersion(vs []ModelVersion) (ModelVersion, bool) {
	var best *ModelVersion
	for i := range vs {
		if best == nil || versionNumber(vs[i].Version) > versionNumber(best.Version) {
			best = &vs[i]
		}
	}
	if best == nil {
		return ModelVersion{}, false
	}
	return *best, true
}

// noVersion says why a models:/ URI naming the newest version (of a
// stage) names none.
func (m ModelURI) noVersion() string {
	if m.Stage != "" {
		return fmt.Sprintf("registered model %s has no version in stage %s", m.Name, m.Stage)
	}
	return fmt.Sprintf("registered model %s has no versions", m.Name)
}

// NoVersion is the error of a models:/ URI naming the newest version (of
// a stage) of a model that has none: it wraps [ErrNotFound].
func (m ModelURI) NoVersion() error { return fmt.Errorf("%w: %s", ErrNotFound, m.noVersion()) }
