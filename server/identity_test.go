package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// asSite is a context whose gRPC peer presented a certificate for cn.
func asSite(cn string) context.Context {
	cert := &x509.Certificate{Subject: pkix.Name{CommonName: cn}}
	return peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{
		State: tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert}}}})
}

func TestCheckUpdate(t *testing.T) {
	task := &pendingTask{id: "t1", site: "kit", job: "j1", arm: "fedavg", round: 3}
	tests := []struct {
		name string
		ctx  context.Context
		h    *pb.UpdateHeader
		want error
	}{
		{"the task's site", asSite("kit"), &pb.UpdateHeader{JobId: "j1", Arm: "fedavg", Round: 3}, nil},
		{"no TLS, no names", context.Background(), &pb.UpdateHeader{}, nil},
		{"another site's certificate", asSite("unibo"), &pb.UpdateHeader{JobId: "j1", Arm: "fedavg", Round: 3}, ErrNotYourTask},
		{"another job", asSite("kit"), &pb.UpdateHeader{JobId: "j2", Arm: "fedavg", Round: 3}, ErrTaskMismatch},
		{"another arm", asSite("kit"), &pb.UpdateHeader{JobId: "j1", Arm: "fedprox", Round: 3}, ErrTaskMismatch},
		{"another round", context.Background(), &pb.UpdateHeader{Round: 4}, ErrTaskMismatch},
	}
	for _, tt := range tests {
		err := task.checkUpdate(tt.ctx, tt.h)
		if !errors.Is(err, tt.want) || (tt.want == nil) != (err == nil) {
			t.Errorf("%s: checkUpdate = %v, want %v", tt.name, err, tt.want)
		}
	}
	if got := status.Code(toStatus(task.checkUpdate(asSite("unibo"), &pb.UpdateHeader{}))); got != codes.PermissionDenied {
		t.Errorf("another site's update maps to %s, want PermissionDenied", got)
	}
}

// TestUpdateForAnotherRoundIsRefused: a site whose update names another
// round than its task is refused with FailedPrecondition; the round goes
// on with the others.
func TestUpdateForAnotherRoundIsRefused(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wrongRound := func(ctx context.Context, cli pb.CoordinatorServiceClient, task *pb.Task, w *model.Weights, n int64) error {
		b, err := model.MarshalSafetensors(w, nil)
		if err != nil {
			return err
		}
		return pushHeader(ctx, cli, &pb.UpdateHeader{TaskId: task.GetTaskId(), JobId: task.GetJobId(), Arm: task.GetArm(),
			Round: task.GetRound() + 1, NumSamples: n, TotalSize: int64(len(b)), Sha256: sha256Of(b)}, b)
	}
	bad := &fakeSite{name: "site-3", update: plusOne(10), push: wrongRound, results: make(chan string, 10)}
	c.startSite(t, ctx, &fakeSite{name: "site-1", update: plusOne(100)})
	c.startSite(t, ctx, &fakeSite{name: "site-2", update: plusOne(100)})
	c.startSite(t, ctx, bad)
	j := submit(t, c, fmt.Sprintf(testJob, 2, "30s"))
	if got := waitJob(t, c, j.GetJobId()); got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s (%s), want SUCCEEDED with the two good sites", got.GetState(), got.GetError())
	}
	if r := <-bad.results; !contains(r, "FailedPrecondition") || !contains(r, "round") {
		t.Errorf("the wrong-round push = %q, want FailedPrecondition naming the round", r)
	}
}
