package federation

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// benchSites is BenchmarkThousandSites' number of sites: a process holds
// two descriptors a site, so the open-files limit bounds it.
var benchSites = flag.Int("sites", 1000, "BenchmarkThousandSites: how many site agents to connect")

// BenchmarkThousandSites connects 1,000 site agents (-sites N), each with its own
// gRPC connection over loopback TCP, to one coordinator and runs rounds of
// a small model (logistic regression on Synthetic(0,0), 20 samples a
// site). It reports the orchestration overhead of a round — its wall time
// beyond the slowest site's task — and the memory each idle connected
// site costs (coordinator and agent together, as both run in this
// process).
//
//	go test -run XXX -bench ThousandSites -benchtime 1x ./internal/federation
func BenchmarkThousandSites(b *testing.B) {
	const rounds = 3
	sites := *benchSites
	joined := &messageCounter{msg: "site_connected", want: int64(sites), done: make(chan struct{})}
	log := slog.New(joined)
	src := []byte(fmt.Sprintf(`
name: scale
seed: 1
data: {dataset: synthetic, synthetic: {alpha: 0, beta: 0, samples_per_site: 20}, test_fraction: 0}
model: {kind: logreg}
sites: {count: %d}
rounds: %d
train: {epochs: 1, batch_size: 10, lr: 0.05}
eval: {every: %d}
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 2m}
`, sites, rounds, rounds))
	spec, err := job.Parse(src)
	if err != nil {
		b.Fatal(err)
	}
	ds, err := Load(context.Background(), spec, "")
	if err != nil {
		b.Fatal(err)
	}
	store, err := tracking.OpenSQLite(context.Background(), filepath.Join(b.TempDir(), "cohort.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	lis, err := net.Listen("tcp", "127.0.0.1:0") // held by the server: no port is reused
	if err != nil {
		b.Fatal(err)
	}
	addr := lis.Addr().String()

	runtime.GC()
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	stop := startCoordinator(b, "coord", lis, coordDeps{ds: ds, store: store, log: log})
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	wait := startAgents(b, ctx, spec.Sites.Names, ds, []string{addr}, dial, log, client.Config{})
	defer stopWithin(b, "stopping the site agents", func() { cancel(); wait() })
	cc, err := grpc.NewClient(addr, dial...)
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	jobs := pb.NewJobsServiceClient(cc)
	// Wait until every site has joined: a job that names 1,000 sites
	// starts its first round then.
	select {
	case <-joined.done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("%d of %d sites connected in 2 minutes", joined.count.Load(), sites)
	}
	// Two collections: gRPC pools its transport buffers in sync.Pools,
	// which hold what they keep until the second collection; an idle
	// process returns them, so they are not an idle site's cost.
	runtime.GC()
	runtime.GC()
	var idle runtime.MemStats
	runtime.ReadMemStats(&idle)
	idleKiB := float64(idle.HeapInuse-before.HeapInuse) / float64(sites) / 1024
	goroutines := float64(runtime.NumGoroutine()) / float64(sites)

	b.ResetTimer()
	var overhead, wall []float64
	for b.Loop() {
		resp, err := jobs.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: src})
		if err != nil {
			b.Fatal(err)
		}
		id := resp.GetJob().GetJobId()
		st, err := jobs.WatchJob(ctx, &pb.WatchJobRequest{JobId: id})
		if err != nil {
			b.Fatal(err)
		}
		var started time.Time
		var jobWall []float64
		for {
			ev, err := st.Recv()
			if err != nil {
				break
			}
			switch ev.GetKind() {
			case "round_started":
				started = time.UnixMilli(ev.GetUnixMs())
			case "round_committed":
				if ev.GetRound() == 1 {
					continue // the first round waits for every site to connect
				}
				jobWall = append(jobWall, time.UnixMilli(ev.GetUnixMs()).Sub(started).Seconds())
			}
		}
		got, err := jobs.GetJob(ctx, &pb.GetJobRequest{JobId: id})
		if err != nil || got.GetJob().GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
			b.Fatalf("job: %v %v", got.GetJob(), err)
		}
		// The slowest site's task, from its site run's train_seconds.
		arms, err := store.ChildRuns(ctx, got.GetJob().GetTrackingRunId())
		if err != nil || len(arms) != 1 {
			b.Fatalf("arm runs: %v %v", arms, err)
		}
		siteRuns, err := store.ChildRuns(ctx, arms[0].Info.RunID)
		if err != nil {
			b.Fatal(err)
		}
		slowest := make(map[int64]float64)
		for _, sr := range siteRuns {
			h, err := store.GetMetricHistory(ctx, sr.Info.RunID, "train_seconds")
			if err != nil {
				b.Fatal(err)
			}
			for _, m := range h {
				slowest[m.Step] = max(slowest[m.Step], m.Value)
			}
		}
		for i, w := range jobWall {
			wall = append(wall, w)
			overhead = append(overhead, w-slowest[int64(i+2)])
		}
	}
	b.StopTimer()
	mean := func(xs []float64) float64 {
		s := 0.0
		for _, x := range xs {
			s += x
		}
		return s / float64(max(1, len(xs)))
	}
	b.ReportMetric(idleKiB, "KiB/idle-site")
	b.ReportMetric(goroutines, "goroutines/site")
	b.ReportMetric(mean(wall), "s/round")
	b.ReportMetric(mean(overhead), "s-overhead/round")
}

// messageCounter is a log handler that discards every record and closes
// done once want records carried the message msg.
type messageCounter struct {
	msg   string
	want  int64
	count atomic.Int64
	done  chan struct{}
}

func (m *messageCounter) Enabled(_ context.Context, l slog.Level) bool { return l >= slog.LevelInfo }

func (m *messageCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Message == m.msg && m.count.Add(1) == m.want {
		close(m.done)
	}
	return nil
}

func (m *messageCounter) WithAttrs([]slog.Attr) slog.Handler { return m }
func (m *messageCounter) WithGroup(string) slog.Handler      { return m }
