package mlflowserver

import (
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

	"github.com/cohortfl/cohort/tracking"
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
	q := r.URL.Query()
	id, uuid := q.Get("run_id"), q.Get("run_uuid")
	runID, err := runIDOf(&id, &uuid)
	if err != nil {
		return err
	}
	run, err := s.store.GetRun(r.Context(), runID)
	if err != nil {
		return runNotFound(err, runID)
	}
	files, err := s.store.ListArtifacts(r.Context(), runID, q.Get("path"))
	if err != nil {
		return err
	}
	resp := struct {
		RootURI string         `json:"root_uri"`
		Files   []wireFileInfo `json:"files,omitempty"`
	}{RootURI: run.Info.ArtifactURI}
	for _, f := range files {
		resp.Files = append(resp.Files, toWireFile(f.Path, f.IsDir, f.FileSize))
	}
	return ok(w, resp)
}

func toWireFile(p string, dir bool, size int64) wireFileInfo {
	fi := wireFileInfo{Path: p, IsDir: dir}
	if !dir {
		fi.FileSize = &size
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
	resp := struct {
		Files []wireFileInfo `json:"files,omitempty"`
	}{}
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
	slices.SortFunc(resp.Files, func(a, b wireFileInfo) int { return strings.Compare(a.Path, b.Path) })
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
