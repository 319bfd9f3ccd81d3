package mlflowserver

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"time"

	"github.com/cohortfl/cohort/tracking"
	"github.com/cohortfl/cohort/tracking/mlflowwire"
)

// pageOffset is MLflow's offset page token: base64 of {"offset": n}.
type pageOffset struct {
	Offset *int `json:"offset"`
}

func encodeOffset(n int) string {
	b, _ := json.Marshal(pageOffset{Offset: &n}) // cannot fail
	return base64.StdEncoding.EncodeToString(b)
}

func decodeOffset(tok string) (int, error) {
	if tok == "" {
		return 0, nil
	}
	b, err := base64.StdEncoding.DecodeString(tok)
	var p pageOffset
	if err == nil {
		err = json.Unmarshal(b, &p)
	}
	if err != nil || p.Offset == nil || *p.Offset < 0 {
		return 0, invalid("Invalid page token %.40q; pass the token a previous call returned, or none", tok)
	}
	return *p.Offset, nil
}

// listRunArtifacts is /mlflow/artifacts/list: a run's artifacts through the
// store, paths relative to the run's artifact root.
func (s *Server) listRunArtifacts(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		mlflowwire.RunRef
		Path      string `json:"path"`
		PageToken string `json:"page_token"`
	}
	if err := s.request(w, r, &req, p("run_id", isString, isRequired), p("path", isString), p("page_token", isString)); err != nil {
		return err
	}
	runID := req.ID()
	if _, err := tracking.CleanArtifactPath(req.Path, true); err != nil {
		return invalidPath(req.Path, err)
	}
	run, err := s.store.GetRun(r.Context(), runID)
	if err != nil {
		return runNotFound(err, runID)
	}
	files, err := s.store.ListArtifacts(r.Context(), runID, req.Path)
	if err != nil {
		return err
	}
	resp := mlflowwire.ListArtifactsResponse{RootURI: run.Info.ArtifactURI}
	for _, f := range files {
		resp.Files = append(resp.Files, toWireFile(f.Path, f.IsDir, f.FileSize))
	}
	return ok(w, resp)
}

func toWireFile(p string, dir bool, size int64) mlflowwire.FileInfo {
	fi := mlflowwire.FileInfo{Path: p, IsDir: dir}
	if !dir {
		fi.FileSize = mlflowwire.NewInt64(size)
	}
	return fi
}

// openProxyRoot opens the proxy's root directory; every access goes
// through it, so neither ".." nor a symbolic link leads outside.
func (s *Server) openProxyRoot() (*os.Root, error) {
	root, err := os.OpenRoot(s.artDir)
	if err != nil {
		return nil, fmt.Errorf("opening artifacts dir: %w", err)
	}
	return root, nil
}

func proxyPath(p string, allowRoot bool) (string, error) {
	rel, err := tracking.CleanArtifactPath(p, allowRoot)
	if err != nil {
		return "", apiError{code: codeInvalidParameter, msg: fmt.Sprintf("Invalid path: %q (it must be relative, with no '..')", p), err: err}
	}
	return rel, nil
}

func (s *Server) proxyList(w http.ResponseWriter, r *http.Request) error {
	rel, err := proxyPath(r.URL.Query().Get("path"), true)
	if err != nil {
		return err
	}
	root, err := s.openProxyRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	resp := mlflowwire.ProxyListResponse{}
	f, err := root.Open(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return ok(w, resp)
	}
	if err != nil {
		return mapFSError(err, rel)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("listing artifacts: %w", err)
	}
	if !st.IsDir() {
		return ok(w, resp)
	}
	entries, err := f.ReadDir(-1)
	if err != nil {
		return fmt.Errorf("listing artifacts: %w", err)
	}
	for _, e := range entries {
		if tracking.IsTempArtifactName(e.Name()) {
			continue
		}
		var size int64
		if !e.IsDir() {
			info, err := e.Info()
			if err != nil {
				continue
			}
			size = info.Size()
		}
		resp.Files = append(resp.Files, toWireFile(e.Name(), e.IsDir(), size))
	}
	slices.SortFunc(resp.Files, func(a, b mlflowwire.FileInfo) int { return strings.Compare(a.Path, b.Path) })
	return ok(w, resp)
}

// mapFSError turns a file error under the proxy root into an API error;
// an escape attempt (a symbolic link out of the root) is invalid.
func mapFSError(err error, rel string) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return apiError{code: codeNotFound, msg: fmt.Sprintf("Artifact %q not found", rel), err: err}
	case strings.Contains(err.Error(), "path escapes"):
		return apiError{code: codeInvalidParameter, msg: fmt.Sprintf("Invalid path: %q leads outside the artifact root", rel), err: err}
	}
	return fmt.Errorf("artifact %q: %w", rel, err)
}

func (s *Server) proxyDownload(w http.ResponseWriter, r *http.Request) error {
	rel, err := proxyPath(r.PathValue("path"), false)
	if err != nil {
		return err
	}
	root, err := s.openProxyRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	f, err := root.Open(rel)
	if err != nil {
		return mapFSError(err, rel)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("artifact %q: %w", rel, err)
	}
	if st.IsDir() {
		return invalid("Artifact %q is a directory; list it with GET /api/2.0/mlflow-artifacts/artifacts?path=%s", rel, rel)
	}
	ct := mime.TypeByExtension(path.Ext(rel))
	if ct == "" {
		ct = "application/octet-stream"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(rel)}))
	http.ServeContent(w, r, "", st.ModTime(), f)
	return nil
}

func (s *Server) proxyUpload(w http.ResponseWriter, r *http.Request) error {
	rel, err := proxyPath(r.PathValue("path"), false)
	if err != nil {
		return err
	}
	if r.ContentLength > MaxArtifactBytes {
		return apiError{code: codeRequestTooLarge, msg: fmt.Sprintf("artifact is %d bytes; the limit is %d", r.ContentLength, int64(MaxArtifactBytes))}
	}
	root, err := s.openProxyRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	body := http.MaxBytesReader(w, r.Body, MaxArtifactBytes)
	if err := tracking.WriteArtifactFile(r.Context(), root, rel, body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return mapFSError(err, rel)
	}
	_, _ = io.Copy(io.Discard, body)
	return ok(w, nil)
}

func (s *Server) proxyDelete(w http.ResponseWriter, r *http.Request) error {
	rel, err := proxyPath(r.PathValue("path"), false)
	if err != nil {
		return err
	}
	root, err := s.openProxyRoot()
	if err != nil {
		return err
	}
	defer root.Close()
	if err := root.RemoveAll(rel); err != nil {
		return mapFSError(err, rel)
	}
	return ok(w, nil)
}

// invalidPath is MLflow's validate_path_is_safe error.
func invalidPath(p string, err error) error {
	return apiError{code: codeInvalidParameter, msg: fmt.Sprintf("Invalid path: '%s'. An artifact path is relative, with '/' separators and no '..' part", p), err: err}
}

// maxUploadArtifactBytes is MLflow's bound on upload-artifact's body.
const maxUploadArtifactBytes = 10 << 20

// uploadArtifact is the UI's POST /ajax-api/2.0/mlflow/upload-artifact
// ?run_uuid=…&path=…: the body is the file, written to the run's
// artifacts through the store.
func (s *Server) uploadArtifact(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	runID, p := q.Get("run_uuid"), q.Get("path")
	switch {
	case runID == "":
		return invalid("Request must specify run_uuid.")
	case p == "":
		return invalid("Request must specify path.")
	}
	rel, err := tracking.CleanArtifactPath(p, false)
	if err != nil {
		return invalidPath(p, err)
	}
	tooLarge := invalid("Artifact size is too large. Max size is 10MB.")
	if r.ContentLength > maxUploadArtifactBytes {
		return tooLarge
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxUploadArtifactBytes+1))
	switch {
	case err != nil:
		return apiError{code: codeBadRequest, msg: "reading request body: " + err.Error(), err: err}
	case len(data) > maxUploadArtifactBytes:
		return tooLarge
	case len(data) == 0:
		return invalid("Request must specify data.")
	}
	if _, err := s.store.GetRun(r.Context(), runID); err != nil {
		return runNotFound(err, runID)
	}
	if err := s.store.LogArtifact(r.Context(), runID, rel, bytes.NewReader(data)); err != nil {
		return runNotFound(err, runID)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	return nil
}

// getArtifact is GET /get-artifact?run_id=…&path=…: one artifact file of
// a run, through the store, as an attachment.
func (s *Server) getArtifact(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	runID := q.Get("run_id")
	if runID == "" {
		runID = q.Get("run_uuid")
	}
	if runID == "" {
		return missingValue("run_id")
	}
	if !q.Has("path") {
		return missingValue("path")
	}
	p := q.Get("path")
	rel, err := tracking.CleanArtifactPath(p, false)
	if err != nil {
		return invalidPath(p, err)
	}
	if _, err := s.store.GetRun(r.Context(), runID); err != nil {
		return runNotFound(err, runID)
	}
	f, err := s.store.OpenArtifact(r.Context(), runID, rel)
	if errors.Is(err, tracking.ErrNotFound) {
		return apiError{code: codeNotFound, msg: fmt.Sprintf("Artifact '%s' of run %s not found", rel, runID), err: err}
	}
	if errors.Is(err, tracking.ErrInvalid) {
		return apiError{code: codeInvalidParameter, msg: fmt.Sprintf("Artifact '%s' of run %s is a directory; list it with GET /api/2.0/mlflow/artifacts/list?run_id=%s&path=%s", rel, runID, runID, rel), err: err}
	}
	if err != nil {
		return err
	}
	defer f.Close()
	serveArtifact(w, r, f, rel)
	return nil
}

// getModelVersionArtifact is GET /model-versions/get-artifact?name=…&version=…&path=…:
// one file of a model version's artifacts (its source folder), found
// through the run that logged it or, for a source in the artifact proxy
// without a run, under the proxy's root.
func (s *Server) getModelVersionArtifact(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	for _, k := range []string{"name", "version"} {
		if q.Get(k) == "" {
			return missingValue(k)
		}
	}
	if !q.Has("path") {
		return missingValue("path")
	}
	p := q.Get("path")
	rel, err := tracking.CleanArtifactPath(p, false)
	if err != nil {
		return invalidPath(p, err)
	}
	ctx := r.Context()
	name, version := q.Get("name"), q.Get("version")
	mv, err := s.store.GetModelVersion(ctx, name, version)
	if err != nil {
		return regError(err)
	}
	src, err := s.store.GetModelVersionDownloadURI(ctx, name, version)
	if err != nil {
		return regError(err)
	}
	notFound := func(err error) error {
		return apiError{code: codeNotFound, msg: fmt.Sprintf("Artifact '%s' of model version (name=%s, version=%s) not found", rel, name, version), err: err}
	}
	var f io.ReadCloser
	if run, rerr := s.store.GetRun(ctx, mv.RunID); rerr == nil && strings.HasPrefix(src, strings.TrimSuffix(run.Info.ArtifactURI, "/")+"/") {
		sub := strings.TrimPrefix(src, strings.TrimSuffix(run.Info.ArtifactURI, "/")+"/")
		f, err = s.store.OpenArtifact(ctx, mv.RunID, path.Join(sub, rel))
	} else if rest, ok := strings.CutPrefix(src, tracking.ProxyScheme+":"); ok {
		var root *os.Root
		if root, err = s.openProxyRoot(); err == nil {
			defer root.Close()
			var clean string
			if clean, err = tracking.CleanArtifactPath(strings.TrimLeft(rest, "/"), true); err == nil {
				f, err = root.Open(path.Join(clean, rel))
			}
		}
	} else {
		return apiError{code: codeInvalidParameter, msg: fmt.Sprintf("Model version (name=%s, version=%s) has source %s, which this server does not hold; fetch it from there", name, version, src)}
	}
	switch {
	case errors.Is(err, tracking.ErrNotFound), errors.Is(err, fs.ErrNotExist), errors.Is(err, tracking.ErrInvalid):
		return notFound(err)
	case err != nil:
		return err
	}
	defer f.Close()
	if st, ok := f.(*os.File); ok {
		if fi, err := st.Stat(); err == nil && fi.IsDir() {
			return notFound(fs.ErrNotExist)
		}
	}
	serveArtifact(w, r, f, rel)
	return nil
}

// serveArtifact answers one artifact file as a download.
func serveArtifact(w http.ResponseWriter, r *http.Request, f io.Reader, rel string) {
	ct := mime.TypeByExtension(path.Ext(rel))
	if ct == "" {
		ct = "text/plain"
	}
	w.Header().Set("Content-Type", ct)
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Disposition", mime.FormatMediaType("attachment", map[string]string{"filename": path.Base(rel)}))
	if rs, seekable := f.(io.ReadSeeker); seekable {
		http.ServeContent(w, r, "", time.Time{}, rs)
		return
	}
	_, _ = io.Copy(w, f)
}
