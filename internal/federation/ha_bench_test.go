package federation

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/cohortfl/cohort/client"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
)

// BenchmarkFailover measures, on a three-coordinator cluster in memory
// with the production raft timeouts (ha.Config's zero values) and the
// sites' default backoff, the time from killing the leader mid-job to a
// new leader, and to the next round committed on it (the round itself
// included: the round time measured before the kill is reported beside
// it). Each iteration builds a fresh cluster; run it with -benchtime=3x.
func BenchmarkFailover(b *testing.B) {
	_, ds, store, _ := haSetup(b)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	d := coordDeps{ds: ds, store: store, log: log}
	src := []byte(fmt.Sprintf(haJob, subset, 1000))
	var elected, next, roundTime time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		c := newHACluster(b, 3, ha.Config{})
		var nodes []*haNode
		for k := range c.peers {
			nodes = append(nodes, c.start(k, d))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		wait := startAgents(b, ctx, []string{"site-1", "site-2"}, ds, c.targets(), c.sb.dialOptions(), log, client.Config{DrainTimeout: -1})
		sub := leaderCall(ctx, b, c.sb, c.targets(), func(ctx context.Context, c pb.JobsServiceClient) (*pb.SubmitJobResponse, error) {
			return c.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: src})
		})
		id := sub.GetJob().GetJobId()
		leader := waitLeader(b, nodes)
		waitRound(b, leader, id, 2)
		t2 := time.Now()
		waitRound(b, leader, id, 3)
		roundTime += time.Since(t2)
		b.StartTimer()
		killed := time.Now()
		leader.stop()
		r0, _, _ := leader.node.FSM().LastRound(id, "fedavg")
		var rest []*haNode
		for _, n := range nodes {
			if n != leader {
				rest = append(rest, n)
			}
		}
		waitLeader(b, rest)
		elected += time.Since(killed)
		waitRound(b, rest[0], id, r0+1)
		next += time.Since(killed)
		b.StopTimer()
		cancel()
		stopWithin(b, "stopping the site agents", wait)
		for _, n := range rest {
			n.stop()
		}
	}
	b.ReportMetric(elected.Seconds()/float64(b.N), "s-to-leader")
	b.ReportMetric(next.Seconds()/float64(b.N), "s-to-next-commit")
	b.ReportMetric(roundTime.Seconds()/float64(b.N), "s-per-round")
}
