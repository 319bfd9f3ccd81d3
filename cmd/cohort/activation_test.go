package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// TestSocketActivation starts processes on sockets they inherit, as from
// systemd (LISTEN_FDS, LISTEN_FDNAMES): the test holds each socket open
// throughout, so a process that bound its configured address itself
// would fail with "address in use". A coordinator serves gRPC and raft on
// its grpc and raft sockets, the tracking server HTTP on its http socket,
// and a socket under a name the command does not take is refused, naming
// the fix.
func TestSocketActivation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	t.Parallel() // its own processes, folder and sockets
	bin := buildCohort(t)

	t.Run("coordinator", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		socks := loopbackSockets(t, socketGRPC, socketRaft)
		addr, raftAddr := socks[socketGRPC].Addr().String(), socks[socketRaft].Addr().String()
		project := filepath.Join(dir, "project.yaml")
		os.WriteFile(project, []byte(fmt.Sprintf("name: sa\ncoordinators: [{name: coord, address: %q}]\nsites: [{name: kit}]\nadmins: [{name: alice}]\n", addr)), 0o600)
		kits := provisionKits(t, project, filepath.Join(dir, "kits"), time.Now())
		// A one-voter cluster on the network: raft serves on its socket.
		cfg := filepath.Join(kits, "coordinators", "coord", "coordinator.yaml")
		appendLine(t, cfg, fmt.Sprintf("cluster:\n  id: coord\n  peers:\n    - {id: coord, raft: %q, grpc: %q}", raftAddr, addr))
		coord := startServing(t, socks, "coordinator", dir, bin, "coordinator", "-c", cfg, "--log-level", "info")
		waitFor(t, "the coordinator to listen", 30*time.Second, func() bool { return strings.Contains(coord.output(), "listening") })
		if want := "listening on " + addr; !strings.Contains(coord.output(), want) || !strings.Contains(coord.output(), "inherited=true") {
			t.Errorf("coordinator output, want %q and inherited=true:\n%s", want, coord.output())
		}
		// A node of a cluster serves as a follower at once; it answers
		// admin calls once it leads.
		jobs := jobsClient(t, addr, kitTLS(kits, "admin", "alice", "admin"))
		var err error
		waitFor(t, "ListJobs to answer", 30*time.Second, func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_, err = jobs.ListJobs(ctx, &pb.ListJobsRequest{})
			return status.Code(err) != codes.Unavailable
		})
		if err != nil {
			t.Errorf("ListJobs on the inherited socket: %v", err)
		}
		// Raft answers on its socket: a TLS handshake there meets the
		// coordinator's certificate.
		tc, err := kitTLS(kits, "coordinator", "coord", "coordinator").ClientConfig("")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", raftAddr, tc)
		if err != nil {
			t.Fatalf("TLS to raft on the inherited socket: %v", err)
		}
		defer conn.Close()
		if cn := conn.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "coord" {
			t.Errorf("raft on the inherited socket presents CN %q, want coord", cn)
		}
	})

	t.Run("ui", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		socks := loopbackSockets(t, socketHTTP)
		addr := socks[socketHTTP].Addr().String()
		ui := startServing(t, socks, "ui", dir, bin, "ui", "--db", filepath.Join(dir, "cohort.db"), "--addr", addr)
		waitFor(t, "the tracking server to start", 30*time.Second, func() bool { return strings.Contains(ui.output(), "tracking server on") })
		resp, err := http.Get("http://" + addr + "/api/2.0/mlflow/experiments/get-by-name?experiment_name=Default")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"name":"Default"`) {
			t.Errorf("GET experiments/get-by-name on the inherited socket = %s %s, want 200 with the Default experiment", resp.Status, body)
		}
	})

	t.Run("a socket the command does not take", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		ui := startServing(t, loopbackSockets(t, socketHTTP, socketGRPC), "ui", dir, bin, "ui", "--db", filepath.Join(dir, "cohort.db"))
		select {
		case <-ui.done:
		case <-time.After(30 * time.Second):
			t.Fatal("cohort ui with a grpc socket did not exit")
		}
		want := `cohort ui: inherited sockets ["grpc"]: it takes http; name each socket so (systemd: FileDescriptorName=)`
		if code := ui.cmd.ProcessState.ExitCode(); code != 1 || !strings.Contains(ui.output(), want) {
			t.Errorf("cohort ui with a grpc socket: exit %d, output:\n%s\nwant exit 1 and %q", code, ui.output(), want)
		}
	})
}
