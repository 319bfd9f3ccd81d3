package tracking

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"modernc.org/sqlite" // also registers the "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Option configures OpenSQLite.
type Option func(*options)

type options struct {
	artifactRoot string
	proxyRoot    string
	logger       *slog.Logger
}

// WithArtifactRoot sets the directory under which new experiments keep
// their artifacts (<dir>/<experiment id>/<run id>/artifacts/…). The default
// is "artifacts" beside the database file. Existing experiments keep the
// location they were created with.
func WithArtifactRoot(dir string) Option {
	return func(o *options) { o.artifactRoot = dir }
}

// WithProxyArtifactRoot sets the directory that artifact URIs of the form
// mlflow-artifacts:/<path> resolve under (the root an MLflow-compatible
// server's artifact proxy serves). The default is the artifact root, so a
// run created with [CreateRun.ProxiedArtifacts] keeps its files where a
// file:// run of the same experiment would.
func WithProxyArtifactRoot(dir string) Option {
	return func(o *options) { o.proxyRoot = dir }
}

// WithLogger sets the logger; nil (the default) discards logs.
func WithLogger(l *slog.Logger) Option {
	return func(o *options) { o.logger = l }
}

// busyTimeout is how long a statement waits for another process's lock on
// the file (say, `cohort ui` reading while `cohort run` writes) before
// failing with SQLITE_BUSY. Within one process writes never wait on SQLite:
// they queue for the single write connection.
const busyTimeout = 10 * time.Second

// busyRetry is how long retryBusy waits between tries.
const busyRetry = 20 * time.Millisecond

// retryBusy calls try until it returns anything but SQLite's busy error,
// for up to limit (or until ctx ends). The writer's first connection
// needs it: its pragmas switch a new file to WAL, which takes the file's
// exclusive lock, and where several processes open the same new file at
// once (a machine's coordinators sharing one tracking file), SQLite
// answers one of them busy at once rather than wait in its busy handler,
// where they could deadlock.
func retryBusy(ctx context.Context, limit time.Duration, try func() error) error {
	deadline := time.Now().Add(limit)
	for {
		err := try()
		if !isBusy(err) || !time.Now().Before(deadline) {
			return err
		}
		t := time.NewTimer(busyRetry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return err
		}
	}
}

// isBusy reports whether err is SQLite's SQLITE_BUSY (any of its
// extended codes).
func isBusy(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY
}

// readConns bounds the read connection pool.
const readConns = 4

// SQLiteStore is the embedded tracking store: one SQLite file in WAL mode
// and an artifact directory. It is safe for concurrent use by many
// goroutines: every write is one transaction on a single write connection
// (so writers queue in the process instead of failing with SQLITE_BUSY)
// and reads run on a pool of read-only connections that see the last
// committed state. Several processes may open the same file; they contend
// through SQLite's locks, waiting up to 10 s.
type SQLiteStore struct {
	path string
	root string // absolute artifact root for new experiments
	// proxyRoot is the absolute directory mlflow-artifacts:/ URIs resolve under.
	proxyRoot string
	log       *slog.Logger
	w         *sql.DB // one connection, BEGIN IMMEDIATE: every write
	r         *sql.DB // read-only pool

	// Prepared on w, used by LogBatches: statements run for each run of
	// a batch, parsed once.
	insertMetric   *sql.Stmt
	upsertLatest   *sql.Stmt
	insertParam    *sql.Stmt
	selectParam    *sql.Stmt
	upsertTag      *sql.Stmt
	selectRunStage *sql.Stmt
	// ... and by CreateRuns and the inputs' logging.
	selectExperimentLoc *sql.Stmt
	selectRunExperiment *sql.Stmt
	insertRunRow        *sql.Stmt
	upsertInput         *sql.Stmt
	upsertInputTag      *sql.Stmt
	endActiveRun        *sql.Stmt   // by EndRuns
	stmts               []*sql.Stmt // every statement above, closed by Close

	closeOnce sync.Once
	closeErr  error
}

// OpenSQLite opens the tracking database at path, creating it (but not its
// directory) when missing, and brings its schema up to date. It fails with
// [ErrSchemaVersion] when the file was written by a newer Cohort or is some
// other SQLite database. Close the store when done.
func OpenSQLite(ctx context.Context, path string, opts ...Option) (*SQLiteStore, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") {
		return nil, fmt.Errorf("opening tracking store: %w: path %q is not a file path; give one such as \"cohort.db\"", ErrInvalid, path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("opening tracking store %s: %w", path, err)
	}
	root := o.artifactRoot
	if root == "" {
		root = filepath.Join(filepath.Dir(abs), "artifacts")
	}
	if root, err = filepath.Abs(root); err != nil {
		return nil, fmt.Errorf("opening tracking store %s: artifact root: %w", path, err)
	}
	proxy := o.proxyRoot
	if proxy == "" {
		proxy = root
	}
	if proxy, err = filepath.Abs(proxy); err != nil {
		return nil, fmt.Errorf("opening tracking store %s: proxy artifact root: %w", path, err)
	}
	s := &SQLiteStore{path: abs, root: root, proxyRoot: proxy, log: o.logger}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if err := s.open(ctx); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("opening tracking store %s: %w", abs, err)
	}
	s.log.Debug("tracking_store_open", "path", abs, "artifact_root", root, "schema_version", schemaVersion)
	return s, nil
}

func (s *SQLiteStore) open(ctx context.Context) error {
	uri := "file:" + (&url.URL{Path: filepath.ToSlash(s.path)}).EscapedPath()
	pragmas := fmt.Sprintf("_pragma=busy_timeout(%d)&_pragma=foreign_keys(1)", busyTimeout.Milliseconds())
	var err error
	// The writer's page cache is up to 64 MiB, not SQLite's 2 MiB: a round of
	// thousands of sites' metrics walks the B-trees of more pages than 2 MiB
	// keeps, and read each miss back from the file (BenchmarkRecorderRounds);
	// a store of 10,000 site runs logging ten metrics a round passes 16 MiB
	// in the first round (25 MiB, 39 MiB by the third), and a transaction's
	// dirty pages then spilled to the WAL before it committed (pagerStress,
	// 2% of the coordinator's CPU in a profile of BenchmarkThousandSites).
	// The cache holds only the pages read, so a small store costs no more.
	// The WAL is copied back into the file once it holds 8,192 pages (32 MiB
	// at 4 KiB), not SQLite's 1,000: a round's transactions dirty many of the
	// same pages, and each checkpoint writes each page once
	// (BenchmarkSiteRounds: 2-12% less a round in five runs of six). The last
	// transaction's pages come on top: at 10,000 sites the WAL file reached
	// 62 MiB (SQLite reuses it; it is not truncated).
	s.w, err = sql.Open("sqlite", uri+"?"+pragmas+"&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=cache_size(-65536)&_pragma=wal_autocheckpoint(8192)&_txlock=immediate")
	if err != nil {
		return err
	}
	s.w.SetMaxOpenConns(1)
	s.w.SetMaxIdleConns(1)
	if err := retryBusy(ctx, busyTimeout, func() error { return s.w.PingContext(ctx) }); err != nil {
		return fmt.Errorf("%w (does the directory exist, and may this user write to it?)", err)
	}
	if err := s.migrate(ctx); err != nil {
		return err
	}
	if err := s.ensureDefaultExperiment(ctx); err != nil {
		return err
	}
	s.r, err = sql.Open("sqlite", uri+"?"+pragmas+"&_pragma=query_only(1)")
	if err != nil {
		return err
	}
	s.r.SetMaxOpenConns(readConns)
	s.r.SetMaxIdleConns(readConns)
	for _, p := range []struct {
		stmt  **sql.Stmt
		query string
	}{
		{&s.insertMetric, `INSERT OR IGNORE INTO metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES (?, ?, ?, ?, ?, ?)`},
		{&s.upsertLatest, `INSERT INTO latest_metrics (run_uuid, key, step, timestamp, value, is_nan) VALUES (?, ?, ?, ?, ?, ?)
			ON CONFLICT (run_uuid, key) DO UPDATE SET
				step = excluded.step, timestamp = excluded.timestamp, value = excluded.value, is_nan = excluded.is_nan
			WHERE (excluded.step, excluded.timestamp, excluded.value, excluded.is_nan) >
				(latest_metrics.step, latest_metrics.timestamp, latest_metrics.value, latest_metrics.is_nan)`},
		{&s.insertParam, `INSERT INTO params (run_uuid, key, value) VALUES (?, ?, ?) ON CONFLICT (run_uuid, key) DO NOTHING`},
		{&s.selectParam, `SELECT value FROM params WHERE run_uuid = ? AND key = ?`},
		{&s.upsertTag, `INSERT INTO tags (run_uuid, key, value) VALUES (?, ?, ?) ON CONFLICT (run_uuid, key) DO UPDATE SET value = excluded.value
			WHERE tags.value IS NOT excluded.value`}, // an unchanged tag (a site's energy method, each round) writes nothing
		{&s.selectRunStage, `SELECT lifecycle_stage FROM runs WHERE run_uuid = ?`},
		{&s.selectExperimentLoc, `SELECT artifact_location, lifecycle_stage FROM experiments WHERE experiment_id = ?`},
		{&s.selectRunExperiment, `SELECT experiment_id FROM runs WHERE run_uuid = ?`},
		{&s.insertRunRow, `INSERT INTO runs (` + runColumns + `) VALUES (?, ?, ?, ?, ?, ?, NULL, ?, ?)`},
		{&s.upsertInput, `INSERT INTO run_inputs (run_uuid, name, digest, source_type, source, schema, profile, context)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (run_uuid, name, digest) DO UPDATE SET source_type = excluded.source_type, source = excluded.source,
				schema = excluded.schema, profile = excluded.profile,
				context = CASE WHEN excluded.context = '' THEN run_inputs.context ELSE excluded.context END`},
		{&s.upsertInputTag, `INSERT INTO run_input_tags (run_uuid, name, digest, key, value) VALUES (?, ?, ?, ?, ?)
			ON CONFLICT (run_uuid, name, digest, key) DO UPDATE SET value = excluded.value`},
		{&s.endActiveRun, `UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ? AND lifecycle_stage = 'active'`},
	} {
		if *p.stmt, err = s.w.PrepareContext(ctx, p.query); err != nil {
			return fmt.Errorf("preparing statement: %w", err)
		}
		s.stmts = append(s.stmts, *p.stmt)
	}
	return nil
}

// migrate brings the schema to schemaVersion, one migration per version,
// all in one transaction so a crash leaves the old version intact.
func (s *SQLiteStore) migrate(ctx context.Context) error {
	return s.write(ctx, "migrating schema", func(tx *sql.Tx) error {
		var version int
		if err := tx.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&version); err != nil {
			return err
		}
		if version > schemaVersion {
			return fmt.Errorf("%w: the file has schema version %d but this build knows versions up to %d; open it with a newer cohort", ErrSchemaVersion, version, schemaVersion)
		}
		if version == 0 {
			var tables int
			if err := tx.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'`).Scan(&tables); err != nil {
				return err
			}
			if tables > 0 {
				return fmt.Errorf("%w: the file holds %d tables but no Cohort schema version, so it is another program's database (an MLflow one?); give a new file", ErrSchemaVersion, tables)
			}
		}
		for v := version; v < schemaVersion; v++ {
			if _, err := tx.ExecContext(ctx, migrations[v]); err != nil {
				return fmt.Errorf("applying migration %d: %w", v+1, err)
			}
			s.log.Info("tracking_schema_migrated", "path", s.path, "version", v+1)
		}
		if version != schemaVersion {
			// PRAGMA takes no bound parameters; schemaVersion is ours.
			if _, err := tx.ExecContext(ctx, fmt.Sprintf(`PRAGMA user_version = %d`, schemaVersion)); err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *SQLiteStore) ensureDefaultExperiment(ctx context.Context) error {
	now := time.Now().UnixMilli()
	return s.write(ctx, "creating the Default experiment", func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time)
			VALUES (0, ?, ?, 'active', ?, ?) ON CONFLICT DO NOTHING`,
			DefaultExperimentName, fileURI(filepath.Join(s.root, DefaultExperimentID)), now, now)
		return err
	})
}

// Close closes the database. It is safe to call more than once; calls
// after the first return the first's result.
func (s *SQLiteStore) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		for _, st := range s.stmts {
			errs = append(errs, st.Close())
		}
		for _, db := range []*sql.DB{s.r, s.w} {
			if db != nil {
				errs = append(errs, db.Close())
			}
		}
		if err := errors.Join(errs...); err != nil {
			s.closeErr = fmt.Errorf("closing tracking store %s: %w", s.path, err)
		}
	})
	return s.closeErr
}

// write runs fn in one write transaction (BEGIN IMMEDIATE on the single
// write connection) and commits it, or rolls back when fn fails.
func (s *SQLiteStore) write(ctx context.Context, what string, fn func(*sql.Tx) error) error {
	tx, err := s.w.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%s: beginning transaction: %w", what, err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%s: committing: %w", what, err)
	}
	return nil
}

// statementContext is ctx for the statements of a write transaction
// that loops over many small ones (a batch of runs or of their metrics):
// without its cancellation, which costs each statement a goroutine of
// the driver's that waits to interrupt it. A cancelled ctx still ends
// the transaction: database/sql rolls it back, and the loop checks ctx
// between items.
func statementContext(ctx context.Context) context.Context { return context.WithoutCancel(ctx) }

// read runs fn in one read transaction, so that what it reads across
// several queries is one consistent snapshot.
func (s *SQLiteStore) read(ctx context.Context, what string, fn func(*sql.Tx) error) error {
	tx, err := s.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("%s: beginning transaction: %w", what, err)
	}
	defer func() { _ = tx.Rollback() }()
	if err := fn(tx); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// fileURI turns an absolute local path into a file:// URI.
func fileURI(path string) string {
	return (&url.URL{Scheme: "file", Path: filepath.ToSlash(path)}).String()
}

// ArtifactRoot returns the absolute directory new experiments keep their
// artifacts under.
func (s *SQLiteStore) ArtifactRoot() string { return s.root }

// ProxyArtifactRoot returns the absolute directory that mlflow-artifacts:/
// artifact URIs resolve under; see [WithProxyArtifactRoot].
func (s *SQLiteStore) ProxyArtifactRoot() string { return s.proxyRoot }

// ProxyScheme is the URI scheme of artifacts served through an
// MLflow-compatible server's artifact proxy.
const ProxyScheme = "mlflow-artifacts"

// resolveURI turns an artifact URI (file://, an absolute path or
// mlflow-artifacts:/) into a local path.
func (s *SQLiteStore) resolveURI(uri string) (string, error) {
	if rest, ok := strings.CutPrefix(uri, ProxyScheme+":"); ok {
		rest = strings.TrimLeft(rest, "/")
		clean, err := cleanArtifactPath(rest, true)
		if err != nil {
			return "", fmt.Errorf("artifact location %q: %w", uri, err)
		}
		return filepath.Join(s.proxyRoot, filepath.FromSlash(clean)), nil
	}
	return localPath(uri)
}

// localPath turns a file:// URI, or an absolute path (as MLflow stores
// local locations), back into a local path.
func localPath(uri string) (string, error) {
	if filepath.IsAbs(uri) {
		return uri, nil
	}
	u, err := url.Parse(uri)
	if err != nil || u.Scheme != "file" || (u.Host != "" && u.Host != "localhost") || u.Path == "" {
		return "", fmt.Errorf("%w: artifact location %q is not a local file:// location; this store only reads and writes local artifacts", ErrInvalid, uri)
	}
	return filepath.FromSlash(u.Path), nil
}
