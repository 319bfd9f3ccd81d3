package mlflowserver

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"

	"github.com/cohortfl/cohort/tracking"
)

// Config configures a [Server]. The zero value is a server without
// authentication whose artifact proxy serves the store's proxy artifact
// root.
type Config struct {
	// ArtifactsDir is the root of the mlflow-artifacts proxy; "" means the
	// store's proxy artifact root (by default its artifact root), which is
	// also where the store's LogArtifact, ListArtifacts and OpenArtifact
	// look for runs created through this server. A different directory
	// serves the proxy from there, and the store then does not see those
	// files: open the store with [tracking.WithProxyArtifactRoot] set to the
	// same directory instead.
	ArtifactsDir string
	// Auth authenticates every request but /health; nil means none.
	Auth Authenticator
	// MaxBodyBytes bounds a JSON request body; 0 means 32 MiB. Artifact
	// uploads are bounded by MaxArtifactBytes.
	MaxBodyBytes int64
	// Logger receives request errors; nil discards them.
	Logger *slog.Logger
}

// Defaults for [Config].
const (
	// DefaultMaxBodyBytes bounds a JSON request body when
	// Config.MaxBodyBytes is 0.
	DefaultMaxBodyBytes = 32 << 20
	// MaxArtifactBytes bounds one artifact upload.
	MaxArtifactBytes = 5 << 30
)

// Version is the MLflow version /version reports: the API level this
// server implements.
const Version = "2.10.0"

// Server serves MLflow's REST API over a [tracking.SQLiteStore]. It is
// safe for concurrent use; the store serializes writes.
type Server struct {
	store   *tracking.SQLiteStore
	cfg     Config
	log     *slog.Logger
	artDir  string
	mux     *http.ServeMux
	maxBody int64
}

// New returns a server over store. The store stays the caller's to close.
func New(store *tracking.SQLiteStore, cfg Config) (*Server, error) {
	if store == nil {
		return nil, errors.New("creating MLflow server: store is nil")
	}
	if cfg.MaxBodyBytes < 0 {
		return nil, fmt.Errorf("creating MLflow server: MaxBodyBytes %d is negative; use 0 for the default", cfg.MaxBodyBytes)
	}
	s := &Server{store: store, cfg: cfg, log: cfg.Logger, maxBody: cfg.MaxBodyBytes}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.maxBody == 0 {
		s.maxBody = DefaultMaxBodyBytes
	}
	s.artDir = cfg.ArtifactsDir
	if s.artDir == "" {
		s.artDir = store.ProxyArtifactRoot()
	}
	abs, err := filepath.Abs(s.artDir)
	if err != nil {
		return nil, fmt.Errorf("creating MLflow server: artifacts dir: %w", err)
	}
	s.artDir = abs
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("creating MLflow server: artifacts dir: %w", err)
	}
	if abs != store.ProxyArtifactRoot() {
		s.log.Warn("mlflow_artifacts_dir_differs", "artifacts_dir", abs, "store_proxy_root", store.ProxyArtifactRoot())
	}
	s.routes()
	return s, nil
}

// ServeHTTP serves /api/2.0/mlflow/…, /ajax-api/2.0/mlflow/…,
// /api/2.0/mlflow-artifacts/…, /ajax-api/2.0/mlflow-artifacts/…,
// /get-artifact, /health and /version; other /api and /ajax-api paths are
// a 404 JSON error.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/health" && s.cfg.Auth != nil {
		user, err := s.cfg.Auth.Authenticate(r)
		if err != nil {
			w.Header().Set("WWW-Authenticate", s.challenge())
			writeError(w, apiError{code: codeUnauthenticated, msg: "You are not authenticated. Please see the documentation for details: " + err.Error()})
			return
		}
		_ = user
	}
	s.mux.ServeHTTP(w, r)
}

func (s *Server) challenge() string {
	if c, ok := s.cfg.Auth.(interface{ challenge() string }); ok {
		return c.challenge()
	}
	return `Basic realm="mlflow"`
}

type handler func(w http.ResponseWriter, r *http.Request) error

func (s *Server) wrap(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			ae := toAPIError(err)
			if ae.code == codeInternal {
				s.log.Error("mlflow_request_failed", "method", r.Method, "path", r.URL.Path, "err", err)
			} else {
				s.log.Debug("mlflow_request_refused", "method", r.Method, "path", r.URL.Path, "err", err)
			}
			writeError(w, ae)
		}
	}
}

func (s *Server) routes() {
	m := http.NewServeMux()
	api := func(method, path string, h handler) {
		for _, prefix := range []string{"/api/2.0/mlflow/", "/ajax-api/2.0/mlflow/"} {
			m.HandleFunc(method+" "+prefix+path, s.wrap(h))
		}
	}
	api("POST", "experiments/create", s.createExperiment)
	api("GET", "experiments/get", s.getExperiment)
	api("GET", "experiments/get-by-name", s.getExperimentByName)
	api("GET", "experiments/search", s.searchExperiments)
	api("POST", "experiments/search", s.searchExperiments)
	api("GET", "experiments/list", s.searchExperiments)
	api("POST", "experiments/update", s.updateExperiment)
	api("POST", "experiments/delete", s.deleteExperiment)
	api("POST", "experiments/restore", s.restoreExperiment)
	api("POST", "experiments/set-experiment-tag", s.setExperimentTag)
	api("POST", "runs/create", s.createRun)
	api("GET", "runs/get", s.getRun)
	api("POST", "runs/update", s.updateRun)
	api("POST", "runs/delete", s.deleteRun)
	api("POST", "runs/restore", s.restoreRun)
	api("POST", "runs/search", s.searchRuns)
	api("POST", "runs/log-metric", s.logMetric)
	api("POST", "runs/log-parameter", s.logParam)
	api("POST", "runs/set-tag", s.setTag)
	api("POST", "runs/delete-tag", s.deleteTag)
	api("POST", "runs/log-batch", s.logBatch)
	api("POST", "runs/log-inputs", s.logInputs)
	api("GET", "metrics/get-history", s.getMetricHistory)
	api("GET", "artifacts/list", s.listRunArtifacts)
	s.registryRoutes(api)
	for _, prefix := range []string{"/api/2.0/mlflow-artifacts/artifacts", "/ajax-api/2.0/mlflow-artifacts/artifacts"} {
		m.HandleFunc("GET "+prefix, s.wrap(s.proxyList))
		m.HandleFunc("GET "+prefix+"/{path...}", s.wrap(s.proxyDownload))
		m.HandleFunc("PUT "+prefix+"/{path...}", s.wrap(s.proxyUpload))
		m.HandleFunc("DELETE "+prefix+"/{path...}", s.wrap(s.proxyDelete))
	}
	// runs/log-model and the routes MLflow keeps for its web UI (some only
	// under /ajax-api, or at the root).
	api("POST", "runs/log-model", s.logModel)
	api("POST", "experiments/search-datasets", s.searchDatasets)
	api("GET", "metrics/get-history-bulk-interval", s.getHistoryBulkInterval)
	m.HandleFunc("GET /ajax-api/2.0/mlflow/metrics/get-history-bulk", s.wrap(s.getHistoryBulk))
	m.HandleFunc("POST /ajax-api/2.0/mlflow/upload-artifact", s.wrap(s.uploadArtifact))
	m.HandleFunc("GET /get-artifact", s.wrap(s.getArtifact))
	m.HandleFunc("GET /model-versions/get-artifact", s.wrap(s.getModelVersionArtifact))
	m.HandleFunc("GET /health", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, "OK")
	})
	m.HandleFunc("GET /version", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = io.WriteString(w, Version)
	})
	notFound := func(w http.ResponseWriter, r *http.Request) {
		writeError(w, apiError{code: codeEndpointNotFound, msg: fmt.Sprintf("No API endpoint %s %s", r.Method, r.URL.Path)})
	}
	m.HandleFunc("/api/", notFound)
	m.HandleFunc("/ajax-api/", notFound)
	s.mux = m
}

// Error codes, as databricks.proto's ErrorCode.
const (
	codeInvalidParameter = "INVALID_PARAMETER_VALUE"
	codeNotFound         = "RESOURCE_DOES_NOT_EXIST"
	codeAlreadyExists    = "RESOURCE_ALREADY_EXISTS"
	codeBadRequest       = "BAD_REQUEST"
	codeInternal         = "INTERNAL_ERROR"
	codeUnauthenticated  = "UNAUTHENTICATED"
	codePermissionDenied = "PERMISSION_DENIED"
	codeEndpointNotFound = "ENDPOINT_NOT_FOUND"
	codeRequestTooLarge  = "REQUEST_LIMIT_EXCEEDED"
	codeInvalidState     = "INVALID_STATE"
)

var statusOf = map[string]int{
	codeInvalidParameter: http.StatusBadRequest,
	codeNotFound:         http.StatusNotFound,
	codeAlreadyExists:    http.StatusBadRequest,
	codeBadRequest:       http.StatusBadRequest,
	codeInternal:         http.StatusInternalServerError,
	codeUnauthenticated:  http.StatusUnauthorized,
	codePermissionDenied: http.StatusForbidden,
	codeEndpointNotFound: http.StatusNotFound,
	codeRequestTooLarge:  http.StatusRequestEntityTooLarge,
	codeInvalidState:     http.StatusBadRequest,
}

// apiError is an MLflow error response.
type apiError struct {
	code string
	msg  string
	err  error
}

func (e apiError) Error() string { return e.code + ": " + e.msg }
func (e apiError) Unwrap() error { return e.err }

func invalid(format string, args ...any) error {
	return apiError{code: codeInvalidParameter, msg: fmt.Sprintf(format, args...)}
}

func missing(field string) error {
	return missingValue(field)
}

// toAPIError maps store errors to MLflow's codes.
func toAPIError(err error) apiError {
	var ae apiError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &mbe):
		return apiError{code: codeRequestTooLarge, msg: fmt.Sprintf("request body is larger than the limit of %d bytes", mbe.Limit), err: err}
	case errors.Is(err, tracking.ErrNotFound):
		return apiError{code: codeNotFound, msg: err.Error(), err: err}
	case errors.Is(err, tracking.ErrAlreadyExists):
		return apiError{code: codeAlreadyExists, msg: err.Error(), err: err}
	case errors.Is(err, tracking.ErrParamConflict), errors.Is(err, tracking.ErrRunDeleted),
		errors.Is(err, tracking.ErrExperimentDeleted), errors.Is(err, tracking.ErrInvalid):
		return apiError{code: codeInvalidParameter, msg: err.Error(), err: err}
	}
	return apiError{code: codeInternal, msg: err.Error(), err: err}
}

func writeError(w http.ResponseWriter, e apiError) {
	status, ok := statusOf[e.code]
	if !ok {
		status = http.StatusInternalServerError
	}
	writeJSON(w, status, map[string]string{"error_code": e.code, "message": e.msg})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// decode reads a JSON request body into v with no schema: unknown fields
// are ignored, as MLflow does; an empty body is an empty object; a wrong
// type is MLflow's "Invalid value … for parameter …" error. Handlers with
// a schema call [Server.request].
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any) error {
	return s.request(w, r, v)
}
