package deploy

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestSiteTestdata loads testdata/site*.yaml: good files load, bad ones fail
// with every "# want: " line of their header.
func TestSiteTestdata(t *testing.T) {
	files, _ := filepath.Glob("testdata/site*.yaml")
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			_, err = parseSiteConfig(filepath.Base(f), data)
			if strings.HasSuffix(f, ".good.yaml") {
				if err != nil {
					t.Fatalf("parseSiteConfig(%s) = %v, want nil", f, err)
				}
				return
			}
			sc := bufio.NewScanner(bytes.NewReader(data))
			for sc.Scan() {
				w, ok := strings.CutPrefix(sc.Text(), "# want: ")
				if !ok {
					break
				}
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("parseSiteConfig(%s) = %v, want %q", f, err, w)
				}
			}
		})
	}
}
