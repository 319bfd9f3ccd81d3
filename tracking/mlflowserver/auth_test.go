package mlflowserver

import (
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

func TestLoadAuthRefusesSHA256(t *testing.T) {
	p := filepath.Join(t.TempDir(), "users")
	// sha256("secret"), the form earlier versions accepted.
	if err := os.WriteFile(p, []byte("# users\ncarol:$2a$10$abcdefghijklmnopqrstuuJzPBLV8xgNGeGO4m5mgmpF0JuktX5y.\nalice:sha256:2bb80d537b1da3e38bd30361aa855686bde0eacd7162fef6a25fe97bf527a25b\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := LoadAuth("basic", p)
	want := p + `:3: user "alice" has an unsalted SHA-256 password, which is no longer accepted; set a bcrypt one with ` + "`cohort ui passwd --file " + p + " alice`"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("LoadAuth(sha256 file) = %v, want it to contain %q", err, want)
	}
}

func TestSetPasswordRoundTrip(t *testing.T) {
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte("# admins\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	steps := []struct{ user, pass string }{{"alice", "one"}, {"bob", "two"}, {"alice", "three"}}
	for _, s := range steps {
		if err := SetPassword(p, s.user, s.pass, 0); err != nil {
			t.Fatalf("SetPassword(%s): %v", s.user, err)
		}
	}
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 3 || lines[0] != "# admins" || !strings.HasPrefix(lines[1], "alice:$2") || !strings.HasPrefix(lines[2], "bob:$2") {
		t.Fatalf("users file = %q, want the comment, alice, bob", lines)
	}
	if cost, err := bcrypt.Cost([]byte(strings.TrimPrefix(lines[1], "alice:"))); err != nil || cost < MinPasswordCost {
		t.Errorf("alice's hash cost = %d, %v; want ≥ %d", cost, err, MinPasswordCost)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("users file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	a, err := LoadAuth("basic", p)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		user, pass string
		ok         bool
	}{
		{"alice", "three", true}, {"alice", "three", true}, // the second from the cache
		{"alice", "one", false}, {"bob", "two", true}, {"bob", "three", false}, {"eve", "two", false},
	}
	for _, tt := range tests {
		r := httptest.NewRequest("GET", "/", nil)
		r.SetBasicAuth(tt.user, tt.pass)
		got, err := a.Authenticate(r)
		if (err == nil) != tt.ok || (tt.ok && got != tt.user) {
			t.Errorf("Authenticate(%s, %s) = %q, %v; want ok %v", tt.user, tt.pass, got, err, tt.ok)
		}
	}
	for _, bad := range []string{"", "a:b", "a b"} {
		if err := SetPassword(p, bad, "x", 0); err == nil {
			t.Errorf("SetPassword(user %q) succeeded", bad)
		}
	}
}
