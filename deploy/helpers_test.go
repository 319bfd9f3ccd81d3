package deploy

import (
	"crypto/tls"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

type tlsConfig = tls.Config

// bypass builds a client config without the load-time checks, to show the
// server's refusal.
func bypass(t *testing.T, f TLSFiles) (*tls.Config, error) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS13, Certificates: []tls.Certificate{pair}, InsecureSkipVerify: true}, nil
}

type logBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) add(s string) { l.Write([]byte(s + "\n")) }

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *logBuf) logger() *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }
