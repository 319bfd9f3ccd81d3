package mlflowserver

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/crypto/bcrypt"
)

// Authenticator checks a request's credentials and returns the user they
// name. It must be safe for concurrent use.
type Authenticator interface {
	Authenticate(r *http.Request) (user string, err error)
}

// ErrUnauthenticated is returned by the authenticators of [LoadAuth] when
// a request carries no credentials or wrong ones.
var ErrUnauthenticated = errors.New("missing or invalid credentials")

// LoadAuth builds the authenticator for mode from usersFile:
//
//   - "basic": HTTP Basic authentication, as MLflow's clients send it with
//     MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD. Each line of
//     the file is user:<bcrypt hash> (htpasswd's form; [SetPassword] and
//     `cohort ui passwd --file FILE USER` write one). The old unsalted
//     user:sha256:<hex> form is refused, naming the line and the command
//     that converts it.
//   - "token": bearer tokens, as MLflow's clients send
//     MLFLOW_TRACKING_TOKEN. Each line is "user token".
//   - "" or "none": no authentication (nil).
//
// Blank lines and lines starting with '#' are skipped; keep the file
// readable only by the server's user.
func LoadAuth(mode, usersFile string) (Authenticator, error) {
	switch mode {
	case "", "none":
		return nil, nil
	case "basic", "token":
	default:
		return nil, fmt.Errorf("loading auth: mode %q is none of basic, token, none", mode)
	}
	if usersFile == "" {
		return nil, fmt.Errorf("loading %s auth: no users file given", mode)
	}
	f, err := os.Open(usersFile)
	if err != nil {
		return nil, fmt.Errorf("loading %s auth: %w", mode, err)
	}
	defer f.Close()
	users := map[string][]byte{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if mode == "token" {
			user, tok, ok := strings.Cut(line, " ")
			tok = strings.TrimSpace(tok)
			if !ok || user == "" || tok == "" {
				return nil, fmt.Errorf("loading token auth: %s:%d: want \"user token\"", usersFile, n)
			}
			sum := sha256.Sum256([]byte(tok))
			users[user] = sum[:]
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok || user == "" {
			return nil, fmt.Errorf("loading basic auth: %s:%d: want user:<bcrypt hash>; write one with `cohort ui passwd --file %s USER`", usersFile, n, usersFile)
		}
		if strings.HasPrefix(hash, "sha256:") {
			return nil, fmt.Errorf("loading basic auth: %s:%d: user %q has an unsalted SHA-256 password, which is no longer accepted; set a bcrypt one with `cohort ui passwd --file %s %s`", usersFile, n, user, usersFile, user)
		}
		if _, err := bcrypt.Cost([]byte(hash)); err != nil {
			return nil, fmt.Errorf("loading basic auth: %s:%d: user %q: the password is not a bcrypt hash (%v); set one with `cohort ui passwd --file %s %s`", usersFile, n, user, err, usersFile, user)
		}
		users[user] = []byte(hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("loading %s auth: %w", mode, err)
	}
	if len(users) == 0 {
		return nil, fmt.Errorf("loading %s auth: %s holds no users", mode, usersFile)
	}
	if mode == "token" {
		return &tokenAuth{tokens: users}, nil
	}
	return &basicAuth{users: users, verified: map[string][sha256.Size]byte{}}, nil
}

// basicAuth checks passwords against bcrypt hashes. bcrypt costs tens of
// milliseconds by design; a password once verified is remembered (as its
// SHA-256, in memory) so that a client logging a batch per request is not
// slowed down.
type basicAuth struct {
	users map[string][]byte // user → bcrypt hash

	mu       sync.Mutex
	verified map[string][sha256.Size]byte // user → SHA-256 of the password bcrypt accepted
}

var _ Authenticator = (*basicAuth)(nil)

// dummyHash is compared against for unknown users, so that they take as
// long as known ones.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("cohort-dummy"), bcrypt.MinCost)

func (a *basicAuth) Authenticate(r *http.Request) (string, error) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", ErrUnauthenticated
	}
	sum := sha256.Sum256([]byte(pass))
	a.mu.Lock()
	seen, hit := a.verified[user]
	a.mu.Unlock()
	if hit && subtle.ConstantTimeCompare(sum[:], seen[:]) == 1 {
		return user, nil
	}
	want, known := a.users[user]
	if !known {
		_ = bcrypt.CompareHashAndPassword(dummyHash, []byte(pass))
		return "", ErrUnauthenticated
	}
	if bcrypt.CompareHashAndPassword(want, []byte(pass)) != nil {
		return "", ErrUnauthenticated
	}
	a.mu.Lock()
	a.verified[user] = sum
	a.mu.Unlock()
	return user, nil
}

// MinPasswordCost is the lowest bcrypt cost [SetPassword] writes.
const MinPasswordCost = 10

// SetPassword writes user's password into the basic-auth users file as a
// bcrypt hash of the given cost (at least [MinPasswordCost]), replacing the
// user's line if there is one and keeping the others; the file is created
// if missing and left with mode 0600.
func SetPassword(usersFile, user, password string, cost int) error {
	if user == "" || strings.ContainsAny(user, ": \t\r\n#") {
		return fmt.Errorf("setting a password: user %q: use a name without ':', spaces or '#'", user)
	}
	if password == "" {
		return errors.New("setting a password: the password is empty")
	}
	cost = max(cost, MinPasswordCost)
	hash, err := bcrypt.GenerateFromPassword([]byte(password), cost)
	if err != nil {
		return fmt.Errorf("setting a password for %s: %w", user, err)
	}
	old, err := os.ReadFile(usersFile)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("setting a password: %w", err)
	}
	var out bytes.Buffer
	replaced := false
	for _, line := range strings.SplitAfter(string(old), "\n") {
		if line == "" {
			continue
		}
		if u, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && u == user && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			if !replaced {
				fmt.Fprintf(&out, "%s:%s\n", user, hash)
			}
			replaced = true
			continue
		}
		out.WriteString(line)
		if !strings.HasSuffix(line, "\n") {
			out.WriteByte('\n')
		}
	}
	if !replaced {
		fmt.Fprintf(&out, "%s:%s\n", user, hash)
	}
	tmp, err := os.CreateTemp(filepath.Dir(usersFile), ".users-*")
	if err != nil {
		return fmt.Errorf("setting a password: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		return fmt.Errorf("setting a password: %w", err)
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("setting a password: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("setting a password: %w", err)
	}
	if err := os.Rename(tmp.Name(), usersFile); err != nil {
		return fmt.Errorf("setting a password: %w", err)
	}
	return nil
}

func (a *basicAuth) challenge() string { return `Basic realm="mlflow"` }

type tokenAuth struct{ tokens map[string][]byte }

var _ Authenticator = (*tokenAuth)(nil)

func (a *tokenAuth) Authenticate(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(h, "Bearer ")
	if !ok || tok == "" {
		return "", ErrUnauthenticated
	}
	sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	found := ""
	for user, want := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], want) == 1 {
			found = user
		}
	}
	if found == "" {
		return "", ErrUnauthenticated
	}
	return found, nil
}

func (a *tokenAuth) challenge() string { return `Bearer realm="mlflow"` }
