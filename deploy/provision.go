package deploy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Result says what [Provision] did.
type Result struct {
	// Dir is the output folder.
	Dir string
	// CADir is the CA's folder (ca.crt, ca.key).
	CADir string
	// CACreated is true when the CA was made now, false when an existing
	// one was re-used.
	CACreated bool
	// Kits lists every kit of the project: coordinators, then sites, then
	// admins, in the project's order.
	Kits []Kit
}

// Kit is one startup kit in a [Result].
type Kit struct {
	// Role is [RoleCoordinator], [RoleSite] or [RoleAdmin].
	Role string
	// Name is the coordinator's, site's or admin's name.
	Name string
	// Dir is the kit's folder.
	Dir string
	// Written is true when the kit was written now, false when an existing
	// kit was kept as it was (not re-keyed).
	Written bool
	// NotAfter is when the kit's certificate expires.
	NotAfter time.Time
	// Next is the command that uses the kit, run in its folder.
	Next string
}

// File names in a CA folder.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// caLifetime is the CA's lifetime: ten years, or the project's validity if
// longer, so that kits added later are signed by the same CA.
const caLifetime = 10 * 365 * 24 * time.Hour

// backdate is how far before now certificates become valid, for clocks a
// little behind.
const backdate = time.Hour

// Provision makes the project's CA and startup kits in outDir, with
// certificates valid from now (less an hour, for clock skew) for
// p.Validity:
//
//	ca/{ca.crt, ca.key}
//	coordinators/<name>/{coordinator.yaml, coordinator.crt, coordinator.key, ca.crt, README.md, cohort-coordinator.service}
//	sites/<name>/{site.yaml, site.crt, site.key, ca.crt, README.md, cohort-site.service}
//	admins/<name>/{admin.yaml, admin.crt, admin.key, ca.crt, README.md}
//
// It is safe to re-run: an existing CA is re-used, and an existing kit is
// kept as it is (its key is never replaced) once checked to be signed by
// that CA; only missing kits are written, each into a temporary folder
// renamed into place. To re-issue a kit (expired, or a changed address),
// move its folder aside and run Provision again. Kits of names removed from
// the project are left alone. Keys are ECDSA P-256, files holding keys are
// 0600 and kit folders 0700.
func Provision(p *Project, outDir string, now time.Time) (*Result, error) {
	if p == nil {
		return nil, errors.New("provision: no project")
	}
	if len(p.Coordinators) == 0 {
		return nil, errors.New("provision: the project lists no coordinators; add one to project.yaml")
	}
	validity := p.Validity
	if validity <= 0 {
		validity = DefaultValidity
	}
	res := &Result{Dir: outDir, CADir: filepath.Join(outDir, "ca")}
	ca, created, err := loadOrCreateCA(res.CADir, p.Name, now, validity)
	if err != nil {
		return nil, fmt.Errorf("provision: %w", err)
	}
	res.CACreated = created
	addrs := p.coordinatorAddresses()
	peers := p.clusterPeers()
	for _, c := range p.Coordinators {
		host, port := splitAddress(c.Address)
		listen := net.JoinHostPort("0.0.0.0", port)
		if IsLoopback(host) {
			listen = c.Address
		}
		hosts := []string{host}
		if rh, _ := splitAddress(c.Raft); c.Raft != "" && rh != host {
			hosts = append(hosts, rh) // the peers dial and verify the raft host
		}
		k := kitSpec{role: RoleCoordinator, file: "coordinator", name: c.Name, hosts: hosts,
			config: coordinatorYAML(c.Name, listen, peers), unit: unitFile(p.Name, "coordinator", c.Name)}
		if err := provisionKit(res, ca, filepath.Join(outDir, "coordinators", c.Name), k, p, now, validity); err != nil {
			return nil, err
		}
	}
	for _, s := range p.Sites {
		k := kitSpec{role: RoleSite, file: "site", name: s.Name,
			config: siteYAML(s.Name, addrs, s.GPUs), unit: unitFile(p.Name, "site", s.Name)}
		if err := provisionKit(res, ca, filepath.Join(outDir, "sites", s.Name), k, p, now, validity); err != nil {
			return nil, err
		}
	}
	for _, a := range p.Admins {
		k := kitSpec{role: RoleAdmin, file: "admin", name: a.Name, config: adminYAML(a.Name, addrs)}
		if err := provisionKit(res, ca, filepath.Join(outDir, "admins", a.Name), k, p, now, validity); err != nil {
			return nil, err
		}
	}
	return res, nil
}

// authority is a loaded CA.
type authority struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
}

func loadOrCreateCA(dir, project string, now time.Time, validity time.Duration) (*authority, bool, error) {
	certPath, keyPath := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	certPEM, err := os.ReadFile(certPath)
	switch {
	case err == nil:
		keyPEM, err := os.ReadFile(keyPath)
		if err != nil {
			return nil, false, fmt.Errorf("the CA certificate %s exists but its key does not (%w): restore %s, or move %s aside to make a new CA (every kit must then be re-issued)", certPath, err, CAKeyFile, dir)
		}
		certs, err := parseCerts(certPEM)
		if err != nil {
			return nil, false, fmt.Errorf("reading the CA %s: %w", certPath, err)
		}
		key, err := parseKey(keyPEM)
		if err != nil {
			return nil, false, fmt.Errorf("reading the CA key %s: %w", keyPath, err)
		}
		if !key.PublicKey.Equal(certs[0].PublicKey) {
			return nil, false, fmt.Errorf("the CA key %s does not match %s: restore the pair from a backup", keyPath, certPath)
		}
		if now.After(certs[0].NotAfter) {
			return nil, false, fmt.Errorf("the CA %s expired on %s: move %s aside and provision again (every kit must then be re-issued)", certPath, certs[0].NotAfter.UTC().Format(time.RFC3339), dir)
		}
		return &authority{cert: certs[0], certPEM: certPEM, key: key}, false, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, false, fmt.Errorf("reading the CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("making the CA key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: project + " Cohort CA", Organization: []string{project}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(max(caLifetime, validity)),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, false, fmt.Errorf("making the CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, false, fmt.Errorf("making the CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, false, err
	}
	certPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := writeDir(dir, map[string]fileBody{
		CACertFile: {certPEM, 0o644},
		CAKeyFile:  {keyPEM, 0o600},
	}); err != nil {
		return nil, false, fmt.Errorf("writing the CA: %w", err)
	}
	return &authority{cert: cert, certPEM: certPEM, key: key}, true, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		// crypto/rand does not fail on supported platforms.
		return big.NewInt(time.Now().UnixNano())
	}
	return n.Add(n, big.NewInt(1))
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM key found")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parsing the key: %w", err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("the key is a %T, want an ECDSA key", k)
	}
	return ek, nil
}

func encodeKey(k *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encoding a key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

type kitSpec struct {
	role, file, name string
	hosts            []string // coordinators: SAN hosts besides localhost
	config, unit     string
}

func provisionKit(res *Result, ca *authority, dir string, k kitSpec, p *Project, now time.Time, validity time.Duration) error {
	kit := Kit{Role: k.role, Name: k.name, Dir: dir, Next: nextCommand(k.file)}
	certPath := filepath.Join(dir, k.file+".crt")
	if _, err := os.Stat(dir); err == nil {
		data, err := os.ReadFile(certPath)
		if err != nil {
			return fmt.Errorf("provision: %s exists but is not a complete kit (%w): move it aside and provision again", dir, err)
		}
		certs, err := parseCerts(data)
		if err != nil {
			return fmt.Errorf("provision: kit %s: %s: %w", dir, certPath, err)
		}
		if certs[0].CheckSignatureFrom(ca.cert) != nil {
			return fmt.Errorf("provision: the kept kit %s is not signed by the CA in %s: move the kit aside to issue a new one", dir, res.CADir)
		}
		kit.NotAfter = certs[0].NotAfter
		res.Kits = append(res.Kits, kit)
		return nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("provision: %w", err)
	}
	certPEM, keyPEM, leaf, err := issue(ca, k, now, validity)
	if err != nil {
		return fmt.Errorf("provision: %s %s: %w", k.file, k.name, err)
	}
	files := map[string]fileBody{
		k.file + ".yaml": {[]byte(k.config), 0o644},
		k.file + ".crt":  {certPEM, 0o644},
		k.file + ".key":  {keyPEM, 0o600},
		CACertFile:       {ca.certPEM, 0o644},
		"README.md":      {[]byte(readme(p, k, leaf)), 0o644},
	}
	if k.unit != "" {
		files["cohort-"+k.file+".service"] = fileBody{[]byte(k.unit), 0o644}
	}
	if err := writeDir(dir, files); err != nil {
		return fmt.Errorf("provision: writing kit %s: %w", dir, err)
	}
	kit.Written = true
	kit.NotAfter = leaf.NotAfter
	res.Kits = append(res.Kits, kit)
	return nil
}

func nextCommand(file string) string {
	if file == "admin" {
		return "cohort submit -c admin.yaml JOB.yaml"
	}
	return "cohort " + file + " -c " + file + ".yaml"
}

// issue makes a key and certificate for a kit.
func issue(ca *authority, k kitSpec, now time.Time, validity time.Duration) (certPEM, keyPEM []byte, leaf *x509.Certificate, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("making a key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: k.name, OrganizationalUnit: []string{k.role}, Organization: ca.cert.Subject.Organization},
		NotBefore:    now.Add(-backdate),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if k.role == RoleCoordinator {
		// Server auth for sites and admins; client auth too, for HA peers
		// dialling each other.
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		sans := append(k.hosts, "localhost", "127.0.0.1")
		seen := map[string]bool{}
		for _, h := range sans {
			if seen[h] {
				continue
			}
			seen[h] = true
			if ip := net.ParseIP(h); ip != nil {
				tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
			} else {
				tmpl.DNSNames = append(tmpl.DNSNames, h)
			}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("signing the certificate: %w", err)
	}
	leaf, err = x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("signing the certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, leaf, nil
}

type fileBody struct {
	data []byte
	mode os.FileMode
}

// writeDir writes files into a new folder dir (0700): into a temporary
// sibling first, renamed into place once complete.
func writeDir(dir string, files map[string]fileBody) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return fmt.Errorf("making %s: %w", filepath.Dir(dir), err)
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return fmt.Errorf("making a temporary folder: %w", err)
	}
	defer os.RemoveAll(tmp)
	for _, name := range sortedKeys(files) {
		f := files[name]
		if err := os.WriteFile(filepath.Join(tmp, name), f.data, f.mode); err != nil {
			return fmt.Errorf("writing %s: %w", name, err)
		}
	}
	if err := os.Chmod(tmp, 0o700); err != nil {
		return fmt.Errorf("setting permissions: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		return fmt.Errorf("moving the folder into place: %w", err)
	}
	return nil
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = strconv.Quote(x)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func siteYAML(name string, coords []string, gpus []int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Cohort site config, written by cohort provision. Start with: cohort site -c site.yaml\n")
	fmt.Fprintf(&b, "name: %s\n", name)
	fmt.Fprintf(&b, "coordinators: %s   # tried in turn\n", quoteList(coords))
	fmt.Fprintf(&b, "tls: {cert: site.crt, key: site.key, ca: ca.crt}   # paths relative to this file\n")
	fmt.Fprintf(&b, "# data: {fashion-mnist: /srv/data/fashion-mnist}   # dataset name -> path; unlisted ones use the default search\n")
	if gpus == nil {
		fmt.Fprintf(&b, "# gpus: [0]   # GPUs trainers see and the energy meter measures; omitted = all visible, [] = none\n")
	} else {
		s := make([]string, len(gpus))
		for i, g := range gpus {
			s[i] = strconv.Itoa(g)
		}
		fmt.Fprintf(&b, "gpus: [%s]   # GPUs trainers see and the energy meter measures; omitted = all visible, [] = none\n", strings.Join(s, ", "))
	}
	fmt.Fprintf(&b, "exec: {allow: false, workdir: \"\"}   # allow: true lets jobs run external trainer commands here\n")
	fmt.Fprintf(&b, "log: {format: text, level: info}\n")
	return b.String()
}

// clusterPeers returns the Raft peers of a project with several
// coordinators (nil for one): each raft address defaults to the port after
// the coordinator's address.
func (p *Project) clusterPeers() []ClusterPeer {
	if len(p.Coordinators) < 2 {
		return nil
	}
	var peers []ClusterPeer
	for _, c := range p.Coordinators {
		raft := c.Raft
		if raft == "" {
			host, port := splitAddress(c.Address)
			n, _ := strconv.Atoi(port)
			raft = net.JoinHostPort(host, strconv.Itoa(n+1))
		}
		peers = append(peers, ClusterPeer{ID: c.Name, Raft: raft, GRPC: c.Address})
	}
	return peers
}

func coordinatorYAML(name, listen string, peers []ClusterPeer) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Cohort coordinator config, written by cohort provision. Start with: cohort coordinator -c coordinator.yaml\n")
	fmt.Fprintf(&b, "name: %s\n", name)
	fmt.Fprintf(&b, "listen: %s\n", strconv.Quote(listen))
	fmt.Fprintf(&b, "tls: {cert: coordinator.crt, key: coordinator.key, ca: ca.crt}   # paths relative to this file\n")
	fmt.Fprintf(&b, "state_dir: ./state   # jobs, their committed rounds and models persist here (a Raft log): a restart resumes them\n")
	fmt.Fprintf(&b, "# data: {fashion-mnist: /srv/data/fashion-mnist}   # for the coordinator's own test-set evaluation\n")
	fmt.Fprintf(&b, "tracking: {uri: %s}   # default tracking for jobs that name none\n", strconv.Quote(DefaultTrackingURI))
	fmt.Fprintf(&b, "site_wait: 10m\n")
	if len(peers) > 0 {
		fmt.Fprintf(&b, "# The coordinators replicate the job state with Raft (mutual TLS with the certificates above);\n")
		fmt.Fprintf(&b, "# every coordinator lists the same peers. The leader runs the jobs; the others redirect to it.\n")
		fmt.Fprintf(&b, "cluster:\n  id: %s\n  peers:\n", name)
		for _, p := range peers {
			fmt.Fprintf(&b, "    - {id: %s, raft: %s, grpc: %s}\n", p.ID, strconv.Quote(p.Raft), strconv.Quote(p.GRPC))
		}
	}
	fmt.Fprintf(&b, "log: {format: text, level: info}\n")
	return b.String()
}

func adminYAML(name string, coords []string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Cohort admin config, written by cohort provision.\n")
	fmt.Fprintf(&b, "name: %s\n", name)
	fmt.Fprintf(&b, "coordinators: %s\n", quoteList(coords))
	fmt.Fprintf(&b, "tls: {cert: admin.crt, key: admin.key, ca: ca.crt}   # paths relative to this file\n")
	return b.String()
}

func unitFile(project, role, name string) string {
	return fmt.Sprintf(`# systemd unit for the Cohort %[2]s %[3]q of project %[1]q.
# Install: copy this kit to /opt/cohort/%[2]s-%[3]s, then
#   sudo cp cohort-%[2]s.service /etc/systemd/system/ && sudo systemctl enable --now cohort-%[2]s
[Unit]
Description=Cohort %[2]s %[3]s (%[1]s)
Wants=network-online.target
After=network-online.target

[Service]
WorkingDirectory=/opt/cohort/%[2]s-%[3]s
ExecStart=/usr/local/bin/cohort %[2]s -c %[2]s.yaml
Restart=on-failure
RestartSec=5s
NoNewPrivileges=true
PrivateTmp=true

[Install]
WantedBy=multi-user.target
`, project, role, name)
}

func readme(p *Project, k kitSpec, leaf *x509.Certificate) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Cohort %s kit: %s (project %s)\n\n", k.file, k.name, p.Name)
	fmt.Fprintf(&b, "Written by `cohort provision`. The certificate `%s.crt` (CN `%s`, role `%s`) is valid until %s;\n", k.file, k.name, k.role, leaf.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(&b, "`%s.key` is its private key: keep it on this machine only. `ca.crt` is the project's CA.\n\n", k.file)
	switch k.file {
	case "site":
		b.WriteString("Copy this folder to the site's machine (next to its data and GPU), then, in it:\n\n")
		b.WriteString("    cohort site -c site.yaml\n\n")
		b.WriteString("The site only dials out, to the coordinators listed in site.yaml: no inbound port is needed.\n")
		b.WriteString("Set `data` to where the datasets are and `gpus` to the GPUs to use. To run it as a service,\n")
		b.WriteString("see cohort-site.service.\n")
	case "coordinator":
		fmt.Fprintf(&b, "Copy this folder to the coordinator's machine (the certificate holds the names %s), then, in it:\n\n", strings.Join(append(leaf.DNSNames, ipStrings(leaf.IPAddresses)...), ", "))
		b.WriteString("    cohort coordinator -c coordinator.yaml\n\n")
		b.WriteString("Sites and admins dial in on the port in `listen`: open it in the firewall. To run it as a service,\n")
		b.WriteString("see cohort-coordinator.service.\n")
	case "admin":
		b.WriteString("Keep this folder on the admin's machine and use it with the commands that talk to a coordinator:\n\n")
		b.WriteString("    cohort submit -c admin.yaml JOB.yaml\n    cohort jobs -c admin.yaml\n")
	}
	b.WriteString("\nTo renew the certificate, move this folder aside and re-run `cohort provision` on the project.\n")
	return b.String()
}

func ipStrings(ips []net.IP) []string {
	out := make([]string, len(ips))
	for i, ip := range ips {
		out[i] = ip.String()
	}
	return out
}
