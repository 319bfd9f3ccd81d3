package tracking

import (
	"context"
	"time"
)

// The model registry, as MLflow's (REST API 2.0, model-registry section): a
// [RegisteredModel] is a named model with versions; a [ModelVersion] points
// at the artifacts of one trained model (its Source, usually a run's
// artifact folder) and the run that made it. Versions are numbered 1, 2, …
// per model, never reused. Aliases (champion, …) name one version each;
// stages (None, Staging, Production, Archived) are MLflow's older
// lifecycle, kept for its clients.
//
// MLflow's URIs models:/<name>/<version>, models:/<name>@<alias> and
// models:/<name>/<stage> resolve through [ResolveModelURI].

// Stages of a model version (MLflow's, deprecated there but still served).
const (
	StageNone       = "None"
	StageStaging    = "Staging"
	StageProduction = "Production"
	StageArchived   = "Archived"
)

// Statuses of a model version. Cohort's store creates versions READY (the
// artifacts are written before the version); MLflow's other statuses are
// PENDING_REGISTRATION and FAILED_REGISTRATION.
const (
	VersionReady = "READY"
)

// RegisteredModel is MLflow's RegisteredModel.
type RegisteredModel struct {
	Name            string
	CreationTime    time.Time
	LastUpdatedTime time.Time
	Description     string
	// LatestVersions holds the newest version of each stage that has one
	// (MLflow's latest_versions).
	LatestVersions []ModelVersion
	Tags           []Tag
	Aliases        []ModelAlias
}

// ModelAlias names one version of a registered model.
type ModelAlias struct {
	Alias   string
	Version string
}

// ModelVersion is MLflow's ModelVersion.
type ModelVersion struct {
	Name            string
	Version         string
	CreationTime    time.Time
	LastUpdatedTime time.Time
	Description     string
	UserID          string
	CurrentStage    string
	// Source is where the version's artifacts are: a run's artifact URI
	// with a path under it (mlflow-artifacts:/…/artifacts/model, or a
	// file path for a store without a proxy), or runs:/<run id>/<path>.
	Source        string
	RunID         string
	RunLink       string
	Status        string
	StatusMessage string
	Tags          []Tag
	Aliases       []string
}

// CreateModelVersion is what a new model version starts with.
type CreateModelVersion struct {
	// Name is the registered model; it must exist.
	Name string
	// Source is where the artifacts are (see ModelVersion.Source).
	Source      string
	RunID       string
	RunLink     string
	Description string
	Tags        map[string]string
}

// RegistryQuery selects registered models or model versions for
// SearchRegisteredModels and SearchModelVersions.
type RegistryQuery struct {
	// Filter is MLflow's registry filter: for models name (=, !=, LIKE,
	// ILIKE) and tags.<key>; for versions also version_number, run_id
	// (=, !=, IN), source_path and tags.<key>. "" selects all.
	Filter string
	// OrderBy are MLflow order-by clauses: name, creation_timestamp,
	// last_updated_timestamp (and version_number for versions), ASC or
	// DESC.
	OrderBy []string
	// MaxResults is the page size: 0 means MLflow's default (100 for
	// models, 10,000 for versions); at most 1,000 for models and 200,000
	// for versions.
	MaxResults int
	// PageToken continues a search from the token a previous call returned.
	PageToken string
}

// ModelRegistrar is the part of the registry a job writes its final models
// into; [SQLiteStore] and the MLflow REST client are ones.
type ModelRegistrar interface {
	// EnsureRegisteredModel creates the registered model if it does not
	// exist (an existing one is kept as it is).
	EnsureRegisteredModel(ctx context.Context, name string) error
	// CreateModelVersion registers a new version of an existing model.
	CreateModelVersion(ctx context.Context, req CreateModelVersion) (ModelVersion, error)
	// SetRegisteredModelAlias points alias at version, moving it from
	// another version if it named one.
	SetRegisteredModelAlias(ctx context.Context, name, alias, version string) error
}
