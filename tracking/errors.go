package tracking

import "errors"

// Errors returned by the store. They are wrapped with the operation and the
// names involved; match them with [errors.Is].
var (
	// ErrNotFound is returned when an experiment, run, tag or artifact does
	// not exist.
	ErrNotFound = errors.New("not found")
	// ErrAlreadyExists is returned when an experiment is created with a name
	// that another experiment (active or deleted) already has.
	ErrAlreadyExists = errors.New("already exists")
	// ErrParamConflict is returned when a param is logged with a value that
	// differs from the value already logged under its key: params are
	// immutable, as in MLflow.
	ErrParamConflict = errors.New("param already logged with a different value")
	// ErrRunDeleted is returned when a run in the deleted lifecycle stage is
	// written to (metrics, params, tags, status, artifacts). Restore it first
	// with RestoreRun.
	ErrRunDeleted = errors.New("run is deleted")
	// ErrExperimentDeleted is returned when a run is created in, or
	// EnsureExperiment names, an experiment in the deleted lifecycle stage.
	ErrExperimentDeleted = errors.New("experiment is deleted")
	// ErrInvalid is returned for bad input: an empty or over-long key, a key
	// with characters MLflow does not accept, an over-long value, an unknown
	// status, a malformed ID or page token, an artifact path that is
	// absolute or climbs out with "..".
	ErrInvalid = errors.New("invalid argument")
	// ErrSchemaVersion is returned by OpenSQLite when the database file was
	// written by a newer Cohort (its schema version is above the newest this
	// build knows) or is not a Cohort tracking database at all.
	ErrSchemaVersion = errors.New("unsupported tracking database schema")
)
