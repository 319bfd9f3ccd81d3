package leader

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// notLeaderErr is a follower's refusal, naming leader when it knows one.
func notLeaderErr(t testing.TB, leader string) error {
	t.Helper()
	md := map[string]string{}
	if leader != "" {
		md[pb.LeaderAddressKey] = leader
	}
	st, err := status.New(codes.Unavailable, "not the leader").WithDetails(&errdetails.ErrorInfo{Reason: pb.NotLeaderReason, Domain: pb.ErrorDomain, Metadata: md})
	if err != nil {
		t.Fatal(err)
	}
	return st.Err()
}

// node is a fake coordinator: its Jobs API answers ListJobs and its
// Coordinator API answers Join with answer, counting the calls.
type node struct {
	pb.UnimplementedJobsServiceServer
	pb.UnimplementedCoordinatorServiceServer
	addr   string
	calls  atomic.Int64
	answer func(call int64) error
}

func (n *node) ListJobs(context.Context, *pb.ListJobsRequest) (*pb.ListJobsResponse, error) {
	if err := n.answer(n.calls.Add(1)); err != nil {
		return nil, err
	}
	return &pb.ListJobsResponse{}, nil
}

func (n *node) Join(context.Context, *pb.JoinRequest) (*pb.JoinResponse, error) {
	if err := n.answer(n.calls.Add(1)); err != nil {
		return nil, err
	}
	return &pb.JoinResponse{SessionId: "s-" + n.addr}, nil
}

// listen opens a loopback listener kept open until the test ends, so that
// no other test takes its port.
func listen(t testing.TB) net.Listener {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() })
	return lis
}

// serve runs n on a fresh loopback gRPC server.
func serve(t testing.TB, n *node) *node {
	t.Helper()
	lis := listen(t)
	n.addr = lis.Addr().String()
	gs := grpc.NewServer()
	pb.RegisterJobsServiceServer(gs, n)
	pb.RegisterCoordinatorServiceServer(gs, n)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return n
}

// blackhole is an address that accepts connections and never answers: a
// coordinator whose machine hangs, or a firewall that swallows packets.
func blackhole(t testing.TB) string {
	t.Helper()
	lis := listen(t)
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := lis.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		lis.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return lis.Addr().String()
}

// refused is an address nothing listens on: a coordinator that is down.
// The listener is closed at once; its port stays unused by this test.
func refused(t testing.TB) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	return addr
}

func ok(int64) error { return nil }

var insecureDial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}

// listJobs is the admin commands' probe.
func listJobs(ctx context.Context, cc *grpc.ClientConn) (*pb.ListJobsResponse, error) {
	return pb.NewJobsServiceClient(cc).ListJobs(ctx, &pb.ListJobsRequest{}, grpc.WaitForReady(true))
}

// join is the site agent's probe.
func join(ctx context.Context, cc *grpc.ClientConn) (*pb.JoinResponse, error) {
	return pb.NewCoordinatorServiceClient(cc).Join(ctx, &pb.JoinRequest{SiteName: "kit"})
}

func newDialer(t testing.TB, cfg Config) *Dialer {
	t.Helper()
	cfg.DialOptions = insecureDial
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestFindLeaderWithCoordinatorsDown: with one or two of three
// coordinators down (one of them a blackhole that accepts and never
// answers), the leader is found in well under a second; the old
// one-at-a-time dialling took 10 s per coordinator down.
func TestFindLeaderWithCoordinatorsDown(t *testing.T) {
	leaderNode := serve(t, &node{answer: ok})
	follower := serve(t, &node{})
	follower.answer = func(int64) error { return notLeaderErr(t, leaderNode.addr) }
	tests := []struct {
		name    string
		targets []string
	}{
		{"one blackholed first", []string{blackhole(t), follower.addr, leaderNode.addr}},
		{"one refused first", []string{refused(t), leaderNode.addr, follower.addr}},
		{"two down", []string{blackhole(t), refused(t), leaderNode.addr}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDialer(t, Config{Targets: tt.targets, AttemptTimeout: 10 * time.Second, FailFast: true, Patience: 15 * time.Second})
			began := time.Now()
			res, err := Find(context.Background(), d, listJobs)
			took := time.Since(began)
			if err != nil {
				t.Fatalf("Find(%v) = %v, want the leader %s", tt.targets, err, leaderNode.addr)
			}
			if res.Target != leaderNode.addr {
				t.Errorf("Find(%v) found %s, want the leader %s", tt.targets, res.Target, leaderNode.addr)
			}
			// Generous: a loopback round trip takes about a millisecond.
			if took > time.Second {
				t.Errorf("Find(%v) took %s, want < 1s", tt.targets, took)
			}
			t.Logf("%s: leader found in %s", tt.name, took)
		})
	}
}

// recorder is a Config.Sleep that returns at once, recording the waits,
// and ends the search (context.Canceled) once the simulated time reaches
// limit.
type recorder struct {
	mu    sync.Mutex
	waits []time.Duration
	total time.Duration
	limit time.Duration
}

func (r *recorder) sleep(ctx context.Context, d time.Duration) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.waits = append(r.waits, d)
	r.total += d
	if r.limit > 0 && r.total >= r.limit {
		return context.Canceled
	}
	return ctx.Err()
}

// TestNotLeaderBacksOff: a cluster whose nodes keep answering NOT_LEADER
// (each naming another) is asked at a backoff that doubles, not reset by
// the hints: over 100 simulated seconds a site made 389 attempts before;
// now each round probes each node at most twice and the rounds thin out.
func TestNotLeaderBacksOff(t *testing.T) {
	nodes := []*node{serve(t, &node{}), serve(t, &node{}), serve(t, &node{})}
	var targets []string
	for i, n := range nodes {
		next := nodes[(i+1)%3]
		n.answer = func(int64) error { return notLeaderErr(t, next.addr) }
		targets = append(targets, n.addr)
	}
	rec := &recorder{limit: 100 * time.Second}
	d := newDialer(t, Config{Targets: targets, Sleep: rec.sleep})
	_, err := Find(context.Background(), d, join)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Find = %v, want the recorder's context.Canceled after 100 simulated seconds", err)
	}
	var attempts int64
	for _, n := range nodes {
		attempts += n.calls.Load()
	}
	rounds := len(rec.waits)
	// Each wait is jittered over [b/2, b] with b = 250ms·2^k capped at 30s.
	for k, w := range rec.waits {
		b := min(DefaultBackoffInitial<<k, DefaultBackoffMax)
		if w < b/2 || w > b {
			t.Errorf("wait %d = %s, want within [%s, %s]", k, w, b/2, b)
		}
	}
	if rounds < 5 || rounds > 13 {
		t.Errorf("rounds in 100 simulated seconds = %d, want 5..13 (waits %v)", rounds, rec.waits)
	}
	if max := int64(6 * rounds); attempts > max || attempts < int64(3*rounds) {
		t.Errorf("attempts = %d over %d rounds, want %d..%d (3 nodes, each re-asked once on a hint)", attempts, rounds, 3*rounds, max)
	}
	if attempts >= 100 {
		t.Errorf("attempts in 100 simulated seconds = %d, want < 100 (it was 389)", attempts)
	}
	t.Logf("%d attempts in %d rounds over %s simulated", attempts, rounds, rec.total.Round(time.Millisecond))
}

// TestHintTriedAtOnce: a leader that refused the first probe (it was still
// being elected) is asked again in the same round when a follower names
// it: no backoff wait.
func TestHintTriedAtOnce(t *testing.T) {
	leaderNode := serve(t, &node{})
	leaderNode.answer = func(call int64) error {
		if call == 1 {
			return notLeaderErr(t, "") // becoming the leader
		}
		return nil
	}
	release := make(chan struct{})
	follower := serve(t, &node{})
	follower.answer = func(int64) error {
		<-release // answers after the leader's first refusal
		return notLeaderErr(t, leaderNode.addr)
	}
	rec := &recorder{}
	d := newDialer(t, Config{Targets: []string{follower.addr, leaderNode.addr}, Sleep: rec.sleep})
	probe := func(ctx context.Context, cc *grpc.ClientConn) (*pb.JoinResponse, error) {
		r, err := join(ctx, cc)
		if cc.Target() == leaderNode.addr && err != nil {
			close(release)
		}
		return r, err
	}
	res, err := Find(context.Background(), d, probe)
	if err != nil || res.Target != leaderNode.addr {
		t.Fatalf("Find = %s, %v; want the leader %s", res.Target, err, leaderNode.addr)
	}
	if len(rec.waits) != 0 {
		t.Errorf("waits = %v, want none: the hint is tried at once", rec.waits)
	}
	if got := leaderNode.calls.Load(); got != 2 {
		t.Errorf("leader asked %d times, want 2", got)
	}
}

// TestFindGivesUp: Find ends with a clear error rather than hanging.
func TestFindGivesUp(t *testing.T) {
	electing := serve(t, &node{})
	electing.answer = func(int64) error { return notLeaderErr(t, "") }
	denied := serve(t, &node{})
	denied.answer = func(int64) error { return status.Error(codes.PermissionDenied, "not an admin") }
	tests := []struct {
		name     string
		cfg      Config
		probe    Probe[*pb.ListJobsResponse]
		wantErr  error
		wantCode codes.Code
	}{
		{"all unreachable, fail fast", Config{Targets: []string{refused(t), refused(t)}, FailFast: true, AttemptTimeout: 200 * time.Millisecond},
			listJobs, ErrNoLeader, codes.DeadlineExceeded},
		{"electing past patience", Config{Targets: []string{electing.addr}, FailFast: true, Patience: 100 * time.Millisecond, BackoffInitial: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond},
			listJobs, ErrNoLeader, codes.Unavailable},
		{"final refusal", Config{Targets: []string{denied.addr, electing.addr}},
			func(ctx context.Context, cc *grpc.ClientConn) (*pb.ListJobsResponse, error) {
				r, err := listJobs(ctx, cc)
				if status.Code(err) == codes.PermissionDenied {
					return nil, Final(err)
				}
				return r, err
			}, nil, codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newDialer(t, tt.cfg)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_, err := Find(ctx, d, tt.probe)
			if err == nil {
				t.Fatal("Find = nil error, want one")
			}
			if ctx.Err() != nil {
				t.Fatalf("Find ran until the test's deadline: %v", err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("Find = %v, want %v", err, tt.wantErr)
			}
			if got := status.Code(err); got != tt.wantCode {
				t.Errorf("Find's code = %s, want %s (err %v)", got, tt.wantCode, err)
			}
		})
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want string
	}{
		{"no targets", Config{}, "list at least one"},
		{"empty target", Config{Targets: []string{"a:1", ""}}, "address 2 is empty"},
		{"duplicate", Config{Targets: []string{"a:1", "a:1"}}, `"a:1" is listed twice`},
		{"negative", Config{Targets: []string{"a:1"}, Patience: -1}, "negative duration"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%+v) = %v, want an error containing %q", tt.cfg, err, tt.want)
			}
		})
	}
}

// BenchmarkFindWithOneDown measures finding the leader of three
// coordinators, one of them blackholed, on a fresh dialer each time (an
// admin command's start).
func BenchmarkFindWithOneDown(b *testing.B) {
	leaderNode := serve(b, &node{answer: ok})
	follower := serve(b, &node{})
	follower.answer = func(int64) error { return notLeaderErr(b, leaderNode.addr) }
	targets := []string{blackhole(b), follower.addr, leaderNode.addr}
	for b.Loop() {
		d, err := New(Config{Targets: targets, DialOptions: insecureDial, AttemptTimeout: 10 * time.Second, FailFast: true})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := Find(context.Background(), d, listJobs); err != nil {
			b.Fatal(err)
		}
		d.Close()
	}
}
