package prepare

import (
	"encoding/hex"
	"errors"
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

// Put implements server.WeightsStore: it writes b under its digest, through
// a temporary file so that a reader never sees half of it.
func (d WeightsDir) Put(digest string, b []byte) error {
	p, err := d.path(digest)
	if err != nil {
		return err
	}
	if _, err := os.Stat(p); err == nil {
		return nil // content-addressed: already here
	}
	if err := os.MkdirAll(d.Dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(d.Dir, ".upload-*")
	if err != nil {
		return err
	}
	_, werr := f.Write(b)
	cerr := f.Close()
	if err := errors.Join(werr, cerr); err != nil {
		os.Remove(f.Name())
		return err
	}
	if err := os.Rename(f.Name(), p); err != nil {
		os.Remove(f.Name())
		return err
	}
	return nil
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
