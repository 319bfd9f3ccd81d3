package federation

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// BenchmarkVirtualClients runs rounds of 1,000 of 20,000,000 virtual
// clients (logistic regression on a synthetic pool) over 2 workers, in
// one process with the coordinator. It reports a round's wall time, its
// orchestration overhead (the wall time beyond the slowest worker's
// training of its clients) and the heap the process holds after the job
// beyond what it held before (the coordinator's and the workers' together).
//
//	go test -run XXX -bench VirtualClients -benchtime 1x ./internal/federation
func BenchmarkVirtualClients(b *testing.B) {
	const rounds, workers = 4, 2
	src := []byte(fmt.Sprintf(`
name: virtual-scale
seed: 1
data: {dataset: synthetic, synthetic: {alpha: 0, beta: 0}, test_fraction: 0.1, partition: {kind: dirichlet, alpha: 0.5}}
model: {kind: logreg}
sites: {virtual: 20000000, per_round: 1000, workers: %d}
rounds: %d
train: {epochs: 1, batch_size: 16, lr: 0.05}
arms: [{name: fedavg, strategy: fedavg}]
deadline: {round: 2m}
`, workers, rounds))
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
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := lis.Addr().String()
	joined := &messageCounter{msg: "site_connected", want: workers, done: make(chan struct{})}
	log := slog.New(joined)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	stop := startCoordinator(b, "coord", lis, coordDeps{ds: ds, store: store, log: log})
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	wait := startAgents(b, ctx, spec.Sites.Names, ds, []string{addr}, dial, log, client.Config{})
	defer stopWithin(b, "stopping the workers", func() { cancel(); wait() })
	cc, err := grpc.NewClient(addr, dial...)
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	jobs := pb.NewJobsServiceClient(cc)
	select {
	case <-joined.done:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d workers connected in a minute", joined.count.Load(), workers)
	}

	var wall, overhead []float64
	for b.Loop() {
		jt := timeJob(ctx, b, jobs, store, src, 1, "", nil)
		if jt.sites != workers {
			b.Errorf("%d site runs, want one per worker (%d)", jt.sites, workers)
		}
		wall, overhead = append(wall, jt.wall...), append(overhead, jt.overhead...)
	}
	b.StopTimer()
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	b.ReportMetric(mean(wall), "s/round")
	b.ReportMetric(mean(overhead), "s-overhead/round")
	b.ReportMetric(float64(int64(after.HeapInuse)-int64(before.HeapInuse))/(1<<20), "MiB-heap-held")
	b.ReportMetric(float64(after.Sys)/(1<<20), "MiB-sys")
}
