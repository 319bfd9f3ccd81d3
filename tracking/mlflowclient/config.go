package mlflowclient

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Defaults of [Config]. The HTTP ones are MLflow's own client's defaults
// (mlflow/environment_variables.py).
const (
	// DefaultRequestTimeout bounds one HTTP attempt (MLFLOW_HTTP_REQUEST_TIMEOUT).
	DefaultRequestTimeout = 120 * time.Second
	// DefaultMaxRetries is how often a failed request is retried
	// (MLFLOW_HTTP_REQUEST_MAX_RETRIES).
	DefaultMaxRetries = 7
	// DefaultBackoffFactor scales the exponential backoff: the n-th retry
	// waits factor × 2^(n-1) (MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR, seconds).
	DefaultBackoffFactor = 2 * time.Second
	// DefaultBackoffJitter is the upper bound of the random time added to
	// each backoff (MLFLOW_HTTP_REQUEST_BACKOFF_JITTER, seconds).
	DefaultBackoffJitter = time.Second
	// DefaultBackoffMax caps one backoff, as urllib3 does.
	DefaultBackoffMax = 120 * time.Second
	// DefaultCreateTimeout bounds a CreateRun sent straight to the server
	// before it falls back to a placeholder run ID.
	DefaultCreateTimeout = 5 * time.Second
	// DefaultFlushInterval is how often Run looks for spooled writes when
	// nothing woke it.
	DefaultFlushInterval = time.Second
	// DefaultMaxFlushBackoff caps the wait between flush attempts while the
	// server is unreachable.
	DefaultMaxFlushBackoff = 30 * time.Second
	// DefaultFinalFlushTimeout bounds the last flush Run makes when its
	// context is cancelled.
	DefaultFinalFlushTimeout = 10 * time.Second
	// DefaultSpoolMaxBytes bounds the spool on disk.
	DefaultSpoolMaxBytes = 1 << 30
	// DefaultMaxDownloadBytes bounds what one DownloadArtifacts call
	// writes.
	DefaultMaxDownloadBytes = 16 << 30
	// MaxDownloadFiles bounds the files and directories one
	// DownloadArtifacts call lists.
	MaxDownloadFiles = 100_000
	// DefaultSegmentBytes is the size past which the spool starts a new
	// segment file (and deletes the ones fully sent).
	DefaultSegmentBytes = 16 << 20
)

// The environment variables of MLflow's client that [New] reads for the
// fields left at their zero value.
const (
	// EnvUsername is the basic-auth user.
	EnvUsername = "MLFLOW_TRACKING_USERNAME"
	// EnvPassword is the basic-auth password.
	EnvPassword = "MLFLOW_TRACKING_PASSWORD"
	// EnvToken is the bearer token, used when no username is set.
	EnvToken = "MLFLOW_TRACKING_TOKEN"
	// EnvServerCertPath is a PEM file of the CAs that sign the server's certificate.
	EnvServerCertPath = "MLFLOW_TRACKING_SERVER_CERT_PATH"
	// EnvClientCertPath is a PEM file with a client certificate and its key.
	EnvClientCertPath = "MLFLOW_TRACKING_CLIENT_CERT_PATH"
	// EnvInsecureTLS ("true") skips the verification of the server's certificate.
	EnvInsecureTLS = "MLFLOW_TRACKING_INSECURE_TLS"
	// EnvRequestTimeout bounds one HTTP attempt, in seconds.
	EnvRequestTimeout = "MLFLOW_HTTP_REQUEST_TIMEOUT"
	// EnvMaxRetries is how often a transient failure is retried.
	EnvMaxRetries = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
	// EnvBackoffFactor scales the exponential backoff, in seconds.
	EnvBackoffFactor = "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"
	// EnvBackoffJitter bounds the random time added to a backoff, in seconds.
	EnvBackoffJitter = "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER"
)

// Config configures a [Client]. Only URI is required; every other zero
// value takes the documented default, or the MLflow environment variable
// named beside it when that is set.
type Config struct {
	// URI is the tracking server, http(s)://host:port[/prefix].
	URI string
	// SpoolDir holds the spool; "" means
	// os.UserCacheDir()/cohort/mlflow-spool/<hash of URI>. One process at a
	// time may use a spool directory.
	SpoolDir string
	// SpoolMaxBytes bounds the spool on disk ([DefaultSpoolMaxBytes]); a
	// write that would pass it fails with [ErrSpoolFull].
	SpoolMaxBytes int64
	// SegmentBytes is the spool's segment size ([DefaultSegmentBytes]).
	SegmentBytes int64
	// HTTPClient sends the requests; nil builds one from the TLS fields
	// below (and the proxy environment, as net/http does). Credentials are
	// added to each request either way.
	HTTPClient *http.Client
	// Logger receives the client's logs; nil discards them.
	Logger *slog.Logger

	// Username and Password authenticate with HTTP basic auth
	// (MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD); they win over
	// Token, as in MLflow.
	Username, Password string
	// Token is sent as "Authorization: Bearer <Token>" (MLFLOW_TRACKING_TOKEN).
	Token string
	// CACertPath is a PEM file of the CAs to trust instead of the system's
	// (MLFLOW_TRACKING_SERVER_CERT_PATH).
	CACertPath string
	// ClientCertPath is a PEM file holding a client certificate and its key
	// (MLFLOW_TRACKING_CLIENT_CERT_PATH).
	ClientCertPath string
	// InsecureTLS skips the verification of the server's certificate
	// (MLFLOW_TRACKING_INSECURE_TLS=true); it cannot be set with CACertPath.
	InsecureTLS bool

	// RequestTimeout bounds one HTTP attempt ([DefaultRequestTimeout]).
	RequestTimeout time.Duration
	// MaxRetries is how often a transient failure is retried
	// ([DefaultMaxRetries]); negative means never.
	MaxRetries int
	// BackoffFactor, BackoffJitter and BackoffMax shape the wait before the
	// n-th retry: min(BackoffFactor × 2^(n-1), BackoffMax) plus a random
	// duration below BackoffJitter. A Retry-After header replaces it.
	BackoffFactor, BackoffJitter, BackoffMax time.Duration
	// CreateTimeout bounds a CreateRun sent straight to the server
	// ([DefaultCreateTimeout]); past it the run gets a placeholder ID.
	CreateTimeout time.Duration
	// FlushInterval is how often Run looks for spooled writes
	// ([DefaultFlushInterval]).
	FlushInterval time.Duration
	// MaxFlushBackoff caps the wait between flush attempts while the server
	// is unreachable ([DefaultMaxFlushBackoff]).
	MaxFlushBackoff time.Duration
	// FinalFlushTimeout bounds Run's last flush ([DefaultFinalFlushTimeout]).
	FinalFlushTimeout time.Duration
	// MaxDownloadBytes bounds the bytes one DownloadArtifacts call writes
	// ([DefaultMaxDownloadBytes]).
	MaxDownloadBytes int64
}

// resolve fills the zero fields from getenv and the defaults, and checks
// the result; every problem is named in the joined error.
func (c Config) resolve(getenv func(string) string) (Config, error) {
	var errs []error
	u, err := url.Parse(c.URI)
	switch {
	case c.URI == "":
		errs = append(errs, errors.New("tracking uri: empty; set it to http(s)://host:port of the MLflow server"))
	case err != nil:
		errs = append(errs, fmt.Errorf("tracking uri %q: %w", c.URI, err))
	case u.Scheme != "http" && u.Scheme != "https":
		errs = append(errs, fmt.Errorf("tracking uri %q: scheme %q is neither http nor https", c.URI, u.Scheme))
	case u.Host == "":
		errs = append(errs, fmt.Errorf("tracking uri %q: no host", c.URI))
	case u.RawQuery != "" || u.Fragment != "":
		errs = append(errs, fmt.Errorf("tracking uri %q: drop the query and fragment", c.URI))
	}
	c.URI = strings.TrimRight(c.URI, "/")
	str := func(dst *string, env string) {
		if *dst == "" {
			*dst = getenv(env)
		}
	}
	str(&c.Username, EnvUsername)
	str(&c.Password, EnvPassword)
	str(&c.Token, EnvToken)
	str(&c.CACertPath, EnvServerCertPath)
	str(&c.ClientCertPath, EnvClientCertPath)
	if (c.Username == "") != (c.Password == "") {
		errs = append(errs, fmt.Errorf("credentials: set both %s and %s for basic auth, or neither", EnvUsername, EnvPassword))
	}
	if !c.InsecureTLS {
		if v := getenv(EnvInsecureTLS); v != "" {
			b, err := strconv.ParseBool(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: not true or false", EnvInsecureTLS, v))
			}
			c.InsecureTLS = b
		}
	}
	if c.InsecureTLS && c.CACertPath != "" {
		errs = append(errs, fmt.Errorf("tls: %s and %s cannot both be set: either verify against the CA or do not verify", EnvInsecureTLS, EnvServerCertPath))
	}
	seconds := func(dst *time.Duration, env string, def time.Duration) {
		if *dst != 0 {
			return
		}
		*dst = def
		if v := getenv(env); v != "" {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 {
				errs = append(errs, fmt.Errorf("%s=%q: not a number of seconds", env, v))
				return
			}
			*dst = time.Duration(f * float64(time.Second))
		}
	}
	seconds(&c.RequestTimeout, EnvRequestTimeout, DefaultRequestTimeout)
	seconds(&c.BackoffFactor, EnvBackoffFactor, DefaultBackoffFactor)
	seconds(&c.BackoffJitter, EnvBackoffJitter, DefaultBackoffJitter)
	if c.MaxRetries == 0 {
		c.MaxRetries = DefaultMaxRetries
		if v := getenv(EnvMaxRetries); v != "" {
			n, err := strconv.Atoi(v)
			switch {
			case err != nil || n < 0:
				errs = append(errs, fmt.Errorf("%s=%q: not a count", EnvMaxRetries, v))
			case n == 0:
				c.MaxRetries = -1
			default:
				c.MaxRetries = n
			}
		}
	}
	def := func(dst *time.Duration, d time.Duration) {
		if *dst == 0 {
			*dst = d
		}
	}
	def(&c.BackoffMax, DefaultBackoffMax)
	def(&c.CreateTimeout, DefaultCreateTimeout)
	def(&c.FlushInterval, DefaultFlushInterval)
	def(&c.MaxFlushBackoff, DefaultMaxFlushBackoff)
	def(&c.FinalFlushTimeout, DefaultFinalFlushTimeout)
	if c.SpoolMaxBytes == 0 {
		c.SpoolMaxBytes = DefaultSpoolMaxBytes
	}
	if c.MaxDownloadBytes == 0 {
		c.MaxDownloadBytes = DefaultMaxDownloadBytes
	}
	if c.MaxDownloadBytes < 0 {
		errs = append(errs, errors.New("MaxDownloadBytes must not be negative"))
	}
	if c.SegmentBytes == 0 {
		c.SegmentBytes = DefaultSegmentBytes
	}
	if c.SpoolMaxBytes < 0 || c.SegmentBytes < 0 {
		errs = append(errs, errors.New("spool: SpoolMaxBytes and SegmentBytes must not be negative"))
	}
	if c.SpoolDir == "" && len(errs) == 0 {
		cache, err := os.UserCacheDir()
		if err != nil {
			errs = append(errs, fmt.Errorf("spool: no SpoolDir given and no user cache directory: %w", err))
		} else {
			sum := sha256.Sum256([]byte(c.URI))
			c.SpoolDir = filepath.Join(cache, "cohort", "mlflow-spool", hex.EncodeToString(sum[:8]))
		}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.HTTPClient == nil && len(errs) == 0 {
		hc, err := c.buildHTTPClient()
		if err != nil {
			errs = append(errs, err)
		}
		c.HTTPClient = hc
	}
	if err := errors.Join(errs...); err != nil {
		return Config{}, fmt.Errorf("mlflow client config: %w", err)
	}
	return c, nil
}

// buildHTTPClient is net/http's default transport with the TLS settings.
func (c Config) buildHTTPClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tc := &tls.Config{MinVersion: tls.VersionTLS12, InsecureSkipVerify: c.InsecureTLS} //nolint:gosec // MLFLOW_TRACKING_INSECURE_TLS asks for it
	if c.CACertPath != "" {
		pem, err := os.ReadFile(c.CACertPath)
		if err != nil {
			return nil, fmt.Errorf("tls: reading the server CA (%s): %w", EnvServerCertPath, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls: %s holds no PEM certificate (%s)", c.CACertPath, EnvServerCertPath)
		}
		tc.RootCAs = pool
	}
	if c.ClientCertPath != "" {
		cert, err := tls.LoadX509KeyPair(c.ClientCertPath, c.ClientCertPath)
		if err != nil {
			return nil, fmt.Errorf("tls: loading the client certificate and key from %s (%s): %w", c.ClientCertPath, EnvClientCertPath, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr.TLSClientConfig = tc
	return &http.Client{Transport: tr}, nil
}
