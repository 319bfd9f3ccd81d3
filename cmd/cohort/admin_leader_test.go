package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// fakeNode is a coordinator's Jobs API for the admin commands' tests: it
// leads while leads() says so, refusing otherwise with NOT_LEADER and the
// hint hint(); watch serves WatchJob.
type fakeNode struct {
	pb.UnimplementedJobsServiceServer
	addr    string
	gs      *grpc.Server
	leads   func() bool
	hint    func() string
	cluster *pb.ClusterStatusResponse
	watch   func(*pb.WatchJobRequest, grpc.ServerStreamingServer[pb.JobEvent]) error
}

func (f *fakeNode) notLeader() error {
	if f.leads() {
		return nil
	}
	md := map[string]string{}
	if h := f.hint(); h != "" {
		md[pb.LeaderAddressKey] = h
	}
	st, _ := status.New(codes.Unavailable, "coordinator "+f.addr+" is not the leader").WithDetails(&errdetails.ErrorInfo{Reason: pb.NotLeaderReason, Domain: pb.ErrorDomain, Metadata: md})
	return st.Err()
}

func (f *fakeNode) ListJobs(context.Context, *pb.ListJobsRequest) (*pb.ListJobsResponse, error) {
	if err := f.notLeader(); err != nil {
		return nil, err
	}
	return &pb.ListJobsResponse{Jobs: []*pb.Job{{JobId: "job-1", Name: "on-" + f.addr}}}, nil
}

func (f *fakeNode) ClusterStatus(context.Context, *pb.ClusterStatusRequest) (*pb.ClusterStatusResponse, error) {
	return f.cluster, nil
}

func (f *fakeNode) WatchJob(req *pb.WatchJobRequest, s grpc.ServerStreamingServer[pb.JobEvent]) error {
	if err := f.notLeader(); err != nil {
		return err
	}
	return f.watch(req, s)
}

// serveNode serves f on a loopback listener kept open until the test ends.
func serveNode(t *testing.T, f *fakeNode) *fakeNode {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f.addr = lis.Addr().String()
	f.gs = grpc.NewServer()
	pb.RegisterJobsServiceServer(f.gs, f)
	done := make(chan struct{})
	go func() { defer close(done); _ = f.gs.Serve(lis) }()
	t.Cleanup(func() { f.gs.Stop(); <-done })
	if f.hint == nil {
		f.hint = func() string { return "" }
	}
	return f
}

// blackholeAddr accepts connections and never answers, until the test ends.
func blackholeAddr(t *testing.T) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
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

// adminKit writes a plaintext admin.yaml listing addrs.
func adminKit(t *testing.T, addrs ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "admin.yaml")
	if err := os.WriteFile(path, []byte(fmt.Sprintf("name: alice\ncoordinators: [%s]\n", strings.Join(addrs, ", "))), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func always(v bool) func() bool { return func() bool { return v } }

// TestAdminCommandWithCoordinatorDown: `cohort jobs` with one of three
// coordinators blackholed (listed first) answers from the leader in well
// under a second; it took 10 s per coordinator down.
func TestAdminCommandWithCoordinatorDown(t *testing.T) {
	lead := serveNode(t, &fakeNode{leads: always(true)})
	follower := serveNode(t, &fakeNode{leads: always(false), hint: func() string { return lead.addr }})
	kit := adminKit(t, blackholeAddr(t), follower.addr, lead.addr)
	var out, errb bytes.Buffer
	began := time.Now()
	err := jobsCmd(context.Background(), []string{"-c", kit}, &out, &errb)
	took := time.Since(began)
	if err != nil {
		t.Fatalf("jobs = %v (stderr %s)", err, errb.String())
	}
	if want := "on-" + lead.addr; !strings.Contains(out.String(), want) {
		t.Errorf("jobs printed %q, want the leader's job list (%s)", out.String(), want)
	}
	if took > time.Second {
		t.Errorf("jobs with one coordinator of three blackholed took %s, want < 1s", took)
	}
	t.Logf("jobs with one of three blackholed: %s", took)
}

// TestClusterStatusNeedsALeader: `cohort cluster status` fails (non-zero
// exit) when no coordinator leads, naming what to check, and succeeds
// when one does, even with another unreachable.
func TestClusterStatusNeedsALeader(t *testing.T) {
	t.Parallel() // in process, its own fake nodes; waits out one 5 s timeout
	node := func(id, state string) string {
		return serveNode(t, &fakeNode{leads: always(state == "leader"), cluster: &pb.ClusterStatusResponse{NodeId: id, State: state, LastContactMs: -1}}).addr
	}
	tests := []struct {
		name  string
		addrs []string
		want  string // in the error; "" for success
	}{
		{"leader and follower, one down", []string{blackholeAddr(t), node("c1", "leader"), node("c2", "follower")}, ""},
		{"standalone", []string{node("solo", "standalone")}, ""},
		{"followers and a candidate", []string{node("c1", "follower"), node("c2", "candidate")}, "no leader: 2 of 2 coordinators answered and none leads; check that a majority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			began := time.Now()
			err := clusterCmd(ctx, []string{"status", "-c", adminKit(t, tt.addrs...)}, &out, &errb)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("cluster status = %v, want success\n%s", err, out.String())
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("cluster status = %v, want an error containing %q\n%s", err, tt.want, out.String())
			}
			// The nodes are asked at once: one blackholed costs one
			// timeout (5 s), not one per node.
			if took := time.Since(began); took > 8*time.Second {
				t.Errorf("cluster status took %s, want < 8s", took)
			}
		})
	}
}

// TestLogsFollowSurvivesFailover: `cohort logs -f` on a leader that fails
// mid-job (it says it no longer leads, or it dies) goes on on the new
// leader, after the last event it printed: no event twice, none lost, and
// no exit before the job ends.
func TestLogsFollowSurvivesFailover(t *testing.T) {
	base := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC).UnixMilli()
	events := []*pb.JobEvent{
		{UnixMs: base, JobId: "j", Kind: "job_started"},
		{UnixMs: base + 5, JobId: "j", Kind: "round_started", Arm: "fedavg", Round: 1, Rounds: 2},
		{UnixMs: base + 5, JobId: "j", Kind: "site_reported", Arm: "fedavg", Round: 1, Rounds: 2, Site: "kit"},
		{UnixMs: base + 9, JobId: "j", Kind: "round_committed", Arm: "fedavg", Round: 1, Rounds: 2},
		{UnixMs: base + 20, JobId: "j", Kind: "job_queued", Message: "coordinator c2 resumes the job"},
		{UnixMs: base + 30, JobId: "j", Kind: "job_finished", State: pb.JobState_JOB_STATE_SUCCEEDED},
	}
	for _, killed := range []bool{false, true} {
		t.Run(fmt.Sprintf("leader killed %v", killed), func(t *testing.T) {
			var leaderIdx atomic.Int32 // 0: a leads, 1: b leads
			var a, b *fakeNode
			a = serveNode(t, &fakeNode{leads: func() bool { return leaderIdx.Load() == 0 }, hint: func() string { return b.addr }})
			b = serveNode(t, &fakeNode{leads: func() bool { return leaderIdx.Load() == 1 }, hint: func() string { return a.addr }})
			sent := make(chan struct{})
			a.watch = func(_ *pb.WatchJobRequest, s grpc.ServerStreamingServer[pb.JobEvent]) error {
				for _, ev := range events[:3] {
					if err := s.Send(ev); err != nil {
						return err
					}
				}
				leaderIdx.Store(1) // a failover
				if killed {
					close(sent)
					<-s.Context().Done() // the test stops this server
					return s.Context().Err()
				}
				return a.notLeader()
			}
			// The new leader replays the job's events from the start,
			// then the ones after the failover.
			b.watch = func(_ *pb.WatchJobRequest, s grpc.ServerStreamingServer[pb.JobEvent]) error {
				for _, ev := range events {
					if err := s.Send(ev); err != nil {
						return err
					}
				}
				return nil
			}
			if killed {
				go func() { <-sent; a.gs.Stop() }()
			}
			var out, errb bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if err := logsCmd(ctx, []string{"-c", adminKit(t, a.addr, b.addr), "-f", "j"}, &out, &errb); err != nil {
				t.Fatalf("logs -f = %v, want it to follow the job to its end on the new leader\nstdout:\n%s\nstderr:\n%s", err, out.String(), errb.String())
			}
			lines := strings.Split(strings.TrimSpace(out.String()), "\n")
			var kinds []string
			for _, l := range lines {
				kinds = append(kinds, strings.Fields(l)[1])
			}
			want := []string{"job_started", "round_started", "site_reported", "round_committed", "job_queued", "job_finished"}
			if strings.Join(kinds, ",") != strings.Join(want, ",") {
				t.Errorf("logs -f printed events %v, want %v once each\n%s", kinds, want, out.String())
			}
			if !strings.Contains(errb.String(), "following job j on the next leader") {
				t.Errorf("stderr = %q, want it to say it follows the job on the next leader", errb.String())
			}
		})
	}
}
