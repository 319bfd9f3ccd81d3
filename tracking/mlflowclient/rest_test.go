package mlflowclient

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cohortfl/cohort/tracking"
)

type cannedResponse struct {
	status int
	header map[string]string
	body   string
}

// cannedServer answers with the responses in turn, the last one forever.
func cannedServer(t *testing.T, rs ...cannedResponse) (*httptest.Server, *int) {
	var mu sync.Mutex
	n := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		resp := rs[min(n, len(rs)-1)]
		n++
		mu.Unlock()
		for k, v := range resp.header {
			w.Header().Set(k, v)
		}
		w.WriteHeader(resp.status)
		_, _ = w.Write([]byte(resp.body))
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

func TestRetries(t *testing.T) {
	ok := cannedResponse{status: 200, body: `{"run":{"info":{"run_id":"abc"}}}`}
	unavailable := cannedResponse{status: 503, body: "busy"}
	date := time.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)
	tests := []struct {
		name         string
		responses    []cannedResponse
		wantAttempts int
		wantErr      error  // matched with errors.Is
		wantMsg      string // in the error
		checkSleeps  func(t *testing.T, sleeps []time.Duration)
	}{
		{name: "503 twice then ok", responses: []cannedResponse{unavailable, unavailable, ok}, wantAttempts: 3,
			checkSleeps: func(t *testing.T, s []time.Duration) {
				if len(s) != 2 || s[0] < time.Millisecond || s[1] < 2*time.Millisecond {
					t.Errorf("sleeps = %v, want 2 growing backoffs ≥ 1ms, 2ms", s)
				}
			}},
		{name: "408 then ok", responses: []cannedResponse{{status: 408}, ok}, wantAttempts: 2},
		{name: "429 Retry-After seconds", responses: []cannedResponse{{status: 429, header: map[string]string{"Retry-After": "7"}}, ok}, wantAttempts: 2,
			checkSleeps: func(t *testing.T, s []time.Duration) {
				if diff := cmp.Diff([]time.Duration{7 * time.Second}, s); diff != "" {
					t.Errorf("sleeps (-want +got):\n%s", diff)
				}
			}},
		{name: "503 Retry-After date", responses: []cannedResponse{{status: 503, header: map[string]string{"Retry-After": date}}, ok}, wantAttempts: 2,
			checkSleeps: func(t *testing.T, s []time.Duration) {
				if len(s) != 1 || s[0] < 28*time.Second || s[0] > 31*time.Second {
					t.Errorf("sleeps = %v, want one of about 30s", s)
				}
			}},
		{name: "500 always", responses: []cannedResponse{{status: 500, body: `{"error_code":"INTERNAL_ERROR","message":"db locked"}`}}, wantAttempts: 4,
			wantMsg: "gave up after 4 attempts"},
		{name: "invalid parameter not retried", responses: []cannedResponse{{status: 400, body: `{"error_code":"INVALID_PARAMETER_VALUE","message":"Invalid metric name: 'a b'"}`}},
			wantAttempts: 1, wantErr: tracking.ErrInvalid, wantMsg: "Invalid metric name: 'a b'"},
		{name: "not found", responses: []cannedResponse{{status: 404, body: `{"error_code":"RESOURCE_DOES_NOT_EXIST","message":"Run 'x' not found"}`}},
			wantAttempts: 1, wantErr: tracking.ErrNotFound, wantMsg: "Run 'x' not found"},
		{name: "already exists", responses: []cannedResponse{{status: 400, body: `{"error_code":"RESOURCE_ALREADY_EXISTS","message":"Experiment 'e' already exists."}`}},
			wantAttempts: 1, wantErr: tracking.ErrAlreadyExists},
		{name: "unreadable answer not retried", responses: []cannedResponse{{status: 200, body: "<html>login</html>"}}, wantAttempts: 1, wantMsg: "decoding the response"},
		{name: "unauthorized not retried", responses: []cannedResponse{{status: 401, body: "You are not authenticated."}}, wantAttempts: 1, wantMsg: "401"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, n := cannedServer(t, tt.responses...)
			cfg := testConfig(t, srv.URL)
			cfg.MaxRetries = 3
			c := newTestClient(t, cfg)
			var sleeps []time.Duration
			c.sleep = func(ctx context.Context, d time.Duration) error { sleeps = append(sleeps, d); return nil }
			_, err := c.getRun(t.Context(), "abc")
			if *n != tt.wantAttempts {
				t.Errorf("attempts = %d, want %d", *n, tt.wantAttempts)
			}
			wantFail := tt.wantErr != nil || tt.wantMsg != ""
			if (err != nil) != wantFail || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || (err != nil && !strings.Contains(err.Error(), tt.wantMsg)) {
				t.Errorf("err = %v, want %v containing %q", err, tt.wantErr, tt.wantMsg)
			}
			if tt.checkSleeps != nil {
				tt.checkSleeps(t, sleeps)
			}
		})
	}
}

func TestRetriesConnectionErrors(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close()
	cfg := testConfig(t, url)
	cfg.MaxRetries = 2
	c := newTestClient(t, cfg)
	var sleeps int
	c.sleep = func(ctx context.Context, d time.Duration) error { sleeps++; return nil }
	_, err := c.getRun(t.Context(), "abc")
	var ne *netError
	if !errors.As(err, &ne) || sleeps != 2 {
		t.Errorf("getRun on a closed port = %v after %d sleeps; want a connection error after 2", err, sleeps)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"", -1},
		{"0", 0},
		{"120", 2 * time.Minute},
		{"99999", maxRetryAfter},
		{"-3", -1},
		{"soon", -1},
		{now.Add(45 * time.Second).Format(http.TimeFormat), 45 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	}
	for _, tt := range tests {
		if got := retryAfter(tt.in, now); got != tt.want {
			t.Errorf("retryAfter(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestAuthHeaders(t *testing.T) {
	tests := []struct {
		name string
		env  map[string]string
		want string
	}{
		{"none", nil, ""},
		{"basic", map[string]string{EnvUsername: "ada", EnvPassword: "s3cret"}, "Basic YWRhOnMzY3JldA=="},
		{"bearer", map[string]string{EnvToken: "tok"}, "Bearer tok"},
		{"basic wins over token", map[string]string{EnvUsername: "ada", EnvPassword: "s3cret", EnvToken: "tok"}, "Basic YWRhOnMzY3JldA=="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, srv := startFake(t)
			var mu sync.Mutex
			var got []string
			f.hook = func(w http.ResponseWriter, r *http.Request, endpoint string) bool {
				mu.Lock()
				got = append(got, r.Header.Get("Authorization"))
				mu.Unlock()
				return false
			}
			c, err := newClient(testConfig(t, srv.URL), func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			defer c.cfg.HTTPClient.CloseIdleConnections()
			ctx := t.Context()
			run, err := c.CreateRun(ctx, tracking.CreateRun{})
			if err != nil {
				t.Fatal(err)
			}
			_ = c.LogArtifact(ctx, run.Info.RunID, "a.txt", strings.NewReader("a"))
			_ = c.LogBatch(ctx, run.Info.RunID, metrics("m", 1, 1), nil, nil)
			flush(t, c)
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 3 {
				t.Fatalf("requests = %d, want 3 (create, artifact, log-batch)", len(got))
			}
			for _, h := range got {
				if h != tt.want {
					t.Errorf("Authorization = %q, want %q", h, tt.want)
				}
			}
		})
	}
}

func TestConfigResolve(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		env     map[string]string
		check   func(t *testing.T, c Config)
		wantErr string
	}{
		{name: "defaults", cfg: Config{URI: "http://mlflow:5000/"}, check: func(t *testing.T, c Config) {
			want := Config{URI: "http://mlflow:5000", RequestTimeout: 120 * time.Second, MaxRetries: 7, BackoffFactor: 2 * time.Second,
				BackoffJitter: time.Second, BackoffMax: 120 * time.Second, SpoolMaxBytes: 1 << 30}
			got := Config{URI: c.URI, RequestTimeout: c.RequestTimeout, MaxRetries: c.MaxRetries, BackoffFactor: c.BackoffFactor,
				BackoffJitter: c.BackoffJitter, BackoffMax: c.BackoffMax, SpoolMaxBytes: c.SpoolMaxBytes}
			if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b *http.Client) bool { return true })); diff != "" {
				t.Errorf("defaults (-want +got):\n%s", diff)
			}
			if !strings.Contains(c.SpoolDir, filepath.Join("cohort", "mlflow-spool")) {
				t.Errorf("SpoolDir = %q, want under cohort/mlflow-spool", c.SpoolDir)
			}
		}},
		{name: "environment", cfg: Config{URI: "https://mlflow"}, env: map[string]string{
			EnvRequestTimeout: "30", EnvMaxRetries: "0", EnvBackoffFactor: "0.5", EnvBackoffJitter: "0", EnvInsecureTLS: "true", EnvToken: "t",
		}, check: func(t *testing.T, c Config) {
			if c.RequestTimeout != 30*time.Second || c.MaxRetries != -1 || c.BackoffFactor != 500*time.Millisecond || !c.InsecureTLS || c.Token != "t" {
				t.Errorf("from the environment: %+v", c)
			}
		}},
		{name: "fields win over the environment", cfg: Config{URI: "http://m", Token: "field", MaxRetries: 2}, env: map[string]string{EnvToken: "env", EnvMaxRetries: "9"},
			check: func(t *testing.T, c Config) {
				if c.Token != "field" || c.MaxRetries != 2 {
					t.Errorf("Token, MaxRetries = %q, %d; want field, 2", c.Token, c.MaxRetries)
				}
			}},
		{name: "no uri", cfg: Config{}, wantErr: "tracking uri: empty"},
		{name: "bad scheme", cfg: Config{URI: "sqlite:cohort.db"}, wantErr: `scheme "sqlite"`},
		{name: "insecure and CA", cfg: Config{URI: "https://m"}, env: map[string]string{EnvInsecureTLS: "true", EnvServerCertPath: "/ca.pem"},
			wantErr: "cannot both be set"},
		{name: "username without password", cfg: Config{URI: "http://m"}, env: map[string]string{EnvUsername: "ada"}, wantErr: EnvPassword},
		{name: "bad retries", cfg: Config{URI: "http://m"}, env: map[string]string{EnvMaxRetries: "many"}, wantErr: EnvMaxRetries},
		{name: "bad timeout", cfg: Config{URI: "http://m"}, env: map[string]string{EnvRequestTimeout: "soon"}, wantErr: EnvRequestTimeout},
		{name: "missing CA file", cfg: Config{URI: "https://m", CACertPath: "/nonexistent/ca.pem"}, wantErr: EnvServerCertPath},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.cfg.resolve(func(k string) string { return tt.env[k] })
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("resolve = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, got)
		})
	}
}

func TestCustomCA(t *testing.T) {
	f := newFake(t)
	srv := httptest.NewUnstartedServer(f)
	srv.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		env     map[string]string
		wantErr bool
	}{
		{"custom CA", map[string]string{EnvServerCertPath: ca}, false},
		{"system CAs only", nil, true},
		{"insecure", map[string]string{EnvInsecureTLS: "true"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig(t, srv.URL)
			cfg.MaxRetries = -1
			c, err := newClient(cfg, func(k string) string { return tt.env[k] })
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			defer c.cfg.HTTPClient.CloseIdleConnections()
			_, err = c.EnsureExperiment(t.Context(), "tls")
			if (err != nil) != tt.wantErr {
				t.Errorf("EnsureExperiment over TLS = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "certificate") {
				t.Errorf("error %v does not name the certificate", err)
			}
		})
	}
}
