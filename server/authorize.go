package server

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// AuthorizerConfig configures [NewAuthorizer].
type AuthorizerConfig struct {
	// Enforce refuses every call whose client certificate lacks the role
	// its method needs. False (plaintext on loopback: a demo, `cohort
	// run`) lets every call through.
	Enforce bool
	// Role returns the role a verified client certificate carries, or ""
	// when it carries none (deploy.Role in production). Required when
	// Enforce is set.
	Role func(*x509.Certificate) string
	// AdminRole is the role the Jobs API needs (submit, list, cancel,
	// watch); SiteRole the role the coordinator service needs (join,
	// session, model transfer). Both required when Enforce is set.
	AdminRole, SiteRole string
	// CoordinatorRole is the role the blob service needs: only the
	// cluster's coordinators fetch models from each other. Empty refuses
	// the blob service to every caller.
	CoordinatorRole string
	// Logger receives refused calls; nil discards them.
	Logger *slog.Logger
}

// Authorizer says who may do what on a coordinator: each gRPC service
// needs one certificate role — the Jobs API an admin's, the coordinator
// service a site's — read from the client certificate the TLS handshake
// has verified against the project's CA. A method of any other service is
// refused. Install it with [Authorizer.UnaryInterceptor] and
// [Authorizer.StreamInterceptor]. An Authorizer is safe for concurrent use.
type Authorizer struct {
	cfg AuthorizerConfig
	// roles maps a service's full name to the role it needs.
	roles map[string]string
	log   *slog.Logger
}

// NewAuthorizer returns the authorizer cfg describes, or an error naming
// each missing setting.
func NewAuthorizer(cfg AuthorizerConfig) (*Authorizer, error) {
	if cfg.Enforce {
		var errs []error
		if cfg.Role == nil {
			errs = append(errs, errors.New("authorizer: Role is nil; pass the function that reads a certificate's role (deploy.Role)"))
		}
		if cfg.AdminRole == "" {
			errs = append(errs, errors.New("authorizer: AdminRole is empty; name the role the Jobs API needs (deploy.RoleAdmin)"))
		}
		if cfg.SiteRole == "" {
			errs = append(errs, errors.New("authorizer: SiteRole is empty; name the role the coordinator service needs (deploy.RoleSite)"))
		}
		if err := errors.Join(errs...); err != nil {
			return nil, err
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	roles := map[string]string{
		pb.JobsService_ServiceDesc.ServiceName:        cfg.AdminRole,
		pb.CoordinatorService_ServiceDesc.ServiceName: cfg.SiteRole,
	}
	if cfg.CoordinatorRole != "" {
		roles[pb.BlobService_ServiceDesc.ServiceName] = cfg.CoordinatorRole
	}
	return &Authorizer{cfg: cfg, log: log, roles: roles}, nil
}

// Authorize returns nil when the caller of fullMethod
// ("/cohort.v1.JobsService/SubmitJob") holds the role its service needs.
// Otherwise it returns a gRPC status error: Unauthenticated without a
// client certificate, PermissionDenied with one of another role or for a
// service no role may call; each message says what to use instead.
func (a *Authorizer) Authorize(ctx context.Context, fullMethod string) error {
	if !a.cfg.Enforce {
		return nil
	}
	service, _, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	want, ok := a.roles[service]
	if !ok {
		a.log.Warn("call_refused", "method", fullMethod, "reason", "unknown_service")
		return status.Errorf(codes.PermissionDenied, "%s: no certificate role may call service %q on a coordinator; call %s or %s", fullMethod, service, pb.JobsService_ServiceDesc.ServiceName, pb.CoordinatorService_ServiceDesc.ServiceName)
	}
	cert := peerCert(ctx)
	if cert == nil {
		a.log.Warn("call_refused", "method", fullMethod, "reason", "no_client_certificate")
		return status.Errorf(codes.Unauthenticated, "%s needs a %s certificate and the call presented no client certificate: use the certificate of your startup kit", fullMethod, want)
	}
	if got := a.cfg.Role(cert); got != want {
		a.log.Warn("call_refused", "method", fullMethod, "cn", cert.Subject.CommonName, "role", got, "want", want)
		if got == "" {
			got = "role-less"
		}
		return status.Errorf(codes.PermissionDenied, "%s needs a %s certificate; %q is a %s certificate: use the startup kit of a %s", fullMethod, want, cert.Subject.CommonName, got, want)
	}
	return nil
}

// UnaryInterceptor returns the interceptor that authorizes unary calls.
func (a *Authorizer) UnaryInterceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := a.Authorize(ctx, info.FullMethod); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

// StreamInterceptor returns the interceptor that authorizes streams.
func (a *Authorizer) StreamInterceptor() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := a.Authorize(ss.Context(), info.FullMethod); err != nil {
			return err
		}
		return h(srv, ss)
	}
}

// peerCert returns the client certificate of a call, if any. The
// handshake has verified it against the CA (deploy's VerifyConnection), or
// the call would not have reached here.
func peerCert(ctx context.Context) *x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.PeerCertificates) == 0 {
		return nil
	}
	return ti.State.PeerCertificates[0]
}
