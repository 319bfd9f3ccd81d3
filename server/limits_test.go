package server

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gocmp "github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/test/bufconn"

	"github.com/cohortfl/cohort/job"
	"github.com/cohortfl/cohort/model"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

func TestSiteMetricKeys(t *testing.T) {
	m := map[string]float64{"num_samples": 1, "b": 1, "a": 1, strings.Repeat("k", 251): 1, "": 1}
	kept, dropped := siteMetricKeys(m)
	if fmt.Sprint(kept) != "[a b]" || len(dropped) != 2 {
		t.Errorf("siteMetricKeys = %v kept, %d dropped; want [a b], 2 (the empty and the over-long key)", kept, len(dropped))
	}
	many := make(map[string]float64)
	for i := range 5006 {
		many[fmt.Sprintf("m%05d", i)] = 1
	}
	many["train_loss"] = 1 // the agent's own come first
	kept, dropped = siteMetricKeys(many)
	if len(kept) != maxSiteMetrics || len(dropped) != 5007-maxSiteMetrics || kept[0] != "train_loss" || kept[1] != "m00000" {
		t.Errorf("5,007 keys: %d kept (first %v), %d dropped; want %d, [train_loss m00000 …], %d", len(kept), kept[:2], len(dropped), maxSiteMetrics, 5007-maxSiteMetrics)
	}
}

// TestFloodOfMetricsLosesNothingElse: an update with 5,006 metric keys
// (which made the whole site log-batch fail) is logged with its first 900
// keys, and the site's own figures are all there.
func TestFloodOfMetricsLosesNothingElse(t *testing.T) {
	c := newCluster(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	flood := func(ctx context.Context, cli pb.CoordinatorServiceClient, task *pb.Task, w *model.Weights, n int64) error {
		b, err := model.MarshalSafetensors(w, nil)
		if err != nil {
			return err
		}
		ms := map[string]float64{"train_loss": 0.5}
		for i := range 5006 {
			ms[fmt.Sprintf("junk_%05d", i)] = float64(i)
		}
		return pushHeader(ctx, cli, &pb.UpdateHeader{TaskId: task.GetTaskId(), NumSamples: n, TotalSize: int64(len(b)), Sha256: sha256Of(b), Metrics: ms}, b)
	}
	for _, n := range []string{"site-1", "site-2", "site-3"} {
		c.startSite(t, ctx, &fakeSite{name: n, update: plusOne(10), push: flood})
	}
	j := submit(t, c, fmt.Sprintf(testJob, 3, "30s"))
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	cmp, err := tracking.Compare(ctx, c.store, got.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	sites, _ := c.store.ChildRuns(ctx, cmp.Arms[0].RunID)
	if len(sites) != 3 {
		t.Fatalf("%d site runs, want 3", len(sites))
	}
	for _, s := range sites {
		for _, key := range []string{"accepted", "train_loss", "num_samples", "junk_00000"} {
			if h, _ := c.store.GetMetricHistory(ctx, s.Info.RunID, key); len(h) != 3 {
				t.Errorf("%s: %d %s points, want one per round (3)", s.Info.RunName, len(h), key)
			}
		}
		if h, _ := c.store.GetMetricHistory(ctx, s.Info.RunID, "junk_05005"); len(h) != 0 {
			t.Errorf("%s: junk_05005 logged; want it dropped (beyond %d keys)", s.Info.RunName, maxSiteMetrics)
		}
	}
}

// TestJoinBounds: capabilities over 64 KiB are refused with a message that
// names the size; a site that joins again and again holds one pending
// join, not one per Join.
func TestJoinBounds(t *testing.T) {
	c := newLimitsCluster(t, Config{JoinLimit: RateLimit{Rate: -1}}, nil) // the flood is not rate-limited here: see TestJoinFlood
	cli := pb.NewCoordinatorServiceClient(c.dial(t))
	ctx := context.Background()
	huge := &pb.Capabilities{Datasets: []string{strings.Repeat("x", 70<<10)}}
	_, err := cli.Join(ctx, &pb.JoinRequest{SiteName: "site-1", Capabilities: huge})
	if statusCode(err) != "InvalidArgument" || !contains(err.Error(), "capabilities are") {
		t.Errorf("Join with 70 KiB of capabilities = %v, want InvalidArgument naming the size", err)
	}
	for range 1000 {
		if _, err := cli.Join(ctx, &pb.JoinRequest{SiteName: "site-1", Capabilities: &pb.Capabilities{Trainers: []string{"mlp"}}}); err != nil {
			t.Fatal(err)
		}
	}
	c.coord.mu.Lock()
	n := len(c.coord.pending)
	c.coord.mu.Unlock()
	if n != 1 {
		t.Errorf("after 1,000 Joins of one site: %d pending joins, want 1", n)
	}
}

// newLimitsCluster starts a coordinator with cfg (its Version, SiteWait
// and Logger defaulted as newClusterWith's) and models (nil: the
// cluster's fakeModels).
func newLimitsCluster(t testing.TB, cfg Config, models ModelProvider) *cluster {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	store, err := tracking.OpenSQLite(ctx, filepath.Join(t.TempDir(), "cohort.db"))
	if err != nil {
		t.Fatal(err)
	}
	fm := &fakeModels{}
	if models == nil {
		models = fm
	}
	cfg.Version = cmp.Or(cfg.Version, "test")
	cfg.SiteWait = cmp.Or(cfg.SiteWait, 10*time.Second)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	coord, err := New(cfg, Deps{Tracker: store, Models: models})
	if err != nil {
		t.Fatal(err)
	}
	c := &cluster{coord: coord, store: store, models: fm, lis: bufconn.Listen(1 << 20), cancel: cancel}
	gs := grpc.NewServer(grpc.MaxRecvMsgSize(8 << 20)) // as cmd/cohort's
	coord.Register(gs)
	c.wg.Add(2)
	go func() { defer c.wg.Done(); _ = gs.Serve(c.lis) }()
	go func() { defer c.wg.Done(); _ = coord.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		gs.Stop()
		c.wg.Wait()
		if err := coord.Close(); err != nil {
			t.Errorf("Close = %v", err)
		}
		store.Close()
	})
	return c
}

// countingHandler counts the records it passes on, by message.
type countingHandler struct {
	slog.Handler
	mu *sync.Mutex
	n  map[string]int
}

func newCountingLogger(t *testing.T) (*slog.Logger, func(msg string) int) {
	h := countingHandler{Handler: slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}), mu: new(sync.Mutex), n: map[string]int{}}
	return slog.New(h), func(msg string) int {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.n[msg]
	}
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	h.n[r.Message]++
	h.mu.Unlock()
	return h.Handler.Handle(ctx, r)
}

func (h countingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return countingHandler{Handler: h.Handler.WithAttrs(as), mu: h.mu, n: h.n}
}

func (h countingHandler) WithGroup(g string) slog.Handler {
	return countingHandler{Handler: h.Handler.WithGroup(g), mu: h.mu, n: h.n}
}

// fakeClock is a clock tests step.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func TestRateLimiter(t *testing.T) {
	log, count := newCountingLogger(t)
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	l := newLimiter("Join calls", "rate_limits.join", RateLimit{Rate: 1, Burst: 10}, log)
	l.now = clock.now
	allowed := 0
	var last error
	for range 100 {
		if err := l.allow("site-1"); err == nil {
			allowed++
		} else {
			last = err
		}
	}
	if allowed != 10 {
		t.Errorf("100 calls at once: %d allowed, want the burst, 10", allowed)
	}
	if !errors.Is(last, ErrRateLimited) || statusCode(toStatus(last)) != "ResourceExhausted" {
		t.Errorf("refusal = %v (%s), want ErrRateLimited, RESOURCE_EXHAUSTED", last, statusCode(toStatus(last)))
	}
	for _, want := range []string{`"site-1"`, "1/s, burst 10", "retry in 1s", "rate_limits.join"} {
		if !contains(last.Error(), want) {
			t.Errorf("refusal %q does not say %q", last, want)
		}
	}
	if n := count("rate_limited"); n != 1 {
		t.Errorf("90 refusals logged %d warnings, want 1", n)
	}
	clock.add(1500 * time.Millisecond)
	if err := l.allow("site-1"); err != nil {
		t.Errorf("after 1.5s: %v, want a token (1/s)", err)
	}
	if err := l.allow("site-2"); err != nil {
		t.Errorf("another caller: %v, want its own bucket", err)
	}
	clock.add(50 * time.Second) // the bucket refills, the minute is not yet up
	for range 20 {
		_ = l.allow("site-1")
	}
	if n := count("rate_limited"); n != 1 {
		t.Errorf("refusals within the minute logged %d warnings in all, want 1", n)
	}
	clock.add(time.Minute)
	for range 20 {
		_ = l.allow("site-1")
	}
	if n := count("rate_limited"); n != 2 {
		t.Errorf("refusals a minute later logged %d warnings in all, want 2", n)
	}

	off := newLimiter("admin calls", "rate_limits.admin", RateLimit{Rate: -1, Burst: 1}, log)
	for range 1000 {
		if err := off.allow("admin"); err != nil {
			t.Fatalf("a negative rate (off) refused: %v", err)
		}
	}
	if off.size() != 0 {
		t.Errorf("a limiter that is off tracks %d callers, want 0", off.size())
	}
}

// TestRateLimiterBounded: the table of callers never holds more than
// maxLimiterEntries, and forgets callers once their bucket is full again.
func TestRateLimiterBounded(t *testing.T) {
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	l := newLimiter("Join calls", "rate_limits.join", DefaultJoinLimit, slog.New(slog.DiscardHandler))
	l.now = clock.now
	for i := range 3 * maxLimiterEntries {
		_ = l.allow(fmt.Sprintf("site-%d", i))
		if i%100 == 0 {
			clock.add(time.Millisecond)
		}
	}
	if n := l.size(); n > maxLimiterEntries {
		t.Errorf("after %d callers: %d tracked, want at most %d", 3*maxLimiterEntries, n, maxLimiterEntries)
	}
	clock.add(l.refill())
	l.sweep()
	if n := l.size(); n != 0 {
		t.Errorf("after every bucket refilled: %d tracked, want 0", n)
	}
}

// TestJoinFlood: 1,000 Joins of one site at once are refused, past the
// burst, with RESOURCE_EXHAUSTED naming the limit; one warning is
// logged, the limiter tracks one caller and the site holds one pending
// join. A site with 7 MB capabilities is refused by size.
func TestJoinFlood(t *testing.T) {
	log, count := newCountingLogger(t)
	c := newLimitsCluster(t, Config{Logger: log}, nil)
	cli := pb.NewCoordinatorServiceClient(c.dial(t))
	ctx := context.Background()
	var accepted, refused int
	for range 1000 {
		_, err := cli.Join(ctx, &pb.JoinRequest{SiteName: "site-1", Capabilities: &pb.Capabilities{Trainers: []string{"mlp"}}})
		switch {
		case err == nil:
			accepted++
		case statusCode(err) == "ResourceExhausted" && contains(err.Error(), "rate_limits.join") && contains(err.Error(), "retry in"):
			refused++
		default:
			t.Fatalf("Join = %v, want nil or RESOURCE_EXHAUSTED naming rate_limits.join and when to retry", err)
		}
	}
	// The burst, and one a second for however long the flood took.
	if accepted < DefaultJoinLimit.Burst || accepted > DefaultJoinLimit.Burst+5 || refused != 1000-accepted {
		t.Errorf("1,000 Joins: %d accepted, %d refused; want about %d accepted (the burst)", accepted, refused, DefaultJoinLimit.Burst)
	}
	if n := count("rate_limited"); n != 1 {
		t.Errorf("%d refusals logged %d warnings, want 1", refused, n)
	}
	c.coord.mu.Lock()
	pending := len(c.coord.pending)
	c.coord.mu.Unlock()
	if n := c.coord.joinLimit.size(); n != 1 || pending != 1 {
		t.Errorf("after the flood: %d callers rate-limited, %d pending joins; want 1, 1", n, pending)
	}
	huge := &pb.Capabilities{Datasets: []string{strings.Repeat("x", 7<<20)}}
	_, err := cli.Join(ctx, &pb.JoinRequest{SiteName: "site-2", Capabilities: huge})
	if statusCode(err) != "InvalidArgument" || !contains(err.Error(), "capabilities are 7340") {
		t.Errorf("Join with 7 MB of capabilities = %v, want InvalidArgument naming the size", err)
	}
}

// TestAdminRateLimited: an admin's flood of calls is refused past the
// burst with RESOURCE_EXHAUSTED naming rate_limits.admin.
func TestAdminRateLimited(t *testing.T) {
	c := newLimitsCluster(t, Config{AdminLimit: RateLimit{Rate: 0.001, Burst: 5}}, nil)
	cli := pb.NewJobsServiceClient(c.dial(t))
	var codes []string
	for range 8 {
		_, err := cli.ListJobs(context.Background(), &pb.ListJobsRequest{})
		codes = append(codes, statusCode(err))
		if err != nil && !contains(err.Error(), "rate_limits.admin") {
			t.Errorf("ListJobs refusal %q does not name rate_limits.admin", err)
		}
	}
	want := []string{"OK", "OK", "OK", "OK", "OK", "ResourceExhausted", "ResourceExhausted", "ResourceExhausted"}
	if diff := gocmp.Diff(want, codes); diff != "" {
		t.Errorf("8 ListJobs with burst 5 (-want +got):\n%s", diff)
	}
	st, err := cli.WatchJob(context.Background(), &pb.WatchJobRequest{JobId: "x"})
	if err == nil {
		_, err = st.Recv()
	}
	if statusCode(err) != "ResourceExhausted" {
		t.Errorf("WatchJob over the limit = %v, want RESOURCE_EXHAUSTED", err)
	}
}

// siteMaps returns the sizes of the coordinator's per-site tables.
func (c *Coordinator) siteMaps() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return map[string]int{"pending": len(c.pending), "sites": len(c.sites), "tasks": len(c.tasks),
		"closed": len(c.closed), "registered": len(c.registered)}
}

// registryIdle returns once no site registry write is in flight.
func (c *Coordinator) registryIdle() {
	for {
		c.mu.Lock()
		busy, done := len(c.regBusy), c.regDone
		c.mu.Unlock()
		if busy == 0 {
			return
		}
		<-done
	}
}

// TestLeavingSitesFreeTheirState: 20 sites join, open their sessions and
// leave; nothing of them is left in the coordinator's tables, and their
// rate-limit entries go once idle.
func TestLeavingSitesFreeTheirState(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	c := newLimitsCluster(t, Config{}, nil)
	c.coord.joinLimit.now = clock.now
	ctx, cancel := context.WithCancel(context.Background())
	for i := range 20 {
		c.startSite(t, ctx, &fakeSite{name: fmt.Sprintf("site-%d", i), update: plusOne(1)})
	}
	for {
		names, _, ch := c.coord.connected()
		if len(names) == 20 {
			break
		}
		<-ch
	}
	c.coord.registryIdle()
	want := map[string]int{"pending": 0, "sites": 20, "tasks": 0, "closed": 0, "registered": 20}
	if diff := gocmp.Diff(want, c.coord.siteMaps()); diff != "" {
		t.Errorf("20 sites connected (-want +got):\n%s", diff)
	}
	cancel() // every site leaves
	for {
		names, _, ch := c.coord.connected()
		if len(names) == 0 {
			break
		}
		<-ch
	}
	c.coord.registryIdle()
	want["sites"], want["registered"] = 0, 0
	if diff := gocmp.Diff(want, c.coord.siteMaps()); diff != "" {
		t.Errorf("20 sites left (-want +got):\n%s", diff)
	}
	if n := c.coord.joinLimit.size(); n != 20 {
		t.Errorf("rate-limit entries just after leaving: %d, want 20 (kept while their buckets refill)", n)
	}
	clock.add(c.coord.joinLimit.refill())
	c.coord.joinLimit.sweep()
	if n := c.coord.joinLimit.size(); n != 0 {
		t.Errorf("rate-limit entries once idle: %d, want 0", n)
	}
}

// TestPendingJoinsExpire: a site that joins and never opens its session
// holds its pending join for at most pendingJoinTTL.
func TestPendingJoinsExpire(t *testing.T) {
	clock := &fakeClock{t: time.Now()}
	c := newLimitsCluster(t, Config{}, nil)
	c.coord.now = clock.now
	cli := pb.NewCoordinatorServiceClient(c.dial(t))
	for i := range 5 {
		if _, err := cli.Join(context.Background(), &pb.JoinRequest{SiteName: fmt.Sprintf("site-%d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	clock.add(pendingJoinTTL + time.Second)
	if _, err := cli.Join(context.Background(), &pb.JoinRequest{SiteName: "late"}); err != nil {
		t.Fatal(err)
	}
	if n := c.coord.siteMaps()["pending"]; n != 1 {
		t.Errorf("pending joins after the TTL: %d, want 1 (the last)", n)
	}
}

// TestSilentSiteTimesOut: a site that sends nothing for SessionTimeout
// loses its session; one that heartbeats keeps it.
func TestSilentSiteTimesOut(t *testing.T) {
	const timeout = 400 * time.Millisecond
	c := newLimitsCluster(t, Config{SessionTimeout: timeout}, nil)
	cli := pb.NewCoordinatorServiceClient(c.dial(t))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	open := func(name string) pb.CoordinatorService_SessionClient {
		jr, err := cli.Join(ctx, &pb.JoinRequest{SiteName: name})
		if err != nil {
			t.Fatal(err)
		}
		st, err := cli.Session(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := st.Send(&pb.SiteMessage{Msg: &pb.SiteMessage_Hello{Hello: &pb.SessionHello{SessionId: jr.GetSessionId()}}}); err != nil {
			t.Fatal(err)
		}
		return st
	}
	live := open("live")
	beats := time.NewTicker(timeout / 8)
	defer beats.Stop()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-beats.C:
				_ = live.Send(&pb.SiteMessage{Msg: &pb.SiteMessage_Heartbeat{Heartbeat: &pb.Heartbeat{}}})
			}
		}
	}()
	silent := open("silent")
	start := time.Now()
	_, err := silent.Recv()
	elapsed := time.Since(start)
	if statusCode(err) != "Unavailable" || !contains(err.Error(), "sent nothing") {
		t.Errorf("silent site's session ended with %v, want UNAVAILABLE saying it sent nothing", err)
	}
	if elapsed < timeout/2 {
		t.Errorf("silent site's session ended after %s, before the %s timeout", elapsed, timeout)
	}
	// The live site outlasted the silent one's whole timeout.
	names, _, _ := c.coord.connected()
	close(stop)
	wg.Wait()
	if diff := gocmp.Diff([]string{"live"}, names); diff != "" {
		t.Errorf("connected after the silent site timed out (-want +got):\n%s", diff)
	}
}

func TestCheckEnergy(t *testing.T) {
	gpu := func(joules float64) *pb.EnergyReport {
		return &pb.EnergyReport{Seconds: 10, Method: "measured", Gpus: []*pb.GPUEnergy{{Uuid: "GPU-a", Joules: joules, DeviceJoules: joules}}}
	}
	tests := []struct {
		name string
		r    *pb.EnergyReport
		age  time.Duration
		want string // "" for kept, else a substring of the error
	}{
		{"nil", nil, 0, ""},
		{"plausible GPU", gpu(5000), 0, ""}, // 500 W for 10 s
		{"at the bound", gpu(1500 * 10 * 1.5), 0, ""},
		{"1e21 J", gpu(1e21), 0, "over the 2.25e+04 J bound"},
		{"negative", gpu(-1), 0, "reports -1 J"},
		{"NaN", gpu(math.NaN()), 0, "NaN"},
		{"infinite", gpu(math.Inf(1)), 0, "+Inf"},
		// A window longer than the task: the task's age bounds it.
		{"window over the task's age", gpu(8000), 2 * time.Second, "over the 6750 J bound"},
		{"window from start and end", &pb.EnergyReport{StartUnixMs: 1000, EndUnixMs: 101000, Cpu: []*pb.DomainEnergy{{Name: "package-0", Joules: 40000}}}, 0, ""},
		{"CPU domain over 500 W", &pb.EnergyReport{Seconds: 10, Cpu: []*pb.DomainEnergy{{Name: "package-0", Joules: 10000}}}, 0, "CPU domain package-0 reports 1e+04 J"},
		{"estimate", &pb.EnergyReport{Seconds: 10, Estimated: &pb.EnergyEstimate{CpuSeconds: 640, WattsPerCore: 10, Joules: 6400}}, 0, ""},
		{"estimate over 4 kW", &pb.EnergyReport{Seconds: 10, Estimated: &pb.EnergyEstimate{Joules: 1e6}}, 0, "the CPU-time estimate"},
		{"negative CPU seconds", &pb.EnergyReport{Seconds: 10, Estimated: &pb.EnergyEstimate{CpuSeconds: -5}}, 0, "-5 CPU seconds"},
		{"no window: one second", &pb.EnergyReport{Gpus: []*pb.GPUEnergy{{Joules: 2000}}}, 0, ""},
		{"non-finite window", &pb.EnergyReport{Seconds: math.Inf(1)}, 0, "window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := checkEnergy(tt.r, tt.age)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("checkEnergy = %v, want nil", err)
			case tt.want != "" && (err == nil || !contains(err.Error(), tt.want)):
				t.Errorf("checkEnergy = %v, want an error saying %q", err, tt.want)
			}
		})
	}
}

// TestImplausibleEnergyDropped: a site reporting 1e21 J has its report
// dropped from the round's energy and its run flagged energy_rejected;
// the other sites' plausible reports are kept.
func TestImplausibleEnergyDropped(t *testing.T) {
	log, count := newCountingLogger(t)
	c := newLimitsCluster(t, Config{Logger: log}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	honest := &pb.EnergyReport{Seconds: 0.5, Method: "measured", Gpus: []*pb.GPUEnergy{{Uuid: "GPU-h", Joules: 100}}, Estimated: &pb.EnergyEstimate{Joules: 2}}
	liar := &pb.EnergyReport{Seconds: 0.5, Method: "measured", Gpus: []*pb.GPUEnergy{{Uuid: "GPU-l", Joules: 1e21}}, Estimated: &pb.EnergyEstimate{Joules: 2}}
	c.startSite(t, ctx, &fakeSite{name: "site-1", update: plusOne(10), energy: honest})
	c.startSite(t, ctx, &fakeSite{name: "site-2", update: plusOne(10), energy: honest})
	c.startSite(t, ctx, &fakeSite{name: "site-3", update: plusOne(10), energy: liar})
	j := submit(t, c, fmt.Sprintf(testJob, 3, "30s"))
	got := waitJob(t, c, j.GetJobId())
	if got.GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		t.Fatalf("job %s (%s), want SUCCEEDED", got.GetState(), got.GetError())
	}
	res, err := tracking.Compare(ctx, c.store, got.GetTrackingRunId())
	if err != nil {
		t.Fatal(err)
	}
	if e := res.Arms[0].EnergyJoules; !(e > 0 && e < 1e6) {
		t.Errorf("arm energy = %g J, want the plausible reports' only", e)
	}
	sites, _ := c.store.ChildRuns(ctx, res.Arms[0].RunID)
	for _, s := range sites {
		flags, _ := c.store.GetMetricHistory(ctx, s.Info.RunID, MetricEnergyRejected)
		gpuJ, _ := c.store.GetMetricHistory(ctx, s.Info.RunID, tracking.MetricGPUEnergyJoules)
		switch s.Info.RunName {
		case "fedavg/site-3":
			if len(flags) != 3 || flags[0].Value != 1 || len(gpuJ) != 0 {
				t.Errorf("%s: %d %s points, %d GPU energy points; want 3 (one a round, 1), 0", s.Info.RunName, len(flags), MetricEnergyRejected, len(gpuJ))
			}
		default:
			if len(flags) != 0 || len(gpuJ) != 3 || gpuJ[0].Value != 100 {
				t.Errorf("%s: %d %s points, GPU energy %v; want 0, 100 J a round", s.Info.RunName, len(flags), MetricEnergyRejected, gpuJ)
			}
		}
	}
	if n := count("energy_report_rejected"); n != 3 {
		t.Errorf("%d energy_report_rejected warnings, want one a round (3)", n)
	}
}

func TestSpecParams(t *testing.T) {
	tests := []struct {
		name, model string
		want        int64
	}{
		{"logreg", "{kind: logreg}", 784*10 + 10},
		{"mlp 2NN", "{kind: mlp, hidden: [200, 200]}", 784*200 + 200 + 200*200 + 200 + 200*10 + 10},
		{"FedAvg CNN", "{kind: cnn, conv: [32, 64]}", 1_663_370}, // McMahan et al.'s
		{"984M mlp", "{kind: mlp, hidden: [1041269, 160]}", 984_000_975},
		{"exec", "{kind: exec, command: [python3, train.py]}", -1},
		{"transfer", "{kind: transfer, params: 123456789}", 123_456_789},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			spec, err := job.Parse([]byte(strings.Replace(fmt.Sprintf(testJob, 3, "30s"), "model: {kind: logreg}", "model: "+tt.model, 1)))
			if err != nil {
				t.Fatal(err)
			}
			got, ok := specParams(spec)
			if !ok {
				got = -1
			}
			if got != tt.want {
				t.Errorf("specParams(%s) = %d, want %d", tt.model, got, tt.want)
			}
		})
	}
}

func TestMemTotal(t *testing.T) {
	if got := memTotal([]byte("MemFree: 10 kB\nMemTotal:       131072 kB\n")); got != 128<<20 {
		t.Errorf("memTotal = %d, want %d", got, 128<<20)
	}
	if got := memTotal([]byte("nothing")); got != 0 {
		t.Errorf("memTotal of no MemTotal = %d, want 0", got)
	}
	if d := DefaultMaxModelBytes(); d < 64<<20 {
		t.Errorf("DefaultMaxModelBytes = %d, want a quarter of this machine's memory", d)
	}
}

// TestMaxModelBytes: a job whose 984M-parameter MLP needs 7.9 GB for the
// global model and the next one is refused at submit with
// INVALID_ARGUMENT naming the numbers and the fix; so is a 400M-parameter
// model under a server optimizer, which keeps two moments besides (6.4
// GB), while FedAvg or the median of the same model (3.2 GB) and a small
// job are taken.
func TestMaxModelBytes(t *testing.T) {
	c := newLimitsCluster(t, Config{MaxModelBytes: 4 << 30}, nil)
	cli := pb.NewJobsServiceClient(c.dial(t))
	big := strings.Replace(fmt.Sprintf(testJob, 3, "30s"), "model: {kind: logreg}", "model: {kind: mlp, hidden: [1041269, 160]}", 1)
	_, err := cli.SubmitJob(context.Background(), &pb.SubmitJobRequest{JobYaml: []byte(big)})
	if statusCode(err) != "InvalidArgument" {
		t.Fatalf("SubmitJob(984M-parameter mlp) = %v, want InvalidArgument", err)
	}
	for _, want := range []string{"984,000,975 parameters", "× 2 (the global model and the next one)", "7.3 GiB (7872007800 bytes)", "4.0 GiB", "smaller model", "coordinator.max_model_bytes"} {
		if !contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	// A transfer model of 400M parameters on 3 sites: 6.4 GB under
	// fedadam, 3.2 GB under FedAvg or the median.
	transfer := strings.Replace(fmt.Sprintf(testJob, 3, "30s"), "model: {kind: logreg}", "model: {kind: transfer, params: 400000000}", 1)
	adam := strings.Replace(transfer, "strategy: fedavg", "strategy: fedadam", 1)
	_, err = cli.SubmitJob(context.Background(), &pb.SubmitJobRequest{JobYaml: []byte(adam)})
	if statusCode(err) != "InvalidArgument" {
		t.Fatalf("SubmitJob(400M-parameter transfer model, fedadam) = %v, want InvalidArgument", err)
	}
	for _, want := range []string{"400,000,000 parameters", "× 4 (the sum, the global model and the server optimizer's two moments (fedadam))", "6.0 GiB (6400000000 bytes)", "model.params", "coordinator.max_model_bytes"} {
		if !contains(err.Error(), want) {
			t.Errorf("refusal %q does not say %q", err, want)
		}
	}
	// (Checked without submitting: a queued job would make its 1.6 GB.)
	for _, src := range []string{transfer, strings.Replace(transfer, "strategy: fedavg", "strategy: median", 1)} {
		spec, err := job.Parse([]byte(src))
		if err != nil {
			t.Fatal(err)
		}
		if err := checkModelSize(spec, 4<<30); err != nil {
			t.Errorf("400M-parameter transfer model refused: %v", err)
		}
	}
	small := fmt.Sprintf(testJob, 3, "30s")
	resp, err := cli.SubmitJob(context.Background(), &pb.SubmitJobRequest{JobYaml: []byte(small)})
	if err != nil {
		t.Fatalf("SubmitJob(logreg) = %v, want it queued", err)
	}
	if _, err := cli.CancelJob(context.Background(), &pb.CancelJobRequest{JobId: resp.GetJob().GetJobId()}); err != nil {
		t.Fatal(err)
	}
}

// blockingModels is a model provider whose Prepare signals entered and
// then waits for release — ignoring ctx when deaf is set, as a provider
// stuck in a system call would — or fails with err, or panics.
type blockingModels struct {
	entered, release chan struct{}
	deaf             bool
	err              error
	panics           bool
	initSite         string
}

func (m *blockingModels) Prepare(ctx context.Context, spec *job.Spec) (*Prepared, error) {
	switch {
	case m.panics:
		panic("provider bug")
	case m.err != nil:
		return nil, m.err
	case m.initSite != "":
		return &Prepared{Spec: &pb.ModelSpec{Kind: "logreg"}, InitSite: m.initSite}, nil
	}
	close(m.entered)
	if m.deaf {
		<-m.release
	} else {
		select {
		case <-m.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return &Prepared{Spec: &pb.ModelSpec{Kind: "logreg"}, Initial: initialWeights()}, nil
}

// TestCancelAlwaysEndsTheJob: cancelling a job whose runner waits on an
// init site that never answers, or on a model provider that ignores
// cancellation, ends it CANCELLED promptly; a job whose preparation fails
// or panics ends FAILED, not running.
func TestCancelAlwaysEndsTheJob(t *testing.T) {
	cancelWhen := func(t *testing.T, c *cluster, started <-chan struct{}) *pb.Job {
		t.Helper()
		j := submit(t, c, fmt.Sprintf(testJob, 3, "30s"))
		<-started
		cli := pb.NewJobsServiceClient(c.dial(t))
		begin := time.Now()
		if _, err := cli.CancelJob(context.Background(), &pb.CancelJobRequest{JobId: j.GetJobId(), Reason: "test"}); err != nil {
			t.Fatal(err)
		}
		got := waitJob(t, c, j.GetJobId())
		if d := time.Since(begin); d > 10*time.Second {
			t.Errorf("cancel took %s to end the job", d)
		}
		return got
	}
	t.Run("hung init site", func(t *testing.T) {
		m := &blockingModels{initSite: "site-1"}
		c := newLimitsCluster(t, Config{}, m)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		got, release := make(chan struct{}), make(chan struct{})
		defer close(release)
		c.startSite(t, ctx, &fakeSite{name: "site-1", update: plusOne(1),
			handle: func(ctx context.Context, _ pb.CoordinatorServiceClient, _ func(*pb.SiteMessage), task *pb.Task) bool {
				if task.GetKind() != pb.TaskKind_TASK_KIND_INIT {
					return false
				}
				close(got) // the init task arrived; it never answers
				select {
				case <-release:
				case <-ctx.Done():
				}
				return true
			}})
		j := cancelWhen(t, c, got)
		if j.GetState() != pb.JobState_JOB_STATE_CANCELLED || !contains(j.GetError(), "test") {
			t.Errorf("job %s (%s), want CANCELLED: test", j.GetState(), j.GetError())
		}
	})
	t.Run("provider ignores cancel", func(t *testing.T) {
		m := &blockingModels{entered: make(chan struct{}), release: make(chan struct{}), deaf: true}
		log, count := newCountingLogger(t)
		c := newLimitsCluster(t, Config{CancelGrace: 50 * time.Millisecond, Logger: log}, m)
		j := cancelWhen(t, c, m.entered)
		close(m.release) // the runner returns, late
		if j.GetState() != pb.JobState_JOB_STATE_CANCELLED {
			t.Errorf("job %s (%s), want CANCELLED", j.GetState(), j.GetError())
		}
		if n := count("job_runner_stuck"); n != 1 {
			t.Errorf("%d job_runner_stuck warnings, want 1", n)
		}
	})
	for _, tt := range []struct {
		name string
		m    *blockingModels
		want string
	}{
		{"preparation fails", &blockingModels{err: errors.New("no such trainer")}, "preparing the model: no such trainer"},
		{"preparation panics", &blockingModels{panics: true}, "internal error running the job (provider bug)"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := newLimitsCluster(t, Config{}, tt.m)
			j := waitJob(t, c, submit(t, c, fmt.Sprintf(testJob, 3, "30s")).GetJobId())
			if j.GetState() != pb.JobState_JOB_STATE_FAILED || !contains(j.GetError(), tt.want) {
				t.Errorf("job %s (%s), want FAILED: %s", j.GetState(), j.GetError(), tt.want)
			}
		})
	}
}
