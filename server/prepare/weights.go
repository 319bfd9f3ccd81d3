package prepare

import (
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"

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
// that a reader never sees half of it.
func (d WeightsDir) Create() (server.WeightsUpload, error) {
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(d.Dir, ".upload-*")
	if err != nil {
		return nil, err
	}
	return &dirUpload{d: d, f: f}, nil
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
		return nil // Abort removes the temporary file
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
	_ = u.f.Close() // closed already after a Commit
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
