package prepare

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/cohortfl/cohort/model"
	"github.com/cohortfl/cohort/server"
)

// WeightsDir keeps uploaded initial weights as DIR/HEX.safetensors, HEX
// being the SHA-256 of the file. It implements server.WeightsStore and
// CoordinatorModels' WeightsStore.
type WeightsDir struct {
	// Dir is the folder, created on the first upload.
	Dir string
}

var (
	_ server.WeightsStore = WeightsDir{}
	_ WeightsStore        = WeightsDir{}
)

func (d WeightsDir) path(digest string) (string, error) {
	if b, err := hex.DecodeString(digest); err != nil || len(b) != 32 {
		return "", fmt.Errorf("%q is not a SHA-256 in hex (64 hex digits)", digest)
	}
	return filepath.Join(d.Dir, digest+".safetensors"), nil
}

// Create implements server.WeightsStore: an upload is written to a
// temporary file in Dir and renamed to its digest's name by Commit, so
// that a reader never sees half of it. The temporary files of uploads a
// crash cut short, untouched for staleUpload, are removed first.
func (d WeightsDir) Create() (server.WeightsUpload, error) {
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return nil, err
	}
	d.removeStale(time.Now().Add(-staleUpload))
	f, err := os.CreateTemp(d.Dir, uploadPattern)
	if err != nil {
		return nil, err
	}
	return &dirUpload{d: d, f: f}, nil
}

// uploadPattern names the temporary files of uploads in progress.
const uploadPattern = ".upload-*"

// staleUpload is how long an upload's temporary file may go unwritten
// before it is taken for one a crash left behind: an upload writes every
// chunk as it arrives.
const staleUpload = 24 * time.Hour

// removeStale removes the temporary upload files last written before
// before; what it cannot remove stays (the next upload tries again).
func (d WeightsDir) removeStale(before time.Time) {
	paths, _ := filepath.Glob(filepath.Join(d.Dir, uploadPattern)) // the pattern is valid
	for _, p := range paths {
		if fi, err := os.Stat(p); err == nil && fi.ModTime().Before(before) {
			_ = os.Remove(p)
		}
	}
}

// dirUpload is an upload to a WeightsDir.
type dirUpload struct {
	d    WeightsDir
	f    *os.File
	done bool // committed or aborted
}

func (u *dirUpload) Write(p []byte) (int, error) { return u.f.Write(p) }

// Commit keeps the upload under digest; weights already kept under it
// stay as they are (content-addressed: the same bytes).
func (u *dirUpload) Commit(digest string) error {
	p, err := u.d.path(digest)
	if err != nil {
		return err
	}
	if err := u.f.Close(); err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		u.done = true
		_ = os.Remove(u.f.Name()) // the same bytes are kept already
		return nil
	}
	if err := os.Rename(u.f.Name(), p); err != nil {
		return err
	}
	u.done = true
	return nil
}

// Abort removes the temporary file, unless Commit renamed it.
func (u *dirUpload) Abort() {
	if u.done {
		return
	}
	u.done = true
	_ = u.f.Close() // closed already by a Commit that failed after closing
	_ = os.Remove(u.f.Name())
}

// Has reports whether the weights with digest are stored.
func (d WeightsDir) Has(digest string) bool {
	p, err := d.path(digest)
	if err != nil {
		return false
	}
	_, err = os.Stat(p)
	return err == nil
}

// Read returns the stored weights with digest, checked finite.
func (d WeightsDir) Read(digest string) (*model.Weights, error) {
	p, err := d.path(digest)
	if err != nil {
		return nil, err
	}
	return readInitWeights(p)
}
