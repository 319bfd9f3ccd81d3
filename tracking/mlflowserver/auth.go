package mlflowserver

import (
	"bufio"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
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
//     the file is user:sha256:<hex SHA-256 of the password> (make one with
//     `printf %s "$PASSWORD" | sha256sum`); bcrypt would need a module
//     Cohort does not depend on, so it is refused with that advice.
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
		user, rest, ok := strings.Cut(line, ":")
		scheme, hash, ok2 := strings.Cut(rest, ":")
		if !ok || !ok2 || user == "" {
			return nil, fmt.Errorf("loading basic auth: %s:%d: want user:sha256:<hex>", usersFile, n)
		}
		if scheme != "sha256" {
			return nil, fmt.Errorf("loading basic auth: %s:%d: hash scheme %q is not supported; use sha256 (printf %%s \"$PASSWORD\" | sha256sum)", usersFile, n, scheme)
		}
		sum, err := hex.DecodeString(hash)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("loading basic auth: %s:%d: want 64 hex digits of SHA-256", usersFile, n)
		}
		users[user] = sum
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
	return &basicAuth{users: users}, nil
}

type basicAuth struct{ users map[string][]byte }

var _ Authenticator = (*basicAuth)(nil)

func (a *basicAuth) Authenticate(r *http.Request) (string, error) {
	user, pass, ok := r.BasicAuth()
	if !ok {
		return "", ErrUnauthenticated
	}
	want, known := a.users[user]
	sum := sha256.Sum256([]byte(pass))
	if !known {
		want = make([]byte, sha256.Size)
	}
	if subtle.ConstantTimeCompare(sum[:], want) != 1 || !known {
		return "", ErrUnauthenticated
	}
	return user, nil
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
