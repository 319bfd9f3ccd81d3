package deploy

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Roles, carried in a certificate's Subject.OrganizationalUnit.
const (
	RoleCoordinator = "cohort-coordinator"
	RoleSite        = "cohort-site"
	RoleAdmin       = "cohort-admin"
)

// Role returns the Cohort role of cert (one of [RoleCoordinator],
// [RoleSite], [RoleAdmin]), or "" when it has none.
func Role(cert *x509.Certificate) string {
	if cert == nil {
		return ""
	}
	for _, ou := range cert.Subject.OrganizationalUnit {
		switch ou {
		case RoleCoordinator, RoleSite, RoleAdmin:
			return ou
		}
	}
	return ""
}

// TLSFiles names the PEM files of one party's mutual TLS: its certificate,
// its private key and the project's CA certificate. The loaders resolve
// relative paths against the config file's folder.
type TLSFiles struct {
	Cert string `yaml:"cert"`
	Key  string `yaml:"key"`
	CA   string `yaml:"ca"`
}

// TLSOption configures [TLSFiles.ServerConfig] and [TLSFiles.ClientConfig].
type TLSOption func(*tlsOptions)

type tlsOptions struct {
	log *slog.Logger
	now func() time.Time
}

// WithLogger sets the logger that handshake refusals are logged to (Warn);
// default: none.
func WithLogger(l *slog.Logger) TLSOption { return func(o *tlsOptions) { o.log = l } }

// WithClock sets the clock certificates are checked against; default
// time.Now.
func WithClock(now func() time.Time) TLSOption { return func(o *tlsOptions) { o.now = now } }

func buildOptions(opts []TLSOption) tlsOptions {
	o := tlsOptions{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.now == nil {
		o.now = time.Now
	}
	return o
}

// loaded is a checked key pair and CA pool.
type loaded struct {
	pair tls.Certificate
	leaf *x509.Certificate
	pool *x509.CertPool
}

// load reads and checks the files: present, parseable, key matching the
// certificate, the certificate signed by the CA and valid at now.
func (f TLSFiles) load(now time.Time) (*loaded, error) {
	for _, x := range []struct{ key, val string }{{"cert", f.Cert}, {"key", f.Key}, {"ca", f.CA}} {
		if x.val == "" {
			return nil, fmt.Errorf("tls.%s is not set; name the file from the startup kit (cohort provision writes it)", x.key)
		}
	}
	certPEM, err := os.ReadFile(f.Cert)
	if err != nil {
		return nil, fmt.Errorf("reading tls.cert: %w; it is in the startup kit that cohort provision wrote", err)
	}
	keyPEM, err := os.ReadFile(f.Key)
	if err != nil {
		return nil, fmt.Errorf("reading tls.key: %w; it is in the startup kit that cohort provision wrote", err)
	}
	caPEM, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, fmt.Errorf("reading tls.ca: %w; it is in the startup kit that cohort provision wrote", err)
	}
	cas, err := parseCerts(caPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.ca %s: %w; copy ca.crt from the startup kit again", f.CA, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		if strings.Contains(err.Error(), "does not match") {
			return nil, fmt.Errorf("tls.key %s does not match tls.cert %s: take both from the same startup kit: %w", f.Key, f.Cert, err)
		}
		return nil, fmt.Errorf("loading tls.cert %s and tls.key %s: %w; copy both from the startup kit again", f.Cert, f.Key, err)
	}
	leaf := pair.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(pair.Certificate[0]); err != nil {
			return nil, fmt.Errorf("parsing tls.cert %s: %w", f.Cert, err)
		}
	}
	if err := checkValidity(f.Cert, leaf, now); err != nil {
		return nil, err
	}
	signed := false
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
		if leaf.CheckSignatureFrom(ca) == nil {
			signed = true
		}
	}
	if !signed {
		return nil, fmt.Errorf("tls.cert %s (issued by %q) is not signed by the CA in %s (%q): take the certificate and ca.crt from the same startup kit", f.Cert, leaf.Issuer.CommonName, f.CA, cas[0].Subject.CommonName)
	}
	return &loaded{pair: pair, leaf: leaf, pool: pool}, nil
}

// checkValidity says when a certificate expired or becomes valid.
func checkValidity(file string, c *x509.Certificate, now time.Time) error {
	if now.After(c.NotAfter) {
		return fmt.Errorf("certificate %s (CN %q) expired on %s, %s ago: re-run cohort provision to issue a new one (move the old kit aside first)", file, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339), now.Sub(c.NotAfter).Round(time.Second))
	}
	if now.Before(c.NotBefore) {
		return fmt.Errorf("certificate %s (CN %q) is not valid until %s, %s from now: check this machine's clock, or re-run cohort provision", file, c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339), c.NotBefore.Sub(now).Round(time.Second))
	}
	return nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parsing certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no PEM certificate found")
	}
	return out, nil
}

// ServerConfig returns the TLS config of a coordinator: TLS 1.3 at least,
// its certificate, and a client certificate required and verified against
// the CA (for client auth). The verification is done in VerifyConnection,
// not by crypto/tls's own RequireAndVerifyClientCert, so that a refusal is
// logged with its reason, the certificate's CN, role and issuer (such as
// "site certificate from another CA"); it checks the same chain, validity
// and key usage. Errors loading the files name the fix.
func (f TLSFiles) ServerConfig(opts ...TLSOption) (*tls.Config, error) {
	o := buildOptions(opts)
	l, err := f.load(o.now())
	if err != nil {
		return nil, fmt.Errorf("coordinator TLS: %w", err)
	}
	ca := f.CA
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{l.pair},
		// No ClientCAs: the server then names no acceptable CA, so a client
		// with a certificate from another CA still sends it (Go's client
		// sends nothing when its certificate matches none of the names) and
		// the refusal below can say whose it was. VerifyConnection checks
		// the chain against the kit's CA.
		ClientAuth: tls.RequireAnyClientCert,
		Time:       o.now,
		VerifyConnection: func(cs tls.ConnectionState) error {
			err := verifyPeer(cs, l.pool, o.now(), x509.ExtKeyUsageClientAuth, "")
			if err == nil {
				return nil
			}
			c := cs.PeerCertificates[0]
			who := roleWord(c)
			var reason string
			var ua x509.UnknownAuthorityError
			var ci x509.CertificateInvalidError
			switch {
			case errors.As(err, &ua):
				reason = who + " certificate from another CA"
			case errors.As(err, &ci) && ci.Reason == x509.Expired:
				reason = who + " certificate expired or not yet valid"
			case errors.As(err, &ci) && ci.Reason == x509.IncompatibleUsage:
				reason = who + " certificate not for client use"
			default:
				reason = who + " certificate refused"
			}
			o.log.Warn(reason, "cn", c.Subject.CommonName, "role", Role(c), "issuer", c.Issuer.CommonName,
				"not_before", c.NotBefore, "not_after", c.NotAfter, "ca", ca, "error", err)
			return fmt.Errorf("%s (CN %q, issuer %q): %w", reason, c.Subject.CommonName, c.Issuer.CommonName, err)
		},
	}, nil
}

// ClientConfig returns the TLS config of a site or admin dialling a
// coordinator at serverName (the host of its address): TLS 1.3 at least,
// its certificate, and the coordinator's certificate verified against the
// CA and serverName. The verification is done in VerifyConnection (with
// crypto/tls's own turned off) so that its failure reads as what to do: a
// coordinator certificate from another CA gives "the coordinator's
// certificate is not signed by the CA in <ca path>: is this the right
// startup kit?".
func (f TLSFiles) ClientConfig(serverName string, opts ...TLSOption) (*tls.Config, error) {
	o := buildOptions(opts)
	l, err := f.load(o.now())
	if err != nil {
		return nil, fmt.Errorf("client TLS: %w", err)
	}
	ca := f.CA
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{l.pair},
		RootCAs:      l.pool,
		ServerName:   serverName,
		Time:         o.now,
		// VerifyConnection below verifies the chain and the name against
		// the CA; crypto/tls's own check would only say "unknown authority".
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			// grpc fills in the server name from the target it dials when
			// serverName is empty; the name checked is the one sent.
			name := serverName
			if name == "" {
				name = cs.ServerName
			}
			err := verifyPeer(cs, l.pool, o.now(), x509.ExtKeyUsageServerAuth, name)
			if err == nil {
				return nil
			}
			var ua x509.UnknownAuthorityError
			var ci x509.CertificateInvalidError
			var he x509.HostnameError
			msg := ""
			if len(cs.PeerCertificates) > 0 {
				c := cs.PeerCertificates[0]
				msg = fmt.Sprintf(" (CN %q, issuer %q)", c.Subject.CommonName, c.Issuer.CommonName)
			}
			switch {
			case errors.As(err, &ua):
				err = fmt.Errorf("the coordinator's certificate%s is not signed by the CA in %s: is this the right startup kit? %w", msg, ca, err)
			case errors.As(err, &ci) && ci.Reason == x509.Expired:
				err = fmt.Errorf("the coordinator's certificate%s is expired or not yet valid: the coordinator must re-run cohort provision (or check this machine's clock): %w", msg, err)
			case errors.As(err, &he):
				err = fmt.Errorf("the coordinator's certificate%s is not for %q: dial an address listed for it in project.yaml, or add this one there and re-provision its kit: %w", msg, serverName, err)
			default:
				err = fmt.Errorf("the coordinator's certificate%s is refused: %w", msg, err)
			}
			o.log.Warn("coordinator_certificate_refused", "server_name", serverName, "ca", ca, "error", err)
			return err
		},
	}, nil
}

// verifyPeer verifies the peer's leaf against pool for usage, and the name
// when dnsName is set.
func verifyPeer(cs tls.ConnectionState, pool *x509.CertPool, now time.Time, usage x509.ExtKeyUsage, dnsName string) error {
	if len(cs.PeerCertificates) == 0 {
		return errors.New("the peer sent no certificate; it needs the certificate from its startup kit")
	}
	inter := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inter.AddCert(c)
	}
	_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
		Roots:         pool,
		Intermediates: inter,
		CurrentTime:   now,
		DNSName:       dnsName,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	})
	return err
}

// roleWord names a certificate's role for messages.
func roleWord(c *x509.Certificate) string {
	switch Role(c) {
	case RoleSite:
		return "site"
	case RoleAdmin:
		return "admin"
	case RoleCoordinator:
		return "coordinator"
	}
	return "client"
}

// PeerConfigs returns the TLS configs of a coordinator's Raft transport:
// the server side refuses any certificate but a coordinator's of the
// kit's CA, the client side verifies the dialled peer's certificate
// against the CA and the host it dials.
func (f TLSFiles) PeerConfigs(opts ...TLSOption) (server, client *tls.Config, err error) {
	server, err = f.ServerConfig(opts...)
	if err != nil {
		return nil, nil, err
	}
	verify := server.VerifyConnection
	server.VerifyConnection = func(cs tls.ConnectionState) error {
		if err := verify(cs); err != nil {
			return err
		}
		if c := cs.PeerCertificates[0]; Role(c) != RoleCoordinator {
			return fmt.Errorf("raft: a %s certificate (CN %q) may not join the coordinators' cluster; only coordinator certificates may", roleWord(c), c.Subject.CommonName)
		}
		return nil
	}
	client, err = f.ClientConfig("", opts...)
	if err != nil {
		return nil, nil, err
	}
	return server, client, nil
}
