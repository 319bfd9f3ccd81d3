package server

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/status"

	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// TestSubmitJobLimits: SubmitJob refuses a job past the spec's limits with
// InvalidArgument and a message naming the limit and the fix.
func TestSubmitJobLimits(t *testing.T) {
	job := func(name, sites string) []byte {
		return fmt.Appendf(nil, "name: %s\ndata: {dataset: fashion-mnist}\nmodel: {kind: logreg}\nsites: %s\nrounds: 1\narms: [{name: fedavg, strategy: fedavg}]\n", name, sites)
	}
	tests := []struct {
		name string
		yaml []byte
		want string
	}{
		{"100k-character name", job(strings.Repeat("x", 100_000), "{count: 2}"), "name: 100000 characters"},
		{"name past 200", job(strings.Repeat("n", 201), "{count: 2}"), "is longer than 200; shorten the job's name"},
		{"100k sites", job("big", "{count: 100000}"), "sites.count: 100000 is more than 10000, the most a coordinator is sized for; lower it"},
		{"10,001 sites", job("big", "{count: 10001}"), "sites.count: 10001 is more than 10000"},
	}
	c := newCluster(t)
	cli := pb.NewJobsServiceClient(c.dial(t))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := cli.SubmitJob(context.Background(), &pb.SubmitJobRequest{JobYaml: tt.yaml})
			if got := statusCode(err); got != "InvalidArgument" {
				t.Fatalf("SubmitJob() code = %s (%v), want InvalidArgument", got, err)
			}
			if msg := status.Convert(err).Message(); !strings.Contains(msg, tt.want) {
				t.Errorf("SubmitJob() message %.300q does not say %q", msg, tt.want)
			}
		})
	}
}

// checkingModels refuses the jobs whose sites are simulated, as a deployed
// coordinator's models do, and counts its checks.
type checkingModels struct {
	fakeModels
	checks atomic.Int32
}

func (m *checkingModels) CheckSpec(ctx context.Context, spec *job.Spec) error {
	m.checks.Add(1)
	if spec.SimulatedSites() {
		return errors.New("sites: given by count alone; list them")
	}
	return nil
}

// TestSubmitRunsSpecChecker: the Go Submit and the SubmitJob RPC run the
// model provider's check alike: a refused job is InvalidArgument with the
// checker's message and is not queued; an accepted one queues.
func TestSubmitRunsSpecChecker(t *testing.T) {
	m := &checkingModels{}
	c := newClusterWith(t, 10*time.Second, m)
	cli := pb.NewJobsServiceClient(c.dial(t))
	src := func(sites string) []byte {
		return fmt.Appendf(nil, "name: x\ndata: {dataset: fashion-mnist}\nmodel: {kind: logreg}\nsites: %s\nrounds: 1\narms: [{name: fedavg, strategy: fedavg}]\n", sites)
	}
	submits := []struct {
		name   string
		submit func([]byte) error
	}{
		{"Submit", func(b []byte) error { _, err := c.coord.Submit(t.Context(), b); return err }},
		{"SubmitJob", func(b []byte) error {
			_, err := cli.SubmitJob(t.Context(), &pb.SubmitJobRequest{JobYaml: b})
			return err
		}},
	}
	for i, s := range submits {
		err := toStatus(s.submit(src("{count: 2}")))
		if got := statusCode(err); got != "InvalidArgument" {
			t.Errorf("%s(sites by count) code = %s (%v), want InvalidArgument", s.name, got, err)
		}
		if msg := status.Convert(err).Message(); !strings.Contains(msg, "sites: given by count alone; list them") {
			t.Errorf("%s(sites by count) message %q, want the checker's", s.name, msg)
		}
		if n := m.checks.Load(); n != int32(2*i+1) {
			t.Errorf("after %s(sites by count): %d checks, want %d", s.name, n, 2*i+1)
		}
		if err := s.submit(src("{names: [kit, unibo]}")); err != nil {
			t.Errorf("%s(named sites) = %v, want queued", s.name, err)
		}
	}
	resp, err := cli.ListJobs(t.Context(), &pb.ListJobsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if n := len(resp.GetJobs()); n != 2 {
		t.Errorf("ListJobs after two refusals and two submissions: %d jobs, want 2", n)
	}
}
