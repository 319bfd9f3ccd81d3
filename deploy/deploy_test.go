package deploy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
)

const projectYAML = `name: fl-study
coordinators:
  - {name: coord-1, address: "127.0.0.1:7443"}
sites:
  - {name: kit, gpus: [0]}
  - {name: unibo}
admins:
  - {name: alice}
`

func provisionT(t *testing.T, dir, yaml string, now time.Time) *Result {
	t.Helper()
	path := filepath.Join(dir, "project.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := LoadProject(path)
	if err != nil {
		t.Fatalf("LoadProject = %v", err)
	}
	res, err := Provision(p, filepath.Join(dir, "kits"), now)
	if err != nil {
		t.Fatalf("Provision = %v", err)
	}
	return res
}

func TestProvisionTwiceKeepsKits(t *testing.T) {
	dir := t.TempDir()
	r1 := provisionT(t, dir, projectYAML, time.Now())
	if !r1.CACreated || len(r1.Kits) != 4 {
		t.Fatalf("first Provision = %+v, want a new CA and 4 kits", r1)
	}
	key1, _ := os.ReadFile(filepath.Join(dir, "kits/sites/kit/site.key"))
	r2 := provisionT(t, dir, projectYAML+"  - {name: bob}\n", time.Now())
	if r2.CACreated {
		t.Error("second Provision made a new CA, want it re-used")
	}
	for _, k := range r2.Kits {
		if k.Written != (k.Name == "bob") {
			t.Errorf("kit %s Written = %v", k.Name, k.Written)
		}
	}
	key2, _ := os.ReadFile(filepath.Join(dir, "kits/sites/kit/site.key"))
	if string(key1) != string(key2) {
		t.Error("site key was re-written")
	}
	if _, err := LoadSiteConfig(filepath.Join(dir, "kits/sites/kit/site.yaml")); err != nil {
		t.Errorf("LoadSiteConfig = %v", err)
	}
	if _, err := LoadSiteConfig(filepath.Join(dir, "kits/sites/unibo/site.yaml")); err != nil {
		t.Errorf("LoadSiteConfig = %v", err)
	}
	if _, err := LoadCoordinatorConfig(filepath.Join(dir, "kits/coordinators/coord-1/coordinator.yaml")); err != nil {
		t.Errorf("LoadCoordinatorConfig = %v", err)
	}
	for _, a := range []string{"alice", "bob"} {
		if _, err := LoadAdminConfig(filepath.Join(dir, "kits/admins", a, "admin.yaml")); err != nil {
			t.Errorf("LoadAdminConfig = %v", err)
		}
	}
	if fi, _ := os.Stat(filepath.Join(dir, "kits/ca/ca.key")); fi.Mode().Perm() != 0o600 {
		t.Errorf("ca.key mode = %v, want 0600", fi.Mode())
	}
}

func TestBadConfigs(t *testing.T) {
	for _, tc := range []struct{ name, yaml, want string }{
		{"site-unknown", "name: kit\ncoordinators: [\"127.0.0.1:1\"]\ngpu: [0]\n", `x.yaml:3:1: unknown key "gpu" at the top level (did you mean "gpus"?)`},
		{"site-plaintext", "name: kit\ncoordinators: [\"coord.example.org:7443\"]\n", "tls is required"},
		{"site-gpus", "name: kit\ncoordinators: [\"127.0.0.1:1\"]\ngpus: [0, 0, -1]\n", "listed twice"},
		{"site-level", "name: kit\ncoordinators: [\"127.0.0.1:1\"]\nlog: {level: inf}\n", `did you mean "info"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseSiteConfig("x.yaml", []byte(tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseSiteConfig = %v, want %q", err, tc.want)
			}
		})
	}
	_, err := parseProject("p.yaml", []byte("name: x\ncoordinators: [{name: a, address: \"h:1\"}]\nsites: [{name: a}, {name: B_c}]\n"))
	for _, w := range []string{"already the name of coordinators.0", `such as "b-c"`} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("parseProject = %v, want %q", err, w)
		}
	}
	_, err = parseCoordinatorConfig("c.yaml", []byte("name: c\nlisten: \"0.0.0.0:7443\"\nsite_wait: 10\n"))
	for _, w := range []string{"c.yaml:2:", "tls is required", "c.yaml:3:"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("parseCoordinatorConfig = %v, want %q", err, w)
		}
	}
}

// serve starts a grpc health server with the coordinator kit's TLS.
func serve(t *testing.T, files TLSFiles) (string, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	cfg, err := files.ServerConfig(WithLogger(lb.logger()))
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(cfg)), grpc.UnaryInterceptor(
		func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			p, _ := peer.FromContext(ctx)
			ti := p.AuthInfo.(credentials.TLSInfo)
			c := ti.State.PeerCertificates[0]
			lb.add("peer " + c.Subject.CommonName + " " + Role(c))
			return h(ctx, req)
		}))
	healthpb.RegisterHealthServer(s, health.NewServer())
	go s.Serve(lis)
	t.Cleanup(s.Stop)
	return lis.Addr().String(), lb
}

func check(t *testing.T, addr string, cfgErr error, cfg *tlsConfig) error {
	t.Helper()
	if cfgErr != nil {
		t.Fatal(cfgErr)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	return err
}

func kitFiles(dir, role, name string) TLSFiles {
	d := filepath.Join(dir, "kits", role+"s", name)
	return TLSFiles{Cert: filepath.Join(d, role+".crt"), Key: filepath.Join(d, role+".key"), CA: filepath.Join(d, "ca.crt")}
}

func TestMTLS(t *testing.T) {
	dir, other := t.TempDir(), t.TempDir()
	provisionT(t, dir, projectYAML, time.Now())
	provisionT(t, other, projectYAML, time.Now())
	addr, lb := serve(t, kitFiles(dir, "coordinator", "coord-1"))
	host := "127.0.0.1"

	cfg, err := kitFiles(dir, "site", "kit").ClientConfig(host)
	if err := check(t, addr, err, cfg); err != nil {
		t.Fatalf("site of the same CA: %v", err)
	}
	if !strings.Contains(lb.String(), "peer kit cohort-site") {
		t.Errorf("server saw %q, want peer kit cohort-site", lb.String())
	}

	cfg, err = kitFiles(other, "site", "kit").ClientConfig(host)
	if err := check(t, addr, err, cfg); err == nil || !strings.Contains(err.Error(), "not signed by the CA in") || !strings.Contains(err.Error(), "right startup kit") {
		t.Errorf("site of another CA: %v, want the readable client error", err)
	}
	// Trusting this CA but holding another CA's certificate: the server refuses.
	f := kitFiles(other, "site", "kit")
	f.CA = kitFiles(dir, "site", "kit").CA
	if _, err := f.ClientConfig(host); err == nil || !strings.Contains(err.Error(), "is not signed by the CA") {
		t.Errorf("ClientConfig with a cert of another CA = %v", err)
	}
	cfg, err = f.ClientConfig(host, WithClock(time.Now)) // still refused at load
	if err == nil {
		t.Fatal("want load error")
	}
	cfg, err = bypass(t, f)
	if err := check(t, addr, err, cfg); err == nil {
		t.Error("server accepted a certificate of another CA")
	}
	if !strings.Contains(lb.String(), "site certificate from another CA") {
		t.Errorf("server log %q, want site certificate from another CA", lb.String())
	}

	// Expired: a site issued two years ago with the same CA.
	provisionT(t, dir, projectYAML+"  - {name: old}\n", time.Now())
	os.RemoveAll(filepath.Join(dir, "kits/sites/unibo"))
	p, _ := parseProject("p", []byte(projectYAML))
	if _, err := Provision(p, filepath.Join(dir, "kits"), time.Now().Add(-2*365*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	old := kitFiles(dir, "site", "unibo")
	if _, err := old.ClientConfig(host); err == nil || !strings.Contains(err.Error(), "re-run cohort provision") {
		t.Errorf("ClientConfig of an expired cert = %v", err)
	}
	cfg, err = bypass(t, old)
	if err := check(t, addr, err, cfg); err == nil {
		t.Error("server accepted an expired certificate")
	}
	if !strings.Contains(lb.String(), "expired") {
		t.Errorf("server log %q, want expired", lb.String())
	}
}

// TestClusterConfig: a project of three coordinators provisions kits
// whose cluster: sections list the same peers (raft ports defaulting to
// the next port), and bad cluster: sections are refused with the fix.
func TestClusterConfig(t *testing.T) {
	dir := t.TempDir()
	provisionT(t, dir, `name: ha
coordinators:
  - {name: coord-1, address: "127.0.0.1:7443"}
  - {name: coord-2, address: "127.0.0.1:7453", raft: "127.0.0.2:9000"}
  - {name: coord-3, address: "127.0.0.1:7463"}
sites: [{name: kit}]
admins: [{name: alice}]
`, time.Now())
	want := []ClusterPeer{
		{ID: "coord-1", Raft: "127.0.0.1:7444", GRPC: "127.0.0.1:7443"},
		{ID: "coord-2", Raft: "127.0.0.2:9000", GRPC: "127.0.0.1:7453"},
		{ID: "coord-3", Raft: "127.0.0.1:7464", GRPC: "127.0.0.1:7463"},
	}
	for _, name := range []string{"coord-1", "coord-2", "coord-3"} {
		c, err := LoadCoordinatorConfig(filepath.Join(dir, "kits/coordinators", name, "coordinator.yaml"))
		if err != nil {
			t.Fatalf("LoadCoordinatorConfig(%s) = %v", name, err)
		}
		if c.Cluster == nil || c.Cluster.ID != name || !slices.Equal(c.Cluster.Peers, want) {
			t.Errorf("%s: cluster = %+v, want id %s and peers %v", name, c.Cluster, name, want)
		}
	}
	site, err := LoadSiteConfig(filepath.Join(dir, "kits/sites/kit/site.yaml"))
	if err != nil || len(site.Coordinators) != 3 {
		t.Errorf("site config lists %v (%v), want the three coordinators", site.Coordinators, err)
	}

	base := "name: coord-1\nlisten: \"127.0.0.1:7443\"\n"
	for _, tc := range []struct{ name, yaml, want string }{
		{"no peers", "cluster: {id: coord-1}\n", "list every coordinator of the cluster"},
		{"self missing", "cluster: {peers: [{id: coord-2, raft: \"127.0.0.1:2\", grpc: \"127.0.0.1:3\"}]}\n", `"coord-1" is not among the peers`},
		{"id twice", "cluster: {peers: [{id: coord-1, raft: \"127.0.0.1:2\", grpc: \"127.0.0.1:3\"}, {id: coord-1, raft: \"127.0.0.1:4\", grpc: \"127.0.0.1:5\"}]}\n", `node id "coord-1" is listed twice`},
		{"raft twice", "cluster: {peers: [{id: coord-1, raft: \"127.0.0.1:2\", grpc: \"127.0.0.1:3\"}, {id: coord-2, raft: \"127.0.0.1:2\", grpc: \"127.0.0.1:5\"}]}\n", "listed twice; every node needs its own raft address"},
		{"no raft", "cluster: {peers: [{id: coord-1, grpc: \"127.0.0.1:3\"}]}\n", "set the node's raft host:port"},
		{"plaintext", "cluster: {peers: [{id: coord-1, raft: \"10.0.0.1:2\", grpc: \"127.0.0.1:3\"}]}\n", "tls is required"},
		{"typo", "cluster: {peers: [{id: coord-1, rafts: \"127.0.0.1:2\", grpc: \"127.0.0.1:3\"}]}\n", `unknown key "rafts"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := parseCoordinatorConfig("c.yaml", []byte(base+tc.yaml))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("parseCoordinatorConfig = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestPeerConfigs: the coordinators' Raft transport takes a coordinator
// certificate of the kit's CA and refuses a site's, saying why.
func TestPeerConfigs(t *testing.T) {
	dir := t.TempDir()
	provisionT(t, dir, `name: ha
coordinators:
  - {name: coord-1, address: "127.0.0.1:7443"}
  - {name: coord-2, address: "127.0.0.1:7453"}
sites: [{name: kit}]
`, time.Now())
	srv, _, err := kitFiles(dir, "coordinator", "coord-1").PeerConfigs()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	serverErr := make(chan error, 2)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			err = c.(*tls.Conn).Handshake()
			if err == nil {
				_, err = c.Write([]byte{1})
			}
			serverErr <- err
			c.Close()
		}
	}()
	dial := func(cfg *tls.Config) error {
		c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
		if err != nil {
			return err
		}
		defer c.Close()
		var b [1]byte
		_, err = io.ReadFull(c, b[:])
		return err
	}
	_, peer, err := kitFiles(dir, "coordinator", "coord-2").PeerConfigs()
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(peer); err != nil || <-serverErr != nil {
		t.Errorf("coordinator to coordinator: %v", err)
	}
	site, err := kitFiles(dir, "site", "kit").ClientConfig("")
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(site); err == nil {
		t.Error("a site certificate reached the Raft transport")
	}
	if err := <-serverErr; err == nil || !strings.Contains(err.Error(), "may not join the coordinators' cluster") {
		t.Errorf("server's refusal of a site = %v, want it to say a site may not join", err)
	}
}
