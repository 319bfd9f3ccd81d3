package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

const (
	testAdminRole = "cohort-admin"
	testSiteRole  = "cohort-site"
)

// ouRole reads the role from the certificate's OU, as deploy.Role does.
func ouRole(c *x509.Certificate) string {
	if len(c.Subject.OrganizationalUnit) == 0 {
		return ""
	}
	return c.Subject.OrganizationalUnit[0]
}

// callerCtx is the context of a call presenting a client certificate
// with common name cn and role ou; cn == "" presents none over TLS, and
// plain presents no TLS at all.
func callerCtx(cn, ou string, plain bool) context.Context {
	p := &peer.Peer{}
	if !plain {
		info := credentials.TLSInfo{State: tls.ConnectionState{}}
		if cn != "" {
			c := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
			if ou != "" {
				c.Subject.OrganizationalUnit = []string{ou}
			}
			info.State.PeerCertificates = []*x509.Certificate{c}
		}
		p.AuthInfo = info
	}
	return peer.NewContext(context.Background(), p)
}

func TestAuthorizerPerMethodAndRole(t *testing.T) {
	jobs := "/" + pb.JobsService_ServiceDesc.ServiceName + "/"
	coord := "/" + pb.CoordinatorService_ServiceDesc.ServiceName + "/"
	blob := "/" + pb.BlobService_ServiceDesc.ServiceName + "/"
	tests := []struct {
		name     string
		enforce  bool
		method   string
		cn, role string
		plain    bool
		want     codes.Code
		wantMsg  []string // fragments the message must hold
	}{
		{name: "admin submits", enforce: true, method: jobs + "SubmitJob", cn: "alice", role: testAdminRole, want: codes.OK},
		{name: "admin watches", enforce: true, method: jobs + "WatchJob", cn: "alice", role: testAdminRole, want: codes.OK},
		{name: "site joins", enforce: true, method: coord + "Join", cn: "kit", role: testSiteRole, want: codes.OK},
		{name: "site opens its session", enforce: true, method: coord + "Session", cn: "kit", role: testSiteRole, want: codes.OK},
		{name: "site pushes an update", enforce: true, method: coord + "PushUpdate", cn: "kit", role: testSiteRole, want: codes.OK},
		{name: "site cert calling JobsService", enforce: true, method: jobs + "SubmitJob", cn: "kit", role: testSiteRole,
			want: codes.PermissionDenied, wantMsg: []string{jobs + "SubmitJob needs a cohort-admin certificate", `"kit" is a cohort-site certificate`}},
		{name: "site cert listing jobs", enforce: true, method: jobs + "ListJobs", cn: "kit", role: testSiteRole,
			want: codes.PermissionDenied, wantMsg: []string{"needs a cohort-admin certificate"}},
		{name: "admin cert calling CoordinatorService", enforce: true, method: coord + "Join", cn: "alice", role: testAdminRole,
			want: codes.PermissionDenied, wantMsg: []string{coord + "Join needs a cohort-site certificate", `"alice" is a cohort-admin certificate`, "startup kit of a cohort-site"}},
		{name: "admin cert fetching a model", enforce: true, method: coord + "FetchModel", cn: "alice", role: testAdminRole,
			want: codes.PermissionDenied, wantMsg: []string{"needs a cohort-site certificate"}},
		{name: "coordinator cert calling JobsService", enforce: true, method: jobs + "CancelJob", cn: "coord-1", role: "cohort-coordinator",
			want: codes.PermissionDenied, wantMsg: []string{`"coord-1" is a cohort-coordinator certificate`}},
		{name: "role-less cert", enforce: true, method: coord + "Join", cn: "stray",
			want: codes.PermissionDenied, wantMsg: []string{`"stray" is a role-less certificate`}},
		{name: "no cert with enforcement", enforce: true, method: jobs + "SubmitJob", plain: true,
			want: codes.Unauthenticated, wantMsg: []string{"needs a cohort-admin certificate", "no client certificate", "startup kit"}},
		{name: "TLS without a client cert", enforce: true, method: coord + "Join",
			want: codes.Unauthenticated, wantMsg: []string{"needs a cohort-site certificate", "no client certificate"}},
		{name: "unknown service", enforce: true, method: "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", cn: "alice", role: testAdminRole,
			want: codes.PermissionDenied, wantMsg: []string{`no certificate role may call service "grpc.reflection.v1.ServerReflection"`}},
		{name: "coordinator fetches a blob", enforce: true, method: blob + "FetchBlob", cn: "coord-2", role: "cohort-coordinator", want: codes.OK},
		{name: "coordinator asks a peer to hold a blob", enforce: true, method: blob + "HoldBlob", cn: "coord-1", role: "cohort-coordinator", want: codes.OK},
		{name: "coordinator pushes a blob", enforce: true, method: blob + "PushBlob", cn: "coord-1", role: "cohort-coordinator", want: codes.OK},
		{name: "site cert pushing a blob", enforce: true, method: blob + "PushBlob", cn: "kit", role: testSiteRole,
			want: codes.PermissionDenied, wantMsg: []string{blob + "PushBlob needs a cohort-coordinator certificate", `"kit" is a cohort-site certificate`}},
		{name: "admin cert pushing a blob", enforce: true, method: blob + "PushBlob", cn: "alice", role: testAdminRole, want: codes.PermissionDenied},
		{name: "site cert fetching a blob", enforce: true, method: blob + "FetchBlob", cn: "kit", role: testSiteRole,
			want: codes.PermissionDenied, wantMsg: []string{blob + "FetchBlob needs a cohort-coordinator certificate", `"kit" is a cohort-site certificate`}},
		{name: "admin cert holding a blob", enforce: true, method: blob + "HoldBlob", cn: "alice", role: testAdminRole,
			want: codes.PermissionDenied, wantMsg: []string{"needs a cohort-coordinator certificate"}},
		{name: "no enforcement, no cert", method: jobs + "SubmitJob", plain: true, want: codes.OK},
		{name: "no enforcement, wrong role", method: coord + "Join", cn: "alice", role: testAdminRole, want: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := NewAuthorizer(AuthorizerConfig{Enforce: tt.enforce, Role: ouRole, AdminRole: testAdminRole, SiteRole: testSiteRole, CoordinatorRole: "cohort-coordinator"})
			if err != nil {
				t.Fatal(err)
			}
			ctx := callerCtx(tt.cn, tt.role, tt.plain)
			err = a.Authorize(ctx, tt.method)
			checkAuth(t, "Authorize", err, tt.want, tt.wantMsg)

			// The interceptors decide the same and call the handler only
			// when the call passes.
			called := false
			_, err = a.UnaryInterceptor()(ctx, nil, &grpc.UnaryServerInfo{FullMethod: tt.method}, func(context.Context, any) (any, error) {
				called = true
				return nil, nil
			})
			checkAuth(t, "UnaryInterceptor", err, tt.want, tt.wantMsg)
			if called != (tt.want == codes.OK) {
				t.Errorf("UnaryInterceptor called the handler = %v, want %v", called, tt.want == codes.OK)
			}
			called = false
			err = a.StreamInterceptor()(nil, fakeStream{ctx: ctx}, &grpc.StreamServerInfo{FullMethod: tt.method}, func(any, grpc.ServerStream) error {
				called = true
				return nil
			})
			checkAuth(t, "StreamInterceptor", err, tt.want, tt.wantMsg)
			if called != (tt.want == codes.OK) {
				t.Errorf("StreamInterceptor called the handler = %v, want %v", called, tt.want == codes.OK)
			}
		})
	}
}

func checkAuth(t *testing.T, what string, err error, want codes.Code, wantMsg []string) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code = %v (%v), want %v", what, got, err, want)
	}
	for _, m := range wantMsg {
		if !strings.Contains(status.Convert(err).Message(), m) {
			t.Errorf("%s: message %q does not say %q", what, status.Convert(err).Message(), m)
		}
	}
}

type fakeStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s fakeStream) Context() context.Context { return s.ctx }

func TestNewAuthorizerConfig(t *testing.T) {
	tests := []struct {
		name    string
		cfg     AuthorizerConfig
		wantErr []string
	}{
		{name: "enforced, complete", cfg: AuthorizerConfig{Enforce: true, Role: ouRole, AdminRole: "a", SiteRole: "s"}},
		{name: "not enforced needs nothing", cfg: AuthorizerConfig{}},
		{name: "enforced, nothing set", cfg: AuthorizerConfig{Enforce: true},
			wantErr: []string{"Role is nil", "AdminRole is empty", "SiteRole is empty"}},
		{name: "enforced, no site role", cfg: AuthorizerConfig{Enforce: true, Role: ouRole, AdminRole: "a"},
			wantErr: []string{"SiteRole is empty; name the role the coordinator service needs"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewAuthorizer(tt.cfg)
			if (err != nil) != (len(tt.wantErr) > 0) {
				t.Fatalf("NewAuthorizer() error = %v, want errors %q", err, tt.wantErr)
			}
			for _, m := range tt.wantErr {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("NewAuthorizer() error %q does not say %q", err, m)
				}
			}
		})
	}
}
