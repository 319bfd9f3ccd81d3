package client

import (
	"context"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/data"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/train"
)

// stopper is a trainer whose persistent workers can be stopped; it records
// which.
type stopper struct {
	train.Trainer
	stopped chan string
}

func (s stopper) StopWorker(key string) { s.stopped <- key }

// TestRetireFinishedArmWorker: when a job's next arm reaches a site, the
// previous arm's persistent worker is stopped, once; a task of the same arm
// or of another job stops nothing.
func TestRetireFinishedArmWorker(t *testing.T) {
	a := &Agent{cfg: Config{Name: "kit"}}
	s := stopper{stopped: make(chan string, 8)}
	for _, task := range []*pb.Task{
		{JobId: "j1", Arm: "centralized"},
		{JobId: "j1", Arm: "centralized"},
		{JobId: "j2", Arm: "fedavg"},
		{JobId: "j1", Arm: "fedavg"},
		{JobId: "j1", Arm: "fedavg"},
		{JobId: "j1", Arm: "fedprox"},
	} {
		a.retire(s, task)
	}
	a.wg.Wait()
	close(s.stopped)
	var got []string
	for k := range s.stopped {
		got = append(got, k)
	}
	slices.Sort(got)
	if want := []string{"kit/j1/centralized", "kit/j1/fedavg"}; !slices.Equal(got, want) {
		t.Errorf("workers stopped = %v, want %v", got, want)
	}
}

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

// fakeCoordinator answers Join with join and refuses sessions with
// session, counting the joins.
type fakeCoordinator struct {
	pb.UnimplementedCoordinatorServiceServer
	addr    string
	joins   atomic.Int64
	join    func() error
	session func() error
}

func (f *fakeCoordinator) Join(context.Context, *pb.JoinRequest) (*pb.JoinResponse, error) {
	f.joins.Add(1)
	if err := f.join(); err != nil {
		return nil, err
	}
	return &pb.JoinResponse{SessionId: "s"}, nil
}

func (f *fakeCoordinator) Session(grpc.BidiStreamingServer[pb.SiteMessage, pb.CoordinatorMessage]) error {
	return f.session()
}

// serveFake serves f on a loopback listener kept open until the test ends.
func serveFake(t *testing.T, f *fakeCoordinator) *fakeCoordinator {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	gs := grpc.NewServer()
	pb.RegisterCoordinatorServiceServer(gs, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(lis) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return f
}

type noData struct{}

func (noData) Load(context.Context, string, pb.TaskKind) (*data.Dataset, *data.Dataset, error) {
	return nil, nil, nil
}

type noTrainers struct{}

func (noTrainers) Trainer(train.Config) (train.Trainer, error) { return nil, nil }

// TestNotLeaderDoesNotResetBackoff: a site facing a cluster that keeps
// answering NOT_LEADER (followers naming each other, or a leader that
// accepts the join and steps down before the session) backs off rather
// than retrying every 250 ms: it made 389 attempts in 100 s before.
func TestNotLeaderDoesNotResetBackoff(t *testing.T) {
	tests := []struct {
		name string
		// setup makes three nodes answer; attemptsPerRound bounds the
		// joins a round may make.
		setup            func(t *testing.T, nodes []*fakeCoordinator)
		attemptsPerRound int
	}{
		{"followers name each other", func(t *testing.T, nodes []*fakeCoordinator) {
			for i, n := range nodes {
				next := nodes[(i+1)%3]
				n.join = func() error { return notLeaderErr(t, next.addr) }
			}
		}, 6},
		{"leader steps down before each session", func(t *testing.T, nodes []*fakeCoordinator) {
			nodes[0].join = func() error { return nil }
			nodes[0].session = func() error { return notLeaderErr(t, nodes[0].addr) }
			for _, n := range nodes[1:] {
				n.join = func() error { return notLeaderErr(t, nodes[0].addr) }
			}
		}, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := make([]*fakeCoordinator, 3)
			var targets []string
			for i := range nodes {
				nodes[i] = &fakeCoordinator{session: func() error { return status.Error(codes.Internal, "unused") }}
				serveFake(t, nodes[i])
				targets = append(targets, nodes[i].addr)
			}
			tt.setup(t, nodes)
			a, err := New(Config{Name: "kit", Targets: targets, DialOptions: []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}}, noData{}, noTrainers{}, nil)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			var mu sync.Mutex
			var waits []time.Duration
			var simulated time.Duration
			a.sleep = func(ctx context.Context, d time.Duration) error {
				mu.Lock()
				defer mu.Unlock()
				waits = append(waits, d)
				if simulated += d; simulated >= 100*time.Second {
					cancel() // 100 simulated seconds: stop the site
				}
				return ctx.Err()
			}
			if err := a.Run(ctx); err != nil {
				t.Fatalf("Run = %v, want nil once stopped", err)
			}
			var joins int64
			for _, n := range nodes {
				joins += n.joins.Load()
			}
			mu.Lock()
			defer mu.Unlock()
			for k, w := range waits {
				if b := min(250*time.Millisecond<<k, 30*time.Second); w < b/2 || w > b {
					t.Errorf("wait %d = %s, want within [%s, %s]: the backoff doubles", k, w, b/2, b)
				}
			}
			if max := int64(tt.attemptsPerRound * len(waits)); joins > max {
				t.Errorf("joins = %d over %d waits, want ≤ %d", joins, len(waits), max)
			}
			if joins >= 100 {
				t.Errorf("joins in 100 simulated seconds = %d, want < 100 (it was 389)", joins)
			}
			t.Logf("%d joins, %d waits over %s simulated", joins, len(waits), simulated.Round(time.Millisecond))
		})
	}
}
