package server

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// vmRSS returns this process's resident set size in bytes (VmRSS of
// /proc/self/status); 0 where there is none.
func vmRSS() float64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb * 1024
		}
	}
	return 0
}

// BenchmarkJoinFlood measures the RSS of a coordinator (served over
// bufconn with cmd/cohort's 8 MiB message bound and the default limits;
// the client runs in the same process) under, each iteration, 1,000
// Joins of one site and 30 Joins with 7 MB capabilities (refused by
// size). It reports RSS before the first iteration, after the first
// iteration's flood, and after the last iteration, as is and after a GC
// that returns freed memory to the OS, and their ratios to before. Run it with
//
//	go test ./server/ -run '^$' -bench BenchmarkJoinFlood -benchtime=1x
func BenchmarkJoinFlood(b *testing.B) {
	c := newLimitsCluster(b, Config{}, nil)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return c.lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	cli := pb.NewCoordinatorServiceClient(cc)
	ctx := context.Background()
	small := &pb.Capabilities{Trainers: []string{"mlp"}}
	huge := &pb.Capabilities{Datasets: []string{strings.Repeat("x", 7<<20)}}
	if _, err := cli.Join(ctx, &pb.JoinRequest{SiteName: "warm-up", Capabilities: small}); err != nil {
		b.Fatal(err)
	}
	settle := func() float64 {
		runtime.GC()
		debug.FreeOSMemory()
		return vmRSS()
	}
	before := settle()
	var refusedFlood, refusedBig, iter int
	var afterFlood float64
	for b.Loop() {
		for range 1000 {
			if _, err := cli.Join(ctx, &pb.JoinRequest{SiteName: "site-1", Capabilities: small}); err != nil {
				refusedFlood++
			}
		}
		if iter == 0 {
			afterFlood = vmRSS()
		}
		for i := range 30 {
			if _, err := cli.Join(ctx, &pb.JoinRequest{SiteName: fmt.Sprintf("big-%d-%d", iter, i), Capabilities: huge}); statusCode(err) == "InvalidArgument" {
				refusedBig++
			}
		}
		iter++
	}
	b.StopTimer()
	after := vmRSS()
	settled := settle()
	const mib = 1 << 20
	b.ReportMetric(before/mib, "rss_before_MiB")
	b.ReportMetric(afterFlood/mib, "rss_after_flood_MiB")
	b.ReportMetric(afterFlood/before, "rss_ratio_flood")
	b.ReportMetric(after/mib, "rss_after_MiB")
	b.ReportMetric(settled/mib, "rss_after_gc_MiB")
	b.ReportMetric(after/before, "rss_ratio")
	b.ReportMetric(settled/before, "rss_ratio_gc")
	b.ReportMetric(float64(refusedFlood)/float64(iter), "flood_refused/iter")
	b.ReportMetric(float64(refusedBig)/float64(iter), "big_refused/iter")
	c.coord.mu.Lock()
	pending := len(c.coord.pending)
	c.coord.mu.Unlock()
	b.ReportMetric(float64(pending), "pending_joins")
}
