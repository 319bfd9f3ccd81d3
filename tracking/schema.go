package tracking

// migrations are the schema's versions in order: migrations[i] takes a
// database from PRAGMA user_version i to i+1. Append only; never edit a
// released entry.
//
// Choices worth knowing:
//   - Times are Unix milliseconds (INTEGER), as MLflow's.
//   - A metric value is a REAL. SQLite stores ±Inf in a REAL but turns NaN
//     into NULL, so a NaN is stored as value 0 with is_nan = 1, the same
//     column MLflow's SQL store has. Negative zero reads back as zero.
//   - metrics keeps every point; its primary key is the whole point, so
//     logging the very same point twice stores it once (as MLflow).
//     latest_metrics holds, per run and key, the point with the highest
//     (step, timestamp, value, is_nan), updated in the same transaction.
//   - experiment 0, "Default", is inserted at open time because its
//     artifact location depends on the store's artifact root.
var migrations = []string{
	// 1: the MLflow tracking entities.
	`
CREATE TABLE experiments (
	experiment_id     INTEGER PRIMARY KEY,
	name              TEXT    NOT NULL UNIQUE,
	artifact_location TEXT    NOT NULL,
	lifecycle_stage   TEXT    NOT NULL DEFAULT 'active' CHECK (lifecycle_stage IN ('active', 'deleted')),
	creation_time     INTEGER NOT NULL,
	last_update_time  INTEGER NOT NULL
);
CREATE TABLE experiment_tags (
	experiment_id INTEGER NOT NULL REFERENCES experiments (experiment_id) ON DELETE CASCADE,
	key           TEXT    NOT NULL,
	value         TEXT    NOT NULL,
	PRIMARY KEY (experiment_id, key)
) WITHOUT ROWID;
CREATE TABLE runs (
	run_uuid        TEXT    NOT NULL PRIMARY KEY,
	name            TEXT    NOT NULL,
	experiment_id   INTEGER NOT NULL REFERENCES experiments (experiment_id),
	user_id         TEXT    NOT NULL DEFAULT '',
	status          TEXT    NOT NULL CHECK (status IN ('RUNNING', 'SCHEDULED', 'FINISHED', 'FAILED', 'KILLED')),
	start_time      INTEGER NOT NULL,
	end_time        INTEGER,
	artifact_uri    TEXT    NOT NULL,
	lifecycle_stage TEXT    NOT NULL DEFAULT 'active' CHECK (lifecycle_stage IN ('active', 'deleted')),
	deleted_time    INTEGER
);
CREATE INDEX runs_by_experiment ON runs (experiment_id, start_time DESC, run_uuid);
CREATE TABLE params (
	run_uuid TEXT NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
	key      TEXT NOT NULL,
	value    TEXT NOT NULL,
	PRIMARY KEY (run_uuid, key)
) WITHOUT ROWID;
CREATE TABLE tags (
	run_uuid TEXT NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
	key      TEXT NOT NULL,
	value    TEXT NOT NULL,
	PRIMARY KEY (run_uuid, key)
) WITHOUT ROWID;
CREATE INDEX tags_by_key_value ON tags (key, value);
CREATE TABLE metrics (
	run_uuid  TEXT    NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
	key       TEXT    NOT NULL,
	step      INTEGER NOT NULL,
	timestamp INTEGER NOT NULL,
	value     REAL    NOT NULL,
	is_nan    INTEGER NOT NULL DEFAULT 0 CHECK (is_nan IN (0, 1)),
	PRIMARY KEY (run_uuid, key, step, timestamp, value, is_nan)
) WITHOUT ROWID;
CREATE TABLE latest_metrics (
	run_uuid  TEXT    NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
	key       TEXT    NOT NULL,
	step      INTEGER NOT NULL,
	timestamp INTEGER NOT NULL,
	value     REAL    NOT NULL,
	is_nan    INTEGER NOT NULL DEFAULT 0 CHECK (is_nan IN (0, 1)),
	PRIMARY KEY (run_uuid, key)
) WITHOUT ROWID;
`,
	// 2: dataset inputs (MLflow's log-inputs), and the indexes that make
	// filtered, ordered run searches fast (metrics.acc > 0.5,
	// params.algo = 'fedavg').
	`
CREATE TABLE run_inputs (
	run_uuid    TEXT NOT NULL REFERENCES runs (run_uuid) ON DELETE CASCADE,
	name        TEXT NOT NULL,
	digest      TEXT NOT NULL,
	source_type TEXT NOT NULL,
	source      TEXT NOT NULL,
	schema      TEXT NOT NULL DEFAULT '',
	profile     TEXT NOT NULL DEFAULT '',
	context     TEXT NOT NULL DEFAULT '',
	PRIMARY KEY (run_uuid, name, digest)
);
CREATE TABLE run_input_tags (
	run_uuid TEXT NOT NULL,
	name     TEXT NOT NULL,
	digest   TEXT NOT NULL,
	key      TEXT NOT NULL,
	value    TEXT NOT NULL,
	PRIMARY KEY (run_uuid, name, digest, key),
	FOREIGN KEY (run_uuid, name, digest) REFERENCES run_inputs (run_uuid, name, digest) ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX latest_metrics_by_key_value ON latest_metrics (key, is_nan, value);
CREATE INDEX params_by_key_value ON params (key, value);
`,
	// 3: the model registry (MLflow's registered models, model versions,
	// their tags and aliases). A model's versions, tags and aliases follow
	// a rename (ON UPDATE CASCADE) and go with it (ON DELETE CASCADE); a
	// version's tags and aliases go with the version. last_version keeps
	// version numbers from being reused after the newest is deleted (MLflow
	// keeps deleted versions as redacted rows for the same end). The time
	// indexes carry the searches' tie-breakers (name ASC, version DESC), so
	// a page in MLflow's default order reads only its rows.
	`
CREATE TABLE registered_models (
	name              TEXT    NOT NULL PRIMARY KEY,
	creation_time     INTEGER NOT NULL,
	last_updated_time INTEGER NOT NULL,
	description       TEXT    NOT NULL DEFAULT '',
	last_version      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX registered_models_by_created ON registered_models (creation_time);
CREATE INDEX registered_models_by_updated ON registered_models (last_updated_time);
CREATE TABLE registered_model_tags (
	name  TEXT NOT NULL REFERENCES registered_models (name) ON UPDATE CASCADE ON DELETE CASCADE,
	key   TEXT NOT NULL,
	value TEXT NOT NULL,
	PRIMARY KEY (name, key)
) WITHOUT ROWID;
CREATE INDEX registered_model_tags_by_key_value ON registered_model_tags (key, value);
CREATE TABLE model_versions (
	name              TEXT    NOT NULL REFERENCES registered_models (name) ON UPDATE CASCADE ON DELETE CASCADE,
	version           INTEGER NOT NULL,
	creation_time     INTEGER NOT NULL,
	last_updated_time INTEGER NOT NULL,
	description       TEXT    NOT NULL DEFAULT '',
	user_id           TEXT    NOT NULL DEFAULT '',
	current_stage     TEXT    NOT NULL DEFAULT 'None' CHECK (current_stage IN ('None', 'Staging', 'Production', 'Archived')),
	source            TEXT    NOT NULL DEFAULT '',
	run_id            TEXT    NOT NULL DEFAULT '',
	run_link          TEXT    NOT NULL DEFAULT '',
	status            TEXT    NOT NULL DEFAULT 'READY',
	status_message    TEXT    NOT NULL DEFAULT '',
	PRIMARY KEY (name, version)
);
CREATE INDEX model_versions_by_name_created ON model_versions (name, creation_time, version);
CREATE INDEX model_versions_by_created ON model_versions (creation_time DESC, name, version DESC);
CREATE INDEX model_versions_by_updated ON model_versions (last_updated_time DESC, name, version DESC);
CREATE INDEX model_versions_by_stage ON model_versions (name, current_stage, version);
CREATE INDEX model_versions_by_run ON model_versions (run_id);
CREATE TABLE model_version_tags (
	name    TEXT    NOT NULL,
	version INTEGER NOT NULL,
	key     TEXT    NOT NULL,
	value   TEXT    NOT NULL,
	PRIMARY KEY (name, version, key),
	FOREIGN KEY (name, version) REFERENCES model_versions (name, version) ON UPDATE CASCADE ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX model_version_tags_by_key_value ON model_version_tags (key, value);
CREATE TABLE registered_model_aliases (
	name    TEXT    NOT NULL,
	alias   TEXT    NOT NULL,
	version INTEGER NOT NULL,
	PRIMARY KEY (name, alias),
	FOREIGN KEY (name, version) REFERENCES model_versions (name, version) ON UPDATE CASCADE ON DELETE CASCADE
) WITHOUT ROWID;
CREATE INDEX registered_model_aliases_by_version ON registered_model_aliases (name, version);
`,
}

// schemaVersion is the user_version a fully migrated database has.
var schemaVersion = len(migrations)
