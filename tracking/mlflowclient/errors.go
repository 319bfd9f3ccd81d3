package mlflowclient

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/cohortfl/cohort/tracking"
)

// Errors of the client itself; the tracking package's sentinels
// ([tracking.ErrNotFound], [tracking.ErrAlreadyExists],
// [tracking.ErrInvalid], [tracking.ErrExperimentDeleted], …) match errors
// the server returned, through [APIError].
var (
	// ErrSpoolFull is returned by a write when the spool has reached
	// Config.SpoolMaxBytes because the server has been unreachable too long.
	ErrSpoolFull = errors.New("mlflow spool full")
	// ErrClosed is returned by every method after Close.
	ErrClosed = errors.New("mlflow client closed")
	// ErrNoArtifactProxy is returned when a run's artifact URI is not
	// mlflow-artifacts:/…, so the server does not proxy artifact uploads.
	ErrNoArtifactProxy = errors.New("the MLflow server does not proxy artifacts; start it with `mlflow server --serve-artifacts` (the default since MLflow 2.0)")
	// ErrPlaceholder is returned when a run was given a placeholder ID
	// (the server was unreachable at CreateRun) and its creation on the
	// server failed, so writes to it cannot be delivered.
	ErrPlaceholder = errors.New("run was never created on the MLflow server")
)

// APIError is an error response of the MLflow server: its HTTP status and
// MLflow's error_code and message. It matches the tracking sentinels with
// [errors.Is]: RESOURCE_DOES_NOT_EXIST is [tracking.ErrNotFound],
// RESOURCE_ALREADY_EXISTS [tracking.ErrAlreadyExists], and
// INVALID_PARAMETER_VALUE, BAD_REQUEST and INVALID_STATE
// [tracking.ErrInvalid].
type APIError struct {
	Method, Endpoint string // the request, e.g. POST runs/log-batch
	StatusCode       int
	Code             string // MLflow's error_code; "" when the body was not MLflow's JSON
	Message          string

	retryAfter time.Duration // the response's Retry-After; -1 when none
}

// Error implements error.
func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.StatusCode)
	}
	msg := e.Message
	if msg == "" {
		msg = "(no message)"
	}
	return fmt.Sprintf("mlflow %s %s: %d %s: %s", e.Method, e.Endpoint, e.StatusCode, code, msg)
}

// Unwrap returns the tracking sentinel of the error code, or nil.
func (e *APIError) Unwrap() error {
	switch e.Code {
	case "RESOURCE_DOES_NOT_EXIST", "NOT_FOUND":
		return tracking.ErrNotFound
	case "RESOURCE_ALREADY_EXISTS":
		return tracking.ErrAlreadyExists
	case "INVALID_PARAMETER_VALUE", "BAD_REQUEST", "INVALID_STATE", "MALFORMED_REQUEST":
		return tracking.ErrInvalid
	}
	if e.Code == "" && e.StatusCode == http.StatusNotFound {
		return tracking.ErrNotFound
	}
	return nil
}

// retryable reports whether a request that got this status may be sent
// again: 408, 429 and 5xx.
func retryableStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500
}

// transient reports whether a request that failed with err may be sent
// again: no response, or 408, 429, 5xx.
func transient(err error) bool {
	var ae *APIError
	var ne *netError
	return errors.As(err, &ne) || (errors.As(err, &ae) && retryableStatus(ae.StatusCode))
}

// certError reports whether err is the server's TLS certificate failing
// verification: a configuration to fix, not an outage to wait out.
func certError(err error) bool {
	var ve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	return errors.As(err, &ve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci)
}

// netError is a request that got no response (connection refused or
// reset, timeout); it is retried.
type netError struct{ err error }

func (e *netError) Error() string { return e.err.Error() }
func (e *netError) Unwrap() error { return e.err }

// keepSpooled reports whether a spooled write that failed with err should
// stay in the spool and be sent again later: no response, a retryable
// status, authentication (401/403, which an operator fixes) or a
// cancelled context. Anything else (the server refused the write itself)
// is reported and dropped.
func keepSpooled(err error) bool {
	var ne *netError
	var ae *APIError
	var se *spoolError
	switch {
	case errors.Is(err, ErrNoArtifactProxy), errors.Is(err, ErrPlaceholder):
		return false
	case errors.As(err, &ne), errors.As(err, &se):
		return true
	case errors.As(err, &ae):
		return retryableStatus(ae.StatusCode) || ae.StatusCode == http.StatusUnauthorized || ae.StatusCode == http.StatusForbidden
	case errors.Is(err, ErrClosed):
		return true
	}
	return isContextErr(err)
}
