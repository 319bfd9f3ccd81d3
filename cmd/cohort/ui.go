package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/cohortfl/cohort/deploy"
	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowserver"
	"github.com/cohortfl/cohort/tracking/ui"
)

// uiCmd serves a tracking store: MLflow's REST API 2.0 (so MLflow's own
// clients log into it) and the web UI.
func uiCmd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "passwd" {
		return passwdCmd(args[1:], os.Stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("ui", flag.ContinueOnError)
	fs.SetOutput(stderr)
	db := fs.String("db", "cohort.db", "the tracking database (SQLite) to serve")
	addr := fs.String("addr", "127.0.0.1:5000", "the address to listen on (MLflow's default port is 5000)")
	artifacts := fs.String("artifacts", "", "the mlflow-artifacts proxy's folder (default: the store's artifact root beside the database)")
	auth := fs.String("auth", "none", "authentication: none, basic or token (users from --users)")
	users := fs.String("users", "", `the users file: for --auth basic, lines user:BCRYPT-HASH (write them with: cohort ui passwd --file FILE USER); for token, lines "user token"`)
	level := fs.String("log-level", "info", "log level: debug, info, warn, error")
	format := fs.String("log-format", "text", "log format: text or json")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: cohort ui [flags]\n       cohort ui passwd [--file users] USER")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return fmt.Errorf("ui takes no arguments, got %q", fs.Args())
	}
	log, err := newLogger(stderr, *level, *format)
	if err != nil {
		return err
	}
	authn, err := mlflowserver.LoadAuth(*auth, *users)
	if err != nil {
		return err
	}
	var opts []tracking.Option
	if *artifacts != "" {
		opts = append(opts, tracking.WithProxyArtifactRoot(*artifacts))
	}
	opts = append(opts, tracking.WithLogger(log))
	store, err := tracking.OpenSQLite(ctx, *db, opts...)
	if err != nil {
		return fmt.Errorf("opening tracking store %s: %w", *db, err)
	}
	defer store.Close()
	h, err := trackingHandler(store, authn, log)
	if err != nil {
		return err
	}
	socks, err := inheritedSockets("ui", socketHTTP)
	if err != nil {
		return err
	}
	defer closeListeners(socks) // the server closes its own; this, that of an early return
	lis, _, err := listenOn(socks, socketHTTP, *addr)
	if err != nil {
		return fmt.Errorf("listening on %s: %w; pick another --addr", *addr, err)
	}
	if authn == nil && !deploy.IsLoopback(lis.Addr().String()) {
		log.Warn("tracking_server_open", "addr", lis.Addr().String(), "hint", "anyone who reaches this address can read and write every run; use --auth basic|token --users FILE")
	}
	fmt.Fprintf(stdout, "tracking server on http://%s — MLflow REST API at /api/2.0/mlflow (MLFLOW_TRACKING_URI=http://%s), web UI at /\n", lis.Addr(), lis.Addr())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(lis) }()
	select {
	case err := <-errc:
		return fmt.Errorf("tracking server: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("stopping the tracking server: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// trackingHandler routes MLflow's API paths to the REST server and the
// rest to the web UI.
func trackingHandler(store *tracking.SQLiteStore, authn mlflowserver.Authenticator, log *slog.Logger) (http.Handler, error) {
	api, err := mlflowserver.New(store, mlflowserver.Config{Auth: authn, Logger: log.With("component", "mlflow-api")})
	if err != nil {
		return nil, err
	}
	web, err := ui.New(store, ui.Config{Logger: log.With("component", "ui")})
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	for _, p := range []string{"/api/", "/ajax-api/", "/health", "/version", "/get-artifact", "/model-versions/get-artifact"} {
		mux.Handle(p, api)
	}
	var page http.Handler = web
	if authn != nil {
		page = requireAuth(authn, web)
	}
	mux.Handle("/", page)
	return mux, nil
}

// requireAuth asks for the same credentials as the REST API before a page.
func requireAuth(a mlflowserver.Authenticator, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := a.Authenticate(r); err != nil {
			w.Header().Set("WWW-Authenticate", `Basic realm="cohort"`)
			http.Error(w, "sign in: "+err.Error(), http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// passwdCmd is `cohort ui passwd [--file F] USER`: it reads the password
// (one line from stdin; the terminal's echo is not turned off, so pipe it
// in or type it where nobody watches) and writes USER's line of the
// basic-auth users file as a bcrypt hash, the file kept at mode 0600.
func passwdCmd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("ui passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", "users", "the users file of --auth basic (created if missing)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "Usage: cohort ui passwd [--file users] USER   (the password is read from stdin, one line)")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return fmt.Errorf("ui passwd takes one user name, got %d arguments", fs.NArg())
	}
	user := fs.Arg(0)
	fmt.Fprintf(stderr, "password for %s: ", user)
	line, err := readLine(stdin)
	fmt.Fprintln(stderr)
	if err != nil {
		return fmt.Errorf("reading the password: %w", err)
	}
	if err := mlflowserver.SetPassword(*file, user, line, mlflowserver.MinPasswordCost); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: password of %s set (bcrypt)\n", *file, user)
	return nil
}

// readLine reads one line (up to 4 KiB) byte by byte, so that nothing
// after it is consumed.
func readLine(r io.Reader) (string, error) {
	var b strings.Builder
	buf := make([]byte, 1)
	for b.Len() < 4096 {
		n, err := r.Read(buf)
		if n == 1 {
			if buf[0] == '\n' {
				break
			}
			b.WriteByte(buf[0])
		}
		if errors.Is(err, io.EOF) {
			if b.Len() == 0 {
				return "", errors.New("no password given on stdin")
			}
			break
		}
		if err != nil {
			return "", err
		}
	}
	return strings.TrimSuffix(b.String(), "\r"), nil
}
