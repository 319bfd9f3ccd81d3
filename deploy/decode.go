package deploy

import (
	"fmt"
	"io"
	"os"

	"github.com/cohortfl/cohort/internal/strictyaml"
	"go.yaml.in/yaml/v3"
)

// readFile reads a project or config file, bounded by [MaxFileSize].
func readFile(what, path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("loading %s: %w", what, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("loading %s %s: %w", what, path, err)
	}
	return data, nil
}

// decoder walks a YAML node tree with the strict decoder, recording each
// key's position and collecting every problem instead of stopping at the
// first. It is strict: unknown and duplicate keys, merge keys and wrong types
// are problems.
type decoder struct {
	*strictyaml.Decoder
}

func newDecoder(file string) *decoder {
	return &decoder{strictyaml.NewDecoder(strictyaml.Options{
		File:         file,
		Invalid:      ErrInvalid,
		Syntax:       ErrSyntax,
		Empty:        ErrEmpty,
		TooLarge:     ErrTooLarge,
		MaxSize:      MaxFileSize,
		Synonym:      synonym,
		DurationHint: `"90s", "10m" or "8760h"`,
	})}
}

// field decodes the value of one known key.
type field struct {
	key string
	dec func(path string, v *yaml.Node)
}

// mapping decodes a mapping node against its known fields
// ([strictyaml.Decoder.Mapping]).
func (d *decoder) mapping(path string, n *yaml.Node, example string, fields []field) {
	fs := make([]strictyaml.Field, len(fields))
	for i, f := range fields {
		fs[i] = strictyaml.Field{Key: f.key, Dec: f.dec}
	}
	d.Mapping(path, n, example, fs)
}
