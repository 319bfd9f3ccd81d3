package deploy

import (
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that the project and config parsers never panic and that
// every rejection says why.
func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/*.yaml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte(projectYAML))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, parse := range []func([]byte) error{
			func(b []byte) error { _, err := parseProject("f.yaml", b); return err },
			func(b []byte) error { _, err := parseSiteConfig("f.yaml", b); return err },
			func(b []byte) error { _, err := parseCoordinatorConfig("f.yaml", b); return err },
			func(b []byte) error { _, err := parseAdminConfig("f.yaml", b); return err },
		} {
			if err := parse(data); err != nil && err.Error() == "" {
				t.Error("empty error message")
			}
		}
	})
}
