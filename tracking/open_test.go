package tracking_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cohortfl/cohort/tracking"
	_ "github.com/cohortfl/cohort/tracking/mlflowclient"
)

func TestOpen(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		uri     string
		want    string // %T of the backend, "" for an error
		errWant string
	}{
		{"sqlite:" + filepath.Join(dir, "a", "cohort.db"), "*tracking.SQLiteStore", ""},
		{filepath.Join(dir, "plain.db"), "*tracking.SQLiteStore", ""},
		{"http://127.0.0.1:1", "*mlflowclient.Client", ""},
		{"https://mlflow.example.org", "*mlflowclient.Client", ""},
		{"postgres://db/x", "", `unknown tracking URI scheme "postgres"; use one of http, https, sqlite`},
		{"sqlite:", "", "name the database file"},
	}
	for _, tt := range tests {
		b, closeFn, err := tracking.Open(context.Background(), tt.uri, tracking.OpenOptions{})
		if tt.want == "" {
			if err == nil || !strings.Contains(err.Error(), tt.errWant) {
				t.Errorf("Open(%q) = %v, want an error containing %q", tt.uri, err, tt.errWant)
			}
			continue
		}
		if err != nil {
			t.Errorf("Open(%q) = %v", tt.uri, err)
			continue
		}
		if got := fmt.Sprintf("%T", b); got != tt.want {
			t.Errorf("Open(%q) = %s, want %s", tt.uri, got, tt.want)
		}
		if strings.HasPrefix(tt.uri, "http") {
			// Nothing was logged, so closing has nothing to flush to the
			// server that is not there.
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = closeFn(ctx)
			cancel()
			continue
		}
		if err := closeFn(context.Background()); err != nil {
			t.Errorf("close(%q) = %v", tt.uri, err)
		}
	}
	if _, _, err := tracking.Open(context.Background(), "ftp://x", tracking.OpenOptions{}); !errors.Is(err, tracking.ErrUnknownScheme) {
		t.Errorf("Open(ftp://x) = %v, want ErrUnknownScheme", err)
	}
}
