package server

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"google.golang.org/grpc/status"

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
