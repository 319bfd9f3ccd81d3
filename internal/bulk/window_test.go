package bulk

import (
	"bytes"
	"encoding/binary"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// tapListener records every byte its connections read and write.
type tapListener struct {
	net.Listener
	mu        sync.Mutex
	read, out bytes.Buffer
}

func (l *tapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tapConn{Conn: c, l: l}, nil
}

type tapConn struct {
	net.Conn
	l *tapListener
}

func (c *tapConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.l.keep(&c.l.read, p[:n])
	return n, err
}

func (c *tapConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.l.keep(&c.l.out, p[:n])
	return n, err
}

// keep appends p to buf, one of l's.
func (l *tapListener) keep(buf *bytes.Buffer, p []byte) {
	l.mu.Lock()
	defer l.mu.Unlock()
	buf.Write(p)
}

// frameTypes counts the HTTP/2 frames of b by type; a last frame that the
// connection's close cut short is not counted.
func frameTypes(b []byte) map[byte]int {
	n := map[byte]int{}
	for len(b) >= 9 {
		size := int(b[0])<<16 | int(binary.BigEndian.Uint16(b[1:3]))
		if len(b) < 9+size {
			break
		}
		n[b[3]]++
		b = b[9+size:]
	}
	return n
}

const (
	frameData         = 0x0
	framePing         = 0x6
	frameWindowUpdate = 0x8
)

// TestNoPingsBesideMessages sends small messages one at a time over a
// stream, each after the answer to the one before (as a site's session
// goes): with gRPC's defaults each side pings (its bandwidth-delay
// estimate) and sends window updates beside them; with the package's
// options neither side does, past the window updates that announce
// Window when the connection opens.
func TestNoPingsBesideMessages(t *testing.T) {
	const messages = 10
	for _, tt := range []struct {
		name     string
		srv      []grpc.ServerOption
		dial     []grpc.DialOption
		wantPing bool
	}{
		{name: "gRPC's defaults", wantPing: true},
		{name: "ServerOptions and DialOptions", srv: ServerOptions(), dial: DialOptions()},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tap := &tapListener{Listener: loopback(t)}
			gs, cc, stream := echoOver(t, tap, tt.srv, tt.dial)
			var got pb.ModelChunk
			for i := range messages {
				if err := stream.SendMsg(&pb.ModelChunk{Offset: int64(i), Data: payload(100)}); err != nil {
					t.Fatal(err)
				}
				if err := stream.RecvMsg(&got); err != nil {
					t.Fatal(err)
				}
			}
			cc.Close()
			gs.Stop()

			tap.mu.Lock()
			defer tap.mu.Unlock()
			const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
			in := tap.read.Bytes()
			if !bytes.HasPrefix(in, []byte(preface)) {
				t.Fatalf("the client's bytes do not start with HTTP/2's preface")
			}
			fromClient, fromServer := frameTypes(in[len(preface):]), frameTypes(tap.out.Bytes())
			// Every message was parsed: the counts below cover the exchange.
			if fromClient[frameData] < messages || fromServer[frameData] < messages {
				t.Fatalf("DATA frames: %d from the client, %d from the server; want at least %d each", fromClient[frameData], fromServer[frameData], messages)
			}
			pings := fromClient[framePing] + fromServer[framePing]
			if tt.wantPing && pings < messages {
				t.Errorf("%d PING frames for %d messages each way, want at least %d: the control case shows nothing", pings, messages, messages)
			}
			if !tt.wantPing && pings != 0 {
				t.Errorf("%d PING frames, want none", pings)
			}
			// One each way at most: the connection's window announced.
			if updates := fromClient[frameWindowUpdate] + fromServer[frameWindowUpdate]; !tt.wantPing && updates > 2 {
				t.Errorf("%d WINDOW_UPDATE frames, want at most 2 (the connections' windows announced)", updates)
			}
			t.Logf("frames from the client %v, from the server %v", fromClient, fromServer)
		})
	}
}
