package mlflowclient

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// ErrDownloadTooLarge is returned when the artifacts DownloadArtifacts
// would write pass Config.MaxDownloadBytes or MaxDownloadFiles.
var ErrDownloadTooLarge = errors.New("artifacts too large to download")

// DownloadArtifacts copies the artifacts at artifactURI (a file or a
// folder, listed recursively) into destDir, through the server's artifact
// proxy: GET /api/2.0/mlflow-artifacts/artifacts?path=… lists a folder and
// GET /api/2.0/mlflow-artifacts/artifacts/<path> fetches a file. The URI
// is mlflow-artifacts:/<path>, runs:/<run id>/<path> (resolved through the
// run's artifact URI), or models:/<name>/<version> and
// models:/<name>@<alias> (resolved through model-versions/get-download-uri).
// A folder's files keep their relative paths under destDir; a single file
// lands in destDir under its base name.
//
// Each file is written to a temporary file, synced, then renamed into
// place, so destDir never holds a partial file. A listed name that would
// leave destDir (.., a separator, an absolute path; or a symbolic link
// inside destDir) is refused, and so is a download past
// Config.MaxDownloadBytes or MaxDownloadFiles ([ErrDownloadTooLarge]).
// Files already written stay when a later one fails. Each file's
// transfer is one request bounded by Config.RequestTimeout (raise it for
// large models on slow links), retried from the start as configured.
func (c *Client) DownloadArtifacts(ctx context.Context, artifactURI, destDir string) error {
	what := fmt.Sprintf("downloading %s to %s", artifactURI, destDir)
	if destDir == "" {
		return fmt.Errorf("%s: %w: the destination directory is empty", what, tracking.ErrInvalid)
	}
	uri, err := c.downloadURI(ctx, artifactURI)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	p, ok := proxiedPath(uri)
	if !ok {
		return fmt.Errorf("%s: artifact URI %q is not mlflow-artifacts:/…: %w", what, uri, ErrNoArtifactProxy)
	}
	if p != "" {
		if p, err = tracking.CleanArtifactPath(p, false); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
	}
	if err := os.MkdirAll(destDir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	root, err := os.OpenRoot(destDir)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer root.Close()
	d := &downloader{c: c, root: root, budget: c.cfg.MaxDownloadBytes, files: MaxDownloadFiles}
	entries, err := d.list(ctx, p)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if len(entries) == 0 && p != "" {
		// A file, or an empty folder: a file fetches; a folder is refused.
		err := d.fetch(ctx, p, path.Base(p))
		var ae *APIError
		if errors.As(err, &ae) && ae.StatusCode == http.StatusBadRequest {
			return nil // a folder, empty
		}
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := d.walk(ctx, p, ".", entries); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// downloadURI resolves runs:/ and models:/ URIs to the artifact URI they
// stand for.
func (c *Client) downloadURI(ctx context.Context, uri string) (string, error) {
	if strings.HasPrefix(uri, "runs:/") {
		return c.underlyingURI(ctx, uri)
	}
	if !strings.HasPrefix(uri, "models:/") {
		return uri, nil
	}
	mv, err := c.ResolveModelURI(ctx, uri)
	if err != nil {
		return "", err
	}
	rest, version := mv.Name, mv.Version
	got, err := c.GetModelVersionDownloadURI(ctx, rest, version)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(got, "models:/") || strings.HasPrefix(got, "runs:/") {
		return "", fmt.Errorf("%w: version %s of %q downloads from %q, which this client cannot resolve further", tracking.ErrInvalid, version, rest, got)
	}
	return got, nil
}

type downloader struct {
	c      *Client
	root   *os.Root
	budget int64 // bytes left
	files  int   // list entries left
}

// list lists one folder under the proxy.
func (d *downloader) list(ctx context.Context, p string) ([]mlflowwire.FileInfo, error) {
	var got mlflowwire.ProxyListResponse
	u := d.c.cfg.URI + "/api/2.0/mlflow-artifacts/artifacts"
	if p != "" {
		u += "?" + url.Values{"path": {p}}.Encode()
	}
	if err := d.c.send(ctx, d.c.cfg.MaxRetries, http.MethodGet, "mlflow-artifacts/artifacts", u, "", nil, &got); err != nil {
		return nil, err
	}
	d.files -= len(got.Files)
	if d.files < 0 {
		return nil, fmt.Errorf("%w: more than %d files and folders", ErrDownloadTooLarge, MaxDownloadFiles)
	}
	return got.Files, nil
}

// walk downloads the entries of folder p (remote) into rel (local).
func (d *downloader) walk(ctx context.Context, p, rel string, entries []mlflowwire.FileInfo) error {
	for _, e := range entries {
		name, err := listedName(p, e.Path)
		if err != nil {
			return err
		}
		remote := strings.TrimPrefix(p+"/"+name, "/")
		local := path.Join(rel, name)
		if e.IsDir {
			if err := d.root.MkdirAll(local, 0o755); err != nil {
				return err
			}
			sub, err := d.list(ctx, remote)
			if err != nil {
				return err
			}
			if err := d.walk(ctx, remote, local, sub); err != nil {
				return err
			}
			continue
		}
		if e.Size() > d.budget {
			return fmt.Errorf("%w: %s is %d bytes and %d are left of the %d-byte limit (Config.MaxDownloadBytes)", ErrDownloadTooLarge, remote, e.Size(), d.budget, d.c.cfg.MaxDownloadBytes)
		}
		if err := d.fetch(ctx, remote, local); err != nil {
			return err
		}
	}
	return nil
}

// listedName returns the base name of an entry the server listed in
// folder p: MLflow lists base names, and a server that lists full paths
// under p is read the same way. A name that is empty, "." or "..", holds
// a separator, or is not a local name on this system is refused.
func listedName(p, listed string) (string, error) {
	name := listed
	if rest, ok := strings.CutPrefix(listed, p+"/"); ok && p != "" {
		name = rest
	}
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") || !isLocalName(name) {
		return "", fmt.Errorf("%w: the server listed %q in %q, which would leave the destination; refusing it", tracking.ErrInvalid, listed, p)
	}
	return name, nil
}

// isLocalName reports whether a base name is one a file may have on this
// system (not a Windows device or volume name).
func isLocalName(name string) bool {
	return !strings.Contains(name, ":") && filepath.IsLocal(name)
}

// fetch downloads the file p into local (relative to the root),
// atomically, retrying transient failures.
func (d *downloader) fetch(ctx context.Context, p, local string) error {
	u := d.c.cfg.URI + "/api/2.0/mlflow-artifacts/artifacts/" + escapePath(p)
	var err error
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			if serr := d.c.sleep(ctx, d.c.backoff(attempt)); serr != nil {
				return fmt.Errorf("%w (%w)", err, serr)
			}
		}
		var n int64
		n, err = d.fetchOnce(ctx, u, local)
		if err == nil {
			d.budget -= n
			return nil
		}
		if !transient(err) || ctx.Err() != nil || attempt >= d.c.cfg.MaxRetries {
			return err
		}
	}
}

func (d *downloader) fetchOnce(ctx context.Context, u, local string) (int64, error) {
	actx, cancel := context.WithTimeout(ctx, d.c.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, u, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("User-Agent", "cohort-mlflowclient")
	d.c.authorize(req)
	resp, err := d.c.cfg.HTTPClient.Do(req)
	if err != nil {
		return 0, &netError{fmt.Errorf("mlflow GET mlflow-artifacts/artifacts: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		return 0, apiError("GET", "mlflow-artifacts/artifacts", resp.StatusCode, data)
	}
	if resp.ContentLength > d.budget {
		return 0, fmt.Errorf("%w: %s is %d bytes and %d are left of the %d-byte limit (Config.MaxDownloadBytes)", ErrDownloadTooLarge, local, resp.ContentLength, d.budget, d.c.cfg.MaxDownloadBytes)
	}
	body := &countingReader{r: io.LimitReader(resp.Body, d.budget+1)}
	err = tracking.WriteArtifactFile(ctx, d.root, local, body)
	switch {
	case body.err != nil && !errors.Is(body.err, io.EOF):
		return 0, &netError{fmt.Errorf("mlflow GET mlflow-artifacts/artifacts: reading %s: %w", local, body.err)}
	case err == nil && body.n > d.budget:
		_ = d.root.Remove(local)
		return 0, fmt.Errorf("%w: %s passes the %d-byte limit (Config.MaxDownloadBytes)", ErrDownloadTooLarge, local, d.c.cfg.MaxDownloadBytes)
	case err != nil:
		return 0, fmt.Errorf("writing %s: %w", local, err)
	}
	return body.n, nil
}

// countingReader counts what it reads and keeps the first read error.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && c.err == nil {
		c.err = err
	}
	return n, err
}
