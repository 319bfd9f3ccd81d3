package tracking

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

var _ ModelRegistrar = (*SQLiteStore)(nil)

// registryError is a registry failure carrying MLflow's message for it
// ("Registered Model with name=x not found"); errors.Is matches its kind
// ([ErrNotFound], [ErrAlreadyExists], [ErrInvalid]).
type registryError struct {
	kind error
	msg  string
}

func (e *registryError) Error() string { return e.msg }
func (e *registryError) Unwrap() error { return e.kind }

// MLflowMessage is the message MLflow's server answers this failure with;
// a REST server finds it with errors.As and an interface of this method.
func (e *registryError) MLflowMessage() string { return e.msg }

func modelNotFound(name string) error {
	return &registryError{ErrNotFound, fmt.Sprintf("Registered Model with name=%s not found", name)}
}

func versionNotFound(name string, version int64) error {
	return &registryError{ErrNotFound, fmt.Sprintf("Model Version (name=%s, version=%d) not found", name, version)}
}

func modelExists(name string) error {
	return &registryError{ErrAlreadyExists, fmt.Sprintf("Registered Model (name=%s) already exists; pick another name", name)}
}

// CreateRegisteredModel creates a registered model without versions. A
// name another model has is [ErrAlreadyExists]; a bad name, description or
// tag is [ErrInvalid]. Nothing is written when it fails.
func (s *SQLiteStore) CreateRegisteredModel(ctx context.Context, name, description string, tags map[string]string) (RegisteredModel, error) {
	what := fmt.Sprintf("creating registered model %q", name)
	if err := validateModelName("name", name); err != nil {
		return RegisteredModel{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := validateText("the description", description, MaxRegistryDescriptionLength); err != nil {
		return RegisteredModel{}, fmt.Errorf("%s: %w", what, err)
	}
	sorted, err := validateRegistryTags("registered model tag", tags)
	if err != nil {
		return RegisteredModel{}, fmt.Errorf("%s: %w", what, err)
	}
	var rm RegisteredModel
	err = s.write(ctx, what, func(tx *sql.Tx) error {
		var one int
		switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM registered_models WHERE name = ?`, name).Scan(&one); {
		case err == nil:
			return modelExists(name)
		case !errors.Is(err, sql.ErrNoRows):
			return err
		}
		now := time.Now().UnixMilli()
		if _, err := tx.ExecContext(ctx, `INSERT INTO registered_models (name, creation_time, last_updated_time, description) VALUES (?, ?, ?, ?)`,
			name, now, now, description); err != nil {
			return err
		}
		for _, t := range sorted {
			if _, err := tx.ExecContext(ctx, `INSERT INTO registered_model_tags (name, key, value) VALUES (?, ?, ?)`, name, t.Key, t.Value); err != nil {
				return err
			}
		}
		rm, err = getModel(ctx, tx, name)
		return err
	})
	return rm, err
}

// EnsureRegisteredModel creates the registered model if it does not exist;
// an existing one is kept as it is.
func (s *SQLiteStore) EnsureRegisteredModel(ctx context.Context, name string) error {
	what := fmt.Sprintf("ensuring registered model %q", name)
	if err := validateModelName("name", name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		now := time.Now().UnixMilli()
		_, err := tx.ExecContext(ctx, `INSERT INTO registered_models (name, creation_time, last_updated_time) VALUES (?, ?, ?)
			ON CONFLICT (name) DO NOTHING`, name, now, now)
		return err
	})
}

// GetRegisteredModel returns a registered model with its latest version
// per stage, its tags and its aliases; [ErrNotFound] when there is none.
func (s *SQLiteStore) GetRegisteredModel(ctx context.Context, name string) (RegisteredModel, error) {
	what := fmt.Sprintf("getting registered model %q", name)
	if err := validateModelName("name", name); err != nil {
		return RegisteredModel{}, fmt.Errorf("%s: %w", what, err)
	}
	var rm RegisteredModel
	err := s.read(ctx, what, func(tx *sql.Tx) error {
		var err error
		rm, err = getModel(ctx, tx, name)
		return err
	})
	return rm, err
}

// RenameRegisteredModel gives a registered model a new name; its versions,
// tags and aliases follow it. A name another model has is
// [ErrAlreadyExists].
func (s *SQLiteStore) RenameRegisteredModel(ctx context.Context, name, newName string) (RegisteredModel, error) {
	what := fmt.Sprintf("renaming registered model %q to %q", name, newName)
	if err := validateModelName("name", name); err != nil {
		return RegisteredModel{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := validateModelName("new_name", newName); err != nil {
		return RegisteredModel{}, fmt.Errorf("%s: %w", what, err)
	}
	var rm RegisteredModel
	err := s.write(ctx, what, func(tx *sql.Tx) error {
		if err := modelMustExist(ctx, tx, name); err != nil {
			return err
		}
		if newName != name {
			var one int
			switch err := tx.QueryRowContext(ctx, `SELECT 1 FROM registered_models WHERE name = ?`, newName).Scan(&one); {
			case err == nil:
				return modelExists(newName)
			case !errors.Is(err, sql.ErrNoRows):
				return err
			}
		}
		now := time.Now().UnixMilli()
		if _, err := tx.ExecContext(ctx, `UPDATE registered_models SET name = ?, last_updated_time = ? WHERE name = ?`, newName, now, name); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE model_versions SET last_updated_time = ? WHERE name = ?`, now, newName); err != nil {
			return err
		}
		var err error
		rm, err = getModel(ctx, tx, newName)
		return err
	})
	return rm, err
}

// UpdateRegisteredModel sets a registered model's description.
func (s *SQLiteStore) UpdateRegisteredModel(ctx context.Context, name, description string) (RegisteredModel, error) {
	what := fmt.Sprintf("updating registered model %q", name)
	if err := validateModelName("name", name); err != nil {
		return RegisteredModel{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := validateText("the description", description, MaxRegistryDescriptionLength); err != nil {
		return RegisteredModel{}, fmt.Errorf("%s: %w", what, err)
	}
	var rm RegisteredModel
	err := s.write(ctx, what, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE registered_models SET description = ?, last_updated_time = ? WHERE name = ?`,
			description, time.Now().UnixMilli(), name)
		if err := mustAffect(res, err); err != nil {
			if errors.Is(err, ErrNotFound) {
				return modelNotFound(name)
			}
			return err
		}
		rm, err = getModel(ctx, tx, name)
		return err
	})
	return rm, err
}

// DeleteRegisteredModel deletes a registered model with its versions, tags
// and aliases. The versions' artifacts are left where they are.
func (s *SQLiteStore) DeleteRegisteredModel(ctx context.Context, name string) error {
	what := fmt.Sprintf("deleting registered model %q", name)
	if err := validateModelName("name", name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM registered_models WHERE name = ?`, name)
		if err := mustAffect(res, err); errors.Is(err, ErrNotFound) {
			return modelNotFound(name)
		} else if err != nil {
			return err
		}
		return nil
	})
}

// SetRegisteredModelTag sets (or overwrites) a tag on a registered model.
func (s *SQLiteStore) SetRegisteredModelTag(ctx context.Context, name string, tag Tag) error {
	what := fmt.Sprintf("setting tag %q on registered model %q", tag.Key, name)
	if err := validateModelName("name", name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := validateRegistryTag("registered model tag", tag); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if err := modelMustExist(ctx, tx, name); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO registered_model_tags (name, key, value) VALUES (?, ?, ?)
			ON CONFLICT (name, key) DO UPDATE SET value = excluded.value`, name, tag.Key, tag.Value)
		return err
	})
}

// DeleteRegisteredModelTag deletes a tag of a registered model; a tag that
// is not set is no error (as MLflow), a model that does not exist is
// [ErrNotFound].
func (s *SQLiteStore) DeleteRegisteredModelTag(ctx context.Context, name, key string) error {
	what := fmt.Sprintf("deleting tag %q of registered model %q", key, name)
	if err := validateModelName("name", name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := validateKey("registered model tag", key); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if err := modelMustExist(ctx, tx, name); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM registered_model_tags WHERE name = ? AND key = ?`, name, key)
		return err
	})
}

// SetRegisteredModelAlias points alias at a version of the model, moving
// it from the version it named before. A version that does not exist is
// [ErrNotFound] (MLflow's RESOURCE_DOES_NOT_EXIST); a bad alias ("latest",
// "v3", one with characters other than letters, digits, '_' and '-') is
// [ErrInvalid].
func (s *SQLiteStore) SetRegisteredModelAlias(ctx context.Context, name, alias, version string) error {
	what := fmt.Sprintf("setting alias %q of registered model %q to version %s", alias, name, version)
	if err := validateModelName("name", name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := validateAlias(alias); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	v, err := parseModelVersion(version)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if err := versionMustExist(ctx, tx, name, v); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO registered_model_aliases (name, alias, version) VALUES (?, ?, ?)
			ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version`, name, alias, v)
		return err
	})
}

// DeleteRegisteredModelAlias deletes an alias of a model; an alias that is
// not set is no error (as MLflow), a model that does not exist is
// [ErrNotFound].
func (s *SQLiteStore) DeleteRegisteredModelAlias(ctx context.Context, name, alias string) error {
	what := fmt.Sprintf("deleting alias %q of registered model %q", alias, name)
	if err := validateModelName("name", name); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := validateAlias(alias); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if err := modelMustExist(ctx, tx, name); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM registered_model_aliases WHERE name = ? AND alias = ?`, name, alias)
		return err
	})
}

// GetModelVersionByAlias returns the version an alias names. An alias that
// is not set (or a model that does not exist) is [ErrNotFound]; MLflow's
// server answers it with INVALID_PARAMETER_VALUE, and so does
// mlflowserver.
func (s *SQLiteStore) GetModelVersionByAlias(ctx context.Context, name, alias string) (ModelVersion, error) {
	what := fmt.Sprintf("getting alias %q of registered model %q", alias, name)
	if err := validateModelName("name", name); err != nil {
		return ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	if err := validateAlias(alias); err != nil {
		return ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	var mv ModelVersion
	err := s.read(ctx, what, func(tx *sql.Tx) error {
		mvs, err := queryVersions(ctx, tx, `SELECT `+versionColumns+` FROM registered_model_aliases AS a
			JOIN model_versions AS mv ON mv.name = a.name AND mv.version = a.version WHERE a.name = ? AND a.alias = ?`, []any{name, alias})
		if err != nil {
			return err
		}
		if len(mvs) == 0 {
			return &registryError{ErrNotFound, fmt.Sprintf("Registered model alias %s not found.", alias)}
		}
		mv = mvs[0]
		return nil
	})
	return mv, err
}

// GetLatestVersions returns the newest version in each of stages (all
// stages when stages is empty) that has one, by version number. Stages
// match without regard to case; an unknown one is [ErrInvalid].
func (s *SQLiteStore) GetLatestVersions(ctx context.Context, name string, stages []string) ([]ModelVersion, error) {
	what := fmt.Sprintf("getting the latest versions of registered model %q", name)
	if err := validateModelName("name", name); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	want := map[string]bool{}
	for _, st := range stages {
		c, err := canonicalStage(st)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", what, err)
		}
		want[c] = true
	}
	var out []ModelVersion
	err := s.read(ctx, what, func(tx *sql.Tx) error {
		if err := modelMustExist(ctx, tx, name); err != nil {
			return err
		}
		mvs, err := latestVersions(ctx, tx, []string{name})
		if err != nil {
			return err
		}
		for _, mv := range mvs {
			if len(want) == 0 || want[mv.CurrentStage] {
				out = append(out, mv)
			}
		}
		return nil
	})
	return out, err
}

// CreateModelVersion registers a new version of an existing model, numbered
// one above the highest number the model ever had (numbers of deleted
// versions are not reused). A model that does not exist is [ErrNotFound].
func (s *SQLiteStore) CreateModelVersion(ctx context.Context, req CreateModelVersion) (ModelVersion, error) {
	what := fmt.Sprintf("creating a version of registered model %q", req.Name)
	fail := func(err error) (ModelVersion, error) { return ModelVersion{}, fmt.Errorf("%s: %w", what, err) }
	if err := validateModelName("name", req.Name); err != nil {
		return fail(err)
	}
	if req.Source == "" {
		return fail(fmt.Errorf("%w: the source is empty; give the URI of the model's artifacts, such as runs:/<run id>/model", ErrInvalid))
	}
	for _, f := range []struct{ field, value string }{
		{"the source", req.Source}, {"the run ID", req.RunID}, {"the run link", req.RunLink},
	} {
		if err := validateText(f.field, f.value, MaxModelVersionSourceLength); err != nil {
			return fail(err)
		}
	}
	if err := validateText("the description", req.Description, MaxRegistryDescriptionLength); err != nil {
		return fail(err)
	}
	sorted, err := validateRegistryTags("model version tag", req.Tags)
	if err != nil {
		return fail(err)
	}
	var mv ModelVersion
	err = s.write(ctx, what, func(tx *sql.Tx) error {
		var last int64
		switch err := tx.QueryRowContext(ctx, `SELECT last_version FROM registered_models WHERE name = ?`, req.Name).Scan(&last); {
		case errors.Is(err, sql.ErrNoRows):
			return modelNotFound(req.Name)
		case err != nil:
			return err
		}
		// A version row may outlive last_version only in a database written
		// by hand; never collide with one.
		var maxV sql.NullInt64
		if err := tx.QueryRowContext(ctx, `SELECT max(version) FROM model_versions WHERE name = ?`, req.Name).Scan(&maxV); err != nil {
			return err
		}
		v := max(last, maxV.Int64) + 1
		now := time.Now().UnixMilli()
		if _, err := tx.ExecContext(ctx, `UPDATE registered_models SET last_version = ?, last_updated_time = ? WHERE name = ?`, v, now, req.Name); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO model_versions (name, version, creation_time, last_updated_time, description, current_stage, source, run_id, run_link, status)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`, req.Name, v, now, now, req.Description, StageNone, req.Source, req.RunID, req.RunLink, VersionReady); err != nil {
			return err
		}
		for _, t := range sorted {
			if _, err := tx.ExecContext(ctx, `INSERT INTO model_version_tags (name, version, key, value) VALUES (?, ?, ?, ?)`, req.Name, v, t.Key, t.Value); err != nil {
				return err
			}
		}
		var err error
		mv, err = getVersion(ctx, tx, req.Name, v)
		return err
	})
	return mv, err
}

// GetModelVersion returns one version of a model with its tags and
// aliases; [ErrNotFound] when there is none.
func (s *SQLiteStore) GetModelVersion(ctx context.Context, name, version string) (ModelVersion, error) {
	what := fmt.Sprintf("getting version %s of registered model %q", version, name)
	v, err := versionArgs(name, version)
	if err != nil {
		return ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	var mv ModelVersion
	err = s.read(ctx, what, func(tx *sql.Tx) error {
		var err error
		mv, err = getVersion(ctx, tx, name, v)
		return err
	})
	return mv, err
}

// UpdateModelVersion sets a version's description.
func (s *SQLiteStore) UpdateModelVersion(ctx context.Context, name, version, description string) (ModelVersion, error) {
	what := fmt.Sprintf("updating version %s of registered model %q", version, name)
	v, err := versionArgs(name, version)
	if err == nil {
		err = validateText("the description", description, MaxRegistryDescriptionLength)
	}
	if err != nil {
		return ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	var mv ModelVersion
	err = s.write(ctx, what, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE model_versions SET description = ?, last_updated_time = ? WHERE name = ? AND version = ?`,
			description, time.Now().UnixMilli(), name, v)
		if err := mustAffect(res, err); errors.Is(err, ErrNotFound) {
			return versionNotFound(name, v)
		} else if err != nil {
			return err
		}
		mv, err = getVersion(ctx, tx, name, v)
		return err
	})
	return mv, err
}

// DeleteModelVersion deletes a version with its tags and the aliases that
// named it. Its number is not given to a later version.
func (s *SQLiteStore) DeleteModelVersion(ctx context.Context, name, version string) error {
	what := fmt.Sprintf("deleting version %s of registered model %q", version, name)
	v, err := versionArgs(name, version)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `DELETE FROM model_versions WHERE name = ? AND version = ?`, name, v)
		if err := mustAffect(res, err); errors.Is(err, ErrNotFound) {
			return versionNotFound(name, v)
		} else if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE registered_models SET last_updated_time = ? WHERE name = ?`, time.Now().UnixMilli(), name)
		return err
	})
}

// SetModelVersionTag sets (or overwrites) a tag on a model version.
func (s *SQLiteStore) SetModelVersionTag(ctx context.Context, name, version string, tag Tag) error {
	what := fmt.Sprintf("setting tag %q on version %s of registered model %q", tag.Key, version, name)
	v, err := versionArgs(name, version)
	if err == nil {
		err = validateRegistryTag("model version tag", tag)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if err := versionMustExist(ctx, tx, name, v); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `INSERT INTO model_version_tags (name, version, key, value) VALUES (?, ?, ?, ?)
			ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value`, name, v, tag.Key, tag.Value)
		return err
	})
}

// DeleteModelVersionTag deletes a tag of a model version; a tag that is
// not set is no error (as MLflow).
func (s *SQLiteStore) DeleteModelVersionTag(ctx context.Context, name, version, key string) error {
	what := fmt.Sprintf("deleting tag %q of version %s of registered model %q", key, version, name)
	v, err := versionArgs(name, version)
	if err == nil {
		err = validateKey("model version tag", key)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return s.write(ctx, what, func(tx *sql.Tx) error {
		if err := versionMustExist(ctx, tx, name, v); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM model_version_tags WHERE name = ? AND version = ? AND key = ?`, name, v, key)
		return err
	})
}

// TransitionModelVersionStage moves a version to stage (None, Staging,
// Production or Archived, in any case). With archiveExisting, the model's
// other versions in that stage move to Archived, as MLflow's
// archive_existing_versions; it is [ErrInvalid] unless the stage is
// Staging or Production.
func (s *SQLiteStore) TransitionModelVersionStage(ctx context.Context, name, version, stage string, archiveExisting bool) (ModelVersion, error) {
	what := fmt.Sprintf("moving version %s of registered model %q to stage %q", version, name, stage)
	v, err := versionArgs(name, version)
	if err != nil {
		return ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	canon, err := canonicalStage(stage)
	if err != nil {
		return ModelVersion{}, fmt.Errorf("%s: %w", what, err)
	}
	if archiveExisting && canon != StageStaging && canon != StageProduction {
		return ModelVersion{}, fmt.Errorf("%s: %w: model version transition cannot archive existing model versions because %q is not an active stage; active stages are Staging and Production", what, ErrInvalid, canon)
	}
	var mv ModelVersion
	err = s.write(ctx, what, func(tx *sql.Tx) error {
		if err := versionMustExist(ctx, tx, name, v); err != nil {
			return err
		}
		now := time.Now().UnixMilli()
		if archiveExisting {
			if _, err := tx.ExecContext(ctx, `UPDATE model_versions SET current_stage = ?, last_updated_time = ?
				WHERE name = ? AND version != ? AND current_stage = ?`, StageArchived, now, name, v, canon); err != nil {
				return err
			}
		}
		if _, err := tx.ExecContext(ctx, `UPDATE model_versions SET current_stage = ?, last_updated_time = ? WHERE name = ? AND version = ?`, canon, now, name, v); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `UPDATE registered_models SET last_updated_time = ? WHERE name = ?`, now, name); err != nil {
			return err
		}
		var err error
		mv, err = getVersion(ctx, tx, name, v)
		return err
	})
	return mv, err
}

// GetModelVersionDownloadURI returns where a version's artifacts are: its
// source, with a runs:/<run id>/<path> source resolved through the run's
// artifact URI.
func (s *SQLiteStore) GetModelVersionDownloadURI(ctx context.Context, name, version string) (string, error) {
	mv, err := s.GetModelVersion(ctx, name, version)
	if err != nil {
		return "", err
	}
	rest, ok := strings.CutPrefix(mv.Source, "runs:/")
	if !ok {
		return mv.Source, nil
	}
	runID, path, _ := strings.Cut(strings.TrimLeft(rest, "/"), "/")
	if runID == "" {
		return "", fmt.Errorf("getting the download URI of version %s of registered model %q: %w: source %q names no run; a runs:/ source is runs:/<run id>/<path>", version, name, ErrInvalid, mv.Source)
	}
	run, err := s.GetRun(ctx, runID)
	if err != nil {
		return "", fmt.Errorf("getting the download URI of version %s of registered model %q: source %q: %w", version, name, mv.Source, err)
	}
	uri := strings.TrimRight(run.Info.ArtifactURI, "/")
	if path = strings.Trim(path, "/"); path != "" {
		uri += "/" + path
	}
	return uri, nil
}

// ResolveModelURI returns the version a models:/ URI names:
// models:/<name>/<version>, models:/<name>@<alias>, models:/<name>/<stage>
// (the newest version in that stage) or models:/<name>/latest (the newest
// version). A URI of another form is [ErrInvalid]; one that names nothing
// is [ErrNotFound].
func (s *SQLiteStore) ResolveModelURI(ctx context.Context, uri string) (ModelVersion, error) {
	m, err := ParseModelURI(uri)
	if err != nil {
		return ModelVersion{}, fmt.Errorf("resolving %w", err)
	}
	switch {
	case m.Alias != "":
		return s.GetModelVersionByAlias(ctx, m.Name, m.Alias)
	case m.Version != "":
		return s.GetModelVersion(ctx, m.Name, m.Version)
	}
	var stages []string
	if m.Stage != "" {
		stages = []string{m.Stage}
	}
	mvs, err := s.GetLatestVersions(ctx, m.Name, stages)
	if err != nil {
		return ModelVersion{}, fmt.Errorf("resolving model URI %q: %w", uri, err)
	}
	best, ok := NewestVersion(mvs)
	if !ok {
		return ModelVersion{}, fmt.Errorf("resolving model URI %q: %w", uri, &registryError{ErrNotFound, m.noVersion()})
	}
	return best, nil
}

func versionNumber(v string) int64 {
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}

// versionArgs checks a model name and version number.
func versionArgs(name, version string) (int64, error) {
	if err := validateModelName("name", name); err != nil {
		return 0, err
	}
	return parseModelVersion(version)
}

func modelMustExist(ctx context.Context, q querier, name string) error {
	var one int
	switch err := q.QueryRowContext(ctx, `SELECT 1 FROM registered_models WHERE name = ?`, name).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return modelNotFound(name)
	default:
		return err
	}
}

func versionMustExist(ctx context.Context, q querier, name string, v int64) error {
	var one int
	switch err := q.QueryRowContext(ctx, `SELECT 1 FROM model_versions WHERE name = ? AND version = ?`, name, v).Scan(&one); {
	case errors.Is(err, sql.ErrNoRows):
		return versionNotFound(name, v)
	default:
		return err
	}
}

func getModel(ctx context.Context, q querier, name string) (RegisteredModel, error) {
	rms, err := queryModels(ctx, q, `FROM registered_models AS rm WHERE rm.name = ?`, []any{name})
	if err != nil {
		return RegisteredModel{}, err
	}
	if len(rms) == 0 {
		return RegisteredModel{}, modelNotFound(name)
	}
	return rms[0], nil
}

func getVersion(ctx context.Context, q querier, name string, v int64) (ModelVersion, error) {
	mvs, err := queryVersions(ctx, q, `SELECT `+versionColumns+` FROM model_versions AS mv WHERE mv.name = ? AND mv.version = ?`, []any{name, v})
	if err != nil {
		return ModelVersion{}, err
	}
	if len(mvs) == 0 {
		return ModelVersion{}, versionNotFound(name, v)
	}
	return mvs[0], nil
}

// queryModels reads the registered models of the query SELECT <columns>
// <from> (from names the table registered_models AS rm, and may order and
// limit), in order, with their tags, aliases and latest versions.
func queryModels(ctx context.Context, q querier, from string, args []any) ([]RegisteredModel, error) {
	var rms []RegisteredModel
	idx := map[string]int{}
	var names []string
	err := eachRow(ctx, q, `SELECT rm.name, rm.creation_time, rm.last_updated_time, rm.description `+from, args, func(rows *sql.Rows) error {
		var m RegisteredModel
		var created, updated int64
		if err := rows.Scan(&m.Name, &created, &updated, &m.Description); err != nil {
			return err
		}
		m.CreationTime, m.LastUpdatedTime = fromMillis(created), fromMillis(updated)
		idx[m.Name] = len(rms)
		rms = append(rms, m)
		names = append(names, m.Name)
		return nil
	})
	if err != nil || len(rms) == 0 {
		return nil, err
	}
	// The page's names go to the detail queries as one JSON array, so the
	// search runs once.
	page, err := json.Marshal(names)
	if err != nil {
		return nil, err
	}
	err = eachRow(ctx, q, `SELECT t.name, t.key, t.value FROM json_each(?) AS p
		JOIN registered_model_tags AS t ON t.name = p.value ORDER BY t.name, t.key`, []any{string(page)},
		func(rows *sql.Rows) error {
			var name string
			var t Tag
			if err := rows.Scan(&name, &t.Key, &t.Value); err != nil {
				return err
			}
			if i, ok := idx[name]; ok {
				rms[i].Tags = append(rms[i].Tags, t)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	err = eachRow(ctx, q, `SELECT a.name, a.alias, a.version FROM json_each(?) AS p
		JOIN registered_model_aliases AS a ON a.name = p.value ORDER BY a.name, a.alias`, []any{string(page)},
		func(rows *sql.Rows) error {
			var name string
			var a ModelAlias
			var v int64
			if err := rows.Scan(&name, &a.Alias, &v); err != nil {
				return err
			}
			a.Version = strconv.FormatInt(v, 10)
			if i, ok := idx[name]; ok {
				rms[i].Aliases = append(rms[i].Aliases, a)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	latest, err := latestVersions(ctx, q, names)
	if err != nil {
		return nil, err
	}
	for _, mv := range latest {
		if i, ok := idx[mv.Name]; ok {
			rms[i].LatestVersions = append(rms[i].LatestVersions, mv)
		}
	}
	return rms, nil
}

// latestVersions reads the newest version per stage of the named models,
// ordered by name and version.
func latestVersions(ctx context.Context, q querier, names []string) ([]ModelVersion, error) {
	js, err := json.Marshal(names)
	if err != nil {
		return nil, err
	}
	return queryVersions(ctx, q, `WITH latest AS (SELECT mv.name AS name, max(mv.version) AS version
		FROM json_each(?) AS p JOIN model_versions AS mv ON mv.name = p.value GROUP BY mv.name, mv.current_stage)
		SELECT `+versionColumns+` FROM latest JOIN model_versions AS mv ON mv.name = latest.name AND mv.version = latest.version
		ORDER BY mv.name, mv.version`, []any{string(js)})
}

const versionColumns = `mv.name, mv.version, mv.creation_time, mv.last_updated_time, mv.description, mv.user_id,
	mv.current_stage, mv.source, mv.run_id, mv.run_link, mv.status, mv.status_message`

// queryVersions reads the model versions a query returns (its columns
// versionColumns, in order), with their tags and aliases.
func queryVersions(ctx context.Context, q querier, query string, args []any) ([]ModelVersion, error) {
	var mvs []ModelVersion
	type key struct {
		name string
		v    int64
	}
	idx := map[key]int{}
	var keys [][2]any
	err := eachRow(ctx, q, query, args, func(rows *sql.Rows) error {
		var m ModelVersion
		var v, created, updated int64
		if err := rows.Scan(&m.Name, &v, &created, &updated, &m.Description, &m.UserID,
			&m.CurrentStage, &m.Source, &m.RunID, &m.RunLink, &m.Status, &m.StatusMessage); err != nil {
			return err
		}
		m.Version = strconv.FormatInt(v, 10)
		m.CreationTime, m.LastUpdatedTime = fromMillis(created), fromMillis(updated)
		idx[key{m.Name, v}] = len(mvs)
		mvs = append(mvs, m)
		keys = append(keys, [2]any{m.Name, v})
		return nil
	})
	if err != nil || len(mvs) == 0 {
		return nil, err
	}
	// The page's (name, version) pairs go to the detail queries as one JSON
	// array, so the search runs once.
	page, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}
	const pageCTE = `WITH page AS (SELECT json_extract(p.value, '$[0]') AS name, json_extract(p.value, '$[1]') AS version FROM json_each(?) AS p) `
	err = eachRow(ctx, q, pageCTE+`SELECT t.name, t.version, t.key, t.value FROM page
		JOIN model_version_tags AS t ON t.name = page.name AND t.version = page.version ORDER BY t.name, t.version, t.key`, []any{string(page)},
		func(rows *sql.Rows) error {
			var name string
			var v int64
			var t Tag
			if err := rows.Scan(&name, &v, &t.Key, &t.Value); err != nil {
				return err
			}
			if i, ok := idx[key{name, v}]; ok {
				mvs[i].Tags = append(mvs[i].Tags, t)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	err = eachRow(ctx, q, pageCTE+`SELECT a.name, a.version, a.alias FROM page
		JOIN registered_model_aliases AS a ON a.name = page.name AND a.version = page.version ORDER BY a.name, a.version, a.alias`, []any{string(page)},
		func(rows *sql.Rows) error {
			var name, alias string
			var v int64
			if err := rows.Scan(&name, &v, &alias); err != nil {
				return err
			}
			if i, ok := idx[key{name, v}]; ok {
				mvs[i].Aliases = append(mvs[i].Aliases, alias)
			}
			return nil
		})
	if err != nil {
		return nil, err
	}
	return mvs, nil
}
