package ha

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
)

// streamLayer is raft's network layer: TCP, or mutual TLS when both TLS
// configs are set. It advertises the configured address (what peers dial,
// and what raft's configuration holds) and tracks every connection, so
// that Close leaves no connection, and no goroutine reading one, behind.
type streamLayer struct {
	net.Listener
	advertise net.Addr
	client    *tls.Config // nil: plain TCP

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

var _ raft.StreamLayer = (*streamLayer)(nil)

// listen binds addr. A port in use is reported as a second coordinator
// configured as the same node.
func listen(addr, nodeID string, server, client *tls.Config) (*streamLayer, error) {
	var (
		ln  net.Listener
		err error
	)
	if server != nil {
		ln, err = tls.Listen("tcp", addr, server)
	} else {
		ln, err = net.Listen("tcp", addr)
	}
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("raft address %s in use: another coordinator already runs as node %s, or stop what holds the port: %w", addr, nodeID, err)
	}
	if err != nil {
		return nil, fmt.Errorf("listening for raft on %s: %w", addr, err)
	}
	return newStreamLayer(ln, addr, client), nil
}

// streamLayer returns raft's network layer on addr: over the inherited
// RaftListener when there is one, else on a socket it binds.
func (c Config) streamLayer(addr string) (*streamLayer, error) {
	if c.RaftListener == nil {
		return listen(addr, c.ID, c.ServerTLS, c.ClientTLS)
	}
	ln := c.RaftListener
	if c.ServerTLS != nil {
		ln = tls.NewListener(ln, c.ServerTLS)
	}
	return newStreamLayer(ln, addr, c.ClientTLS), nil
}

// newStreamLayer is raft's network layer over ln, which is already bound
// (and wrapped in TLS where client is set), advertised as addr.
func newStreamLayer(ln net.Listener, addr string, client *tls.Config) *streamLayer {
	return &streamLayer{Listener: ln, advertise: advertiseAddr(addr), client: client, conns: map[net.Conn]struct{}{}}
}

// advertiseAddr is the configured address as a net.Addr.
type advertiseAddr string

func (a advertiseAddr) Network() string { return "tcp" }
func (a advertiseAddr) String() string  { return string(a) }

// Addr returns the configured address.
func (s *streamLayer) Addr() net.Addr { return s.advertise }

// Accept returns the next incoming connection. For TLS, the handshake
// happens on the connection's first read, in raft's goroutine for it.
func (s *streamLayer) Accept() (net.Conn, error) {
	c, err := s.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

// Dial connects to a peer, completing the TLS handshake within timeout.
func (s *streamLayer) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	var (
		c   net.Conn
		err error
	)
	if s.client != nil {
		conf := s.client
		if conf.ServerName == "" {
			host, _, err := net.SplitHostPort(string(address))
			if err != nil {
				return nil, fmt.Errorf("dialling raft peer %s: %w", address, err)
			}
			conf = conf.Clone()
			conf.ServerName = host
		}
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		c, err = (&tls.Dialer{NetDialer: d, Config: conf}).DialContext(ctx, "tcp", string(address))
	} else {
		c, err = d.Dial("tcp", string(address))
	}
	if err != nil {
		return nil, err
	}
	return s.track(c)
}

func (s *streamLayer) track(c net.Conn) (net.Conn, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		c.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: c, s: s}
	s.conns[tc] = struct{}{}
	return tc, nil
}

// Close closes the listener and every connection.
func (s *streamLayer) Close() error {
	err := s.Listener.Close()
	s.mu.Lock()
	s.closed = true
	conns := s.conns
	s.conns = map[net.Conn]struct{}{}
	s.mu.Unlock()
	for c := range conns {
		c.(*trackedConn).Conn.Close()
	}
	return err
}

type trackedConn struct {
	net.Conn
	s    *streamLayer
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.s.mu.Unlock()
	})
	return c.Conn.Close()
}
