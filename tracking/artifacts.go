package tracking

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
)

// tmpPrefix starts the names of artifacts being written; listings skip them.
const tmpPrefix = ".cohort-tmp-"

// LogArtifact writes r to relPath (slash-separated, relative) under the
// run's artifact URI, <artifact root>/<experiment id>/<run id>/artifacts,
// replacing a file already there. It writes a temporary file, syncs it and
// renames it into place, so readers see the old file or the whole new one.
// Paths that are empty, absolute or hold ".." are [ErrInvalid]; every
// access goes through an [os.Root], so a symbolic link cannot lead outside
// either. A deleted run is [ErrRunDeleted].
func (s *SQLiteStore) LogArtifact(ctx context.Context, runID, relPath string, r io.Reader) error {
	what := fmt.Sprintf("logging artifact %q of run %s", relPath, runID)
	rel, err := cleanArtifactPath(relPath, false)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	dir, err := s.artifactDir(ctx, runID, true)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	defer root.Close()
	if err := writeAtomic(ctx, root, rel, r); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

func writeAtomic(ctx context.Context, root *os.Root, rel string, r io.Reader) (err error) {
	if d := path.Dir(rel); d != "." {
		if err := root.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := path.Join(path.Dir(rel), tmpPrefix+hex.EncodeToString(rnd[:]))
	f, err := root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = root.Remove(tmp)
		}
	}()
	if _, err := io.Copy(f, ctxReader{ctx, r}); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return root.Rename(tmp, rel)
}

// ctxReader stops a copy once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

// ListArtifacts lists the files and directories directly in dir
// (relative; "" is the run's artifact root), sorted by name. A directory
// that does not exist lists as empty, as in MLflow.
func (s *SQLiteStore) ListArtifacts(ctx context.Context, runID, dir string) ([]FileInfo, error) {
	what := fmt.Sprintf("listing artifacts %q of run %s", dir, runID)
	rel, err := cleanArtifactPath(dir, true)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	base, err := s.artifactDir(ctx, runID, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	root, err := os.OpenRoot(base)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer root.Close()
	f, err := root.Open(rel)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !st.IsDir() {
		return nil, nil // a file lists as nothing, as in MLflow
	}
	entries, err := f.ReadDir(-1) // in directory order, sorted below
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	var out []FileInfo
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), tmpPrefix) {
			continue
		}
		fi := FileInfo{Path: path.Join(rel, e.Name()), IsDir: e.IsDir()}
		if rel == "." {
			fi.Path = e.Name()
		}
		if !fi.IsDir {
			info, err := e.Info()
			if err != nil {
				continue // removed meanwhile
			}
			fi.FileSize = info.Size()
		}
		out = append(out, fi)
	}
	slices.SortFunc(out, func(a, b FileInfo) int { return strings.Compare(a.Path, b.Path) })
	return out, nil
}

// OpenArtifact opens the artifact file at relPath of a run; close it when
// done. A missing file is [ErrNotFound]; a directory is [ErrInvalid] (list
// it with ListArtifacts).
func (s *SQLiteStore) OpenArtifact(ctx context.Context, runID, relPath string) (io.ReadCloser, error) {
	what := fmt.Sprintf("opening artifact %q of run %s", relPath, runID)
	rel, err := cleanArtifactPath(relPath, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	base, err := s.artifactDir(ctx, runID, false)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	root, err := os.OpenRoot(base)
	if err == nil {
		defer root.Close() // files opened through it stay open
		var f *os.File
		if f, err = root.Open(rel); err == nil {
			st, err := f.Stat()
			if err == nil && st.IsDir() {
				err = fmt.Errorf("%w: it is a directory; list it with ListArtifacts", ErrInvalid)
			}
			if err != nil {
				_ = f.Close()
				return nil, fmt.Errorf("%s: %w", what, err)
			}
			return f, nil
		}
	}
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil, fmt.Errorf("%s: %w", what, err)
}

// artifactDir returns the local directory of a run's artifacts, from its
// artifact URI; forWrite also requires the run to be active.
func (s *SQLiteStore) artifactDir(ctx context.Context, runID string, forWrite bool) (string, error) {
	var uri string
	var stage LifecycleStage
	err := s.r.QueryRowContext(ctx, `SELECT artifact_uri, lifecycle_stage FROM runs WHERE run_uuid = ?`, runID).Scan(&uri, &stage)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return "", fmt.Errorf("run %s: %w", runID, ErrNotFound)
	case err != nil:
		return "", err
	case forWrite && stage == LifecycleDeleted:
		return "", fmt.Errorf("%w: restore run %s with RestoreRun to write to it", ErrRunDeleted, runID)
	}
	return s.resolveURI(uri)
}

// cleanArtifactPath checks a relative, slash-separated artifact path and
// returns it cleaned ("." for the root, allowed only when allowRoot). As
// MLflow's validate_path_is_safe, it refuses absolute paths and any ".."
// part, even one that would stay inside, and backslashes, which mean a
// separator on Windows.
func cleanArtifactPath(p string, allowRoot bool) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: artifact path %q %s; give a relative path such as \"plots/accuracy.png\"", ErrInvalid, p, why)
	}
	switch {
	case p == "" && allowRoot:
		return ".", nil
	case p == "":
		return bad("is empty")
	case strings.ContainsAny(p, "\\\x00"):
		return bad("holds a backslash or NUL")
	case path.IsAbs(p) || filepath.IsAbs(p):
		return bad("is absolute")
	}
	for part := range strings.SplitSeq(p, "/") {
		if part == ".." {
			return bad("holds \"..\"")
		}
	}
	clean := path.Clean(p)
	if clean == "." && allowRoot {
		return ".", nil
	}
	if !filepath.IsLocal(filepath.FromSlash(clean)) || clean == "." {
		return bad("does not name a file inside the run's artifacts")
	}
	if strings.HasPrefix(path.Base(clean), tmpPrefix) {
		return bad("starts with " + tmpPrefix + ", which the store keeps for files being written")
	}
	return clean, nil
}

// CleanArtifactPath checks a relative, slash-separated artifact path as
// the store does (no "..", not absolute, no backslash or NUL, not a name
// the store keeps for files being written) and returns it cleaned; "" and
// "." are the root ("."), allowed only when allowRoot. Errors are
// [ErrInvalid].
func CleanArtifactPath(p string, allowRoot bool) (string, error) {
	return cleanArtifactPath(p, allowRoot)
}

// WriteArtifactFile writes r to rel (cleaned by [CleanArtifactPath]) inside
// root the way LogArtifact does: into a temporary file that listings skip,
// synced, then renamed into place, so readers see the old file or the
// whole new one. Parent directories are created.
func WriteArtifactFile(ctx context.Context, root *os.Root, rel string, r io.Reader) error {
	return writeAtomic(ctx, root, rel, r)
}

// IsTempArtifactName reports whether name (a base name) is one of the
// temporary files WriteArtifactFile and LogArtifact write, which listings
// leave out.
func IsTempArtifactName(name string) bool { return strings.HasPrefix(name, tmpPrefix) }
