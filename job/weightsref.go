package job

import (
	"bytes"
	"errors"
	"fmt"

	"go.yaml.in/yaml/v3"
)

// SetInitWeights returns the job file src with model.init.weights set to
// ref (what `cohort submit` does after uploading the file it named: ref is
// then "sha256:HEX"). The rest of the file is kept, comments included, as
// the YAML encoder writes it back. src must parse ([Parse]) and name
// model.init.weights.
func SetInitWeights(src []byte, ref string) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrSyntax, err)
	}
	n := &doc
	for _, key := range []string{"", "model", "init", "weights"} {
		if key == "" {
			if n.Kind != yaml.DocumentNode || len(n.Content) != 1 {
				return nil, errors.New("model.init.weights: the job file is not one YAML document")
			}
			n = n.Content[0]
			continue
		}
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		next := (*yaml.Node)(nil)
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				if n.Content[i].Value == key {
					next = n.Content[i+1]
				}
			}
		}
		if next == nil {
			return nil, fmt.Errorf("model.init.weights: the job file has no %s key there", key)
		}
		n = next
	}
	if n.Kind != yaml.ScalarNode {
		return nil, errors.New("model.init.weights: not a plain value; write weights: FILE.safetensors")
	}
	n.Value, n.Tag, n.Style = ref, "!!str", yaml.DoubleQuotedStyle
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("model.init.weights: writing the job back: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("model.init.weights: writing the job back: %w", err)
	}
	return b.Bytes(), nil
}
