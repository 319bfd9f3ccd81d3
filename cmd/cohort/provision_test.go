package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestProvisionCmd(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "project.yaml")
	src := "name: fl-study\ncoordinators:\n  - {name: coord-1, address: \"127.0.0.1:7443\"}\nsites:\n  - {name: kit}\nadmins:\n  - {name: alice}\n"
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	if err := provisionCmd(context.Background(), []string{path}, &out, &errb); err != nil {
		t.Fatalf("provisionCmd = %v\n%s", err, errb.String())
	}
	for _, w := range []string{"CA          created", "site kit", "cohort site -c site.yaml", "3 kits written, 0 kept"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("provisionCmd output = %q, want %q", out.String(), w)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "fl-study-kits", "sites", "kit", "site.yaml")); err != nil {
		t.Errorf("site kit not written: %v", err)
	}
	out.Reset()
	if err := provisionCmd(context.Background(), []string{path}, &out, &errb); err != nil {
		t.Fatalf("second provisionCmd = %v", err)
	}
	if !strings.Contains(out.String(), "re-used") || !strings.Contains(out.String(), "0 kits written, 3 kept") {
		t.Errorf("second provisionCmd output = %q, want the CA re-used and kits kept", out.String())
	}
	if err := provisionCmd(context.Background(), nil, &out, &errb); err == nil {
		t.Error("provisionCmd with no file = nil error")
	}
}
