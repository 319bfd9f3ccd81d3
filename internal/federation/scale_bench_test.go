package federation

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/cohortfl/cohort/client"
	"github.com/cohortfl/cohort/job"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server"
	"github.com/cohortfl/cohort/tracking"
)

// BenchmarkThousandSites' flags: a process holds two descriptors a site
// (four with the agents in it), so the open-files limit bounds -sites.
var (
	benchSites     = flag.Int("sites", 1000, "BenchmarkThousandSites: how many site agents to connect")
	benchRounds    = flag.Int("rounds", 3, "BenchmarkThousandSites: the job's rounds, 2 or more (the first, which waits for every site to connect, is not timed)")
	benchAgentProc = flag.Bool("agents-process", false, "BenchmarkThousandSites: run the site agents in a second process (the coordinator's heap is then measured alone)")
	benchIdleHeap  = flag.String("idle-heap-profile", "", "BenchmarkThousandSites: write a heap profile to this file, and the goroutines to FILE.goroutines, once every site is connected and idle")
	benchRoundCPU  = flag.String("round-cpu-profile", "", "BenchmarkThousandSites: write a CPU profile from the second round's start to the job's end (the last iteration's job) to this file")
	benchAgentsCPU = flag.String("agents-cpu-profile", "", "BenchmarkThousandSites -agents-process: write a CPU profile of the agents' process, from every site's connection to its end, to this file")
)

// The helper process of BenchmarkThousandSites -agents-process: the test
// binary run again with these variables set runs only
// TestHelperAgentsProcess, which connects the agents.
const (
	envHelperAddr  = "COHORT_BENCH_AGENTS_ADDR"
	envHelperSites = "COHORT_BENCH_AGENTS_SITES"
	envHelperCPU   = "COHORT_BENCH_AGENTS_CPU_PROFILE"
)

// scaleJob is BenchmarkThousandSites' job: a small model (logistic
// regression on Synthetic(0,0), 20 samples a site) over sites sites.
func scaleJob(sites, rounds int) []byte {
	return []byte(fmt.Sprintf(`
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
}

// loadScaleJob parses a scale job and loads its (deterministic) data.
func loadScaleJob(tb testing.TB, src []byte) (*job.Spec, *Datasets) {
	tb.Helper()
	spec, err := job.Parse(src)
	if err != nil {
		tb.Fatal(err)
	}
	ds, err := Load(context.Background(), spec, "")
	if err != nil {
		tb.Fatal(err)
	}
	return spec, ds
}

// TestHelperAgentsProcess is not a test: BenchmarkThousandSites
// -agents-process runs the test binary again with envHelperAddr set, and
// this connects its site agents to that address until stdin closes.
func TestHelperAgentsProcess(t *testing.T) {
	addr := os.Getenv(envHelperAddr)
	if addr == "" {
		t.Skip("the helper process of BenchmarkThousandSites -agents-process")
	}
	raiseOpenFiles(t)
	sites, err := strconv.Atoi(os.Getenv(envHelperSites))
	if err != nil {
		t.Fatalf("%s: %v", envHelperSites, err)
	}
	spec, ds := loadScaleJob(t, scaleJob(sites, 1))
	ctx, cancel := context.WithCancel(context.Background())
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	wait := startAgents(t, ctx, spec.Sites.Names, ds, []string{addr}, dial, slog.New(slog.DiscardHandler), client.Config{})
	if path := os.Getenv(envHelperCPU); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				t.Error(err)
			}
		}()
	}
	_, _ = io.Copy(io.Discard, os.Stdin) // the benchmark closes it when done
	cancel()
	wait()
}

// startAgentsProcess runs sites site agents in a second process (this
// test binary again, as TestHelperAgentsProcess) dialling addr; the
// returned functions stop it and wait for it, and read the CPU time it
// has used.
func startAgentsProcess(b *testing.B, addr string, sites int) (stop func(), cpu func() time.Duration) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAgentsProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envHelperAddr+"="+addr, envHelperSites+"="+strconv.Itoa(sites), envHelperCPU+"="+*benchAgentsCPU)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatalf("starting the agents' process: %v", err)
	}
	stop = func() {
		_ = stdin.Close()
		if err := cmd.Wait(); err != nil {
			b.Errorf("the agents' process: %v", err)
		}
	}
	return stop, func() time.Duration { return childCPU(b, cmd.Process.Pid) }
}

// cpuSamples are CPU times sampled with the times they were taken.
type cpuSamples struct {
	mu    sync.Mutex
	times []time.Time
	cpu   []cpuTimes
	done  chan struct{}
	ended chan struct{}
	once  sync.Once
}

// sampleCPU samples cpu every interval until stop. A cpu that fails the
// benchmark (a /proc file it cannot read) ends the sampling goroutine
// with it; stop does not wait for more then.
func sampleCPU(cpu func() cpuTimes, interval time.Duration) *cpuSamples {
	s := &cpuSamples{done: make(chan struct{}), ended: make(chan struct{})}
	take := func() {
		c, now := cpu(), time.Now()
		s.mu.Lock()
		s.times, s.cpu = append(s.times, now), append(s.cpu, c)
		s.mu.Unlock()
	}
	take()
	go func() {
		defer close(s.ended)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-s.done:
				take()
				return
			case <-t.C:
				take()
			}
		}
	}()
	return s
}

// stop ends the sampling, with a last sample; a second call does nothing.
func (s *cpuSamples) stop() {
	s.once.Do(func() { close(s.done) })
	<-s.ended
}

// at is the CPU times at t, interpolated between the samples around it.
func (s *cpuSamples) at(b *testing.B, t time.Time) cpuTimes {
	s.mu.Lock()
	defer s.mu.Unlock()
	i, _ := slices.BinarySearchFunc(s.times, t, func(a, t time.Time) int { return a.Compare(t) })
	if i == 0 || i == len(s.times) {
		b.Fatalf("no CPU samples around %v (%d samples)", t, len(s.times))
	}
	t0, t1 := s.times[i-1], s.times[i]
	f := float64(t.Sub(t0)) / float64(t1.Sub(t0))
	lerp := func(a, b time.Duration) time.Duration { return a + time.Duration(f*float64(b-a)) }
	c0, c1 := s.cpu[i-1], s.cpu[i]
	return cpuTimes{lerp(c0.coord, c1.coord), lerp(c0.agents, c1.agents), lerp(c0.busy, c1.busy), lerp(c0.softirq, c1.softirq)}
}

// cpuTimes is CPU time: the coordinator's (this process), the agents'
// process's, and the whole machine's busy time and its softirq part.
type cpuTimes struct{ coord, agents, busy, softirq time.Duration }

func (c cpuTimes) add(d cpuTimes) cpuTimes {
	return cpuTimes{c.coord + d.coord, c.agents + d.agents, c.busy + d.busy, c.softirq + d.softirq}
}

func (c cpuTimes) sub(d cpuTimes) cpuTimes {
	return cpuTimes{c.coord - d.coord, c.agents - d.agents, c.busy - d.busy, c.softirq - d.softirq}
}

// machineCPU is the time all cores have been busy since boot, and the
// part of it in softirq (Linux's /proc/stat, in clock ticks of 10 ms):
// user, nice, system, irq, softirq and steal; not idle or iowait.
func machineCPU(b *testing.B) (busy, softirq time.Duration) {
	st, err := os.ReadFile("/proc/stat")
	if err != nil {
		b.Fatalf("the machine's CPU time: %v", err)
	}
	line, _, _ := bytes.Cut(st, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		b.Fatalf("the machine's CPU time: /proc/stat begins %q", line)
	}
	var ticks [8]int64 // user nice system idle iowait irq softirq steal
	for i := range ticks {
		if ticks[i], err = strconv.ParseInt(f[1+i], 10, 64); err != nil {
			b.Fatalf("the machine's CPU time: %v", err)
		}
	}
	tick := 10 * time.Millisecond
	busy = time.Duration(ticks[0]+ticks[1]+ticks[2]+ticks[5]+ticks[6]+ticks[7]) * tick
	return busy, time.Duration(ticks[6]) * tick
}

// childCPU is the CPU time, user and system, the running process pid has
// used (Linux's /proc/PID/stat, in its clock ticks of 10 ms).
func childCPU(b *testing.B, pid int) time.Duration {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatalf("the agents' CPU time: %v", err)
	}
	// Fields after the command's closing parenthesis: state is the
	// first (field 3), utime and stime fields 14 and 15.
	f := strings.Fields(string(st[bytes.LastIndexByte(st, ')')+1:]))
	if len(f) < 13 {
		b.Fatalf("the agents' CPU time: %d fields in /proc/%d/stat", len(f), pid)
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.Fatalf("the agents' CPU time: %v", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// BenchmarkThousandSites connects 1,000 site agents (-sites N), each with its own
// gRPC connection over loopback TCP, to one coordinator and runs rounds of
// a small model (logistic regression on Synthetic(0,0), 20 samples a
// site). It reports the orchestration overhead of a round — its wall time
// beyond the slowest site's task — and the memory each idle connected
// site costs: coordinator and agent together when both run in this
// process (KiB/idle-site), the coordinator alone with -agents-process
// (coord-KiB/idle-site), which 5,000 sites and more need; with it too,
// the coordinator's CPU a round (coord-cpu-s/round) and the agents'
// process's (agents-cpu-s/round), both for the whole job and within the
// rounds timed (coord-cpu-s/in-round, agents-cpu-s/in-round, with the
// whole machine's, machine-cpu-s/in-round, and its softirq part); and the time from
// the last round's commit to the job's end (s-job-end). The coordinator runs
// with its deployed SpillAbove, so a logistic regression's updates are
// decoded in memory (the other tests of this package spill every one).
//
//	go test -run '^$' -bench ThousandSites -benchtime 1x ./internal/federation
//	go test -run '^$' -bench ThousandSites -benchtime 1x ./internal/federation -args -sites 10000 -agents-process
//	go test -run '^$' -bench ThousandSites -benchtime 1x ./internal/federation -args -sites 10000 -agents-process -rounds 10
func BenchmarkThousandSites(b *testing.B) {
	rounds := *benchRounds
	if rounds < 2 {
		b.Fatalf("-rounds %d: the benchmark times rounds 2 on; give 2 or more", rounds)
	}
	sites := *benchSites
	raiseOpenFiles(b)
	joined := &messageCounter{msg: "site_connected", want: int64(sites), done: make(chan struct{})}
	log := slog.New(joined)
	src := scaleJob(sites, rounds)
	spec, ds := loadScaleJob(b, src)
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

	stop := startCoordinator(b, "coord", lis, coordDeps{ds: ds, store: store, log: log, deployedSpill: true})
	defer stop()
	ctx, cancel := context.WithCancel(context.Background())
	dial := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	agentsCPU := func() time.Duration { return 0 }
	if *benchAgentProc {
		var stopAgents func()
		stopAgents, agentsCPU = startAgentsProcess(b, addr, sites)
		defer stopWithin(b, "stopping the site agents", func() { cancel(); stopAgents() })
	} else {
		wait := startAgents(b, ctx, spec.Sites.Names, ds, []string{addr}, dial, log, client.Config{})
		defer stopWithin(b, "stopping the site agents", func() { cancel(); wait() })
	}
	cc, err := grpc.NewClient(addr, dial...)
	if err != nil {
		b.Fatal(err)
	}
	defer cc.Close()
	jobs := pb.NewJobsServiceClient(cc)
	// Wait until every site has joined: a job that names 1,000 sites
	// starts its first round then.
	joinWait := max(2*time.Minute, time.Duration(sites)*30*time.Millisecond)
	select {
	case <-joined.done:
	case <-time.After(joinWait):
		b.Fatalf("%d of %d sites connected in %v", joined.count.Load(), sites, joinWait)
	}
	// Two collections: gRPC pools its transport buffers in sync.Pools,
	// which hold what they keep until the second collection; an idle
	// process returns them, so they are not an idle site's cost.
	runtime.GC()
	runtime.GC()
	var idle runtime.MemStats
	runtime.ReadMemStats(&idle)
	idleKiB := float64(idle.HeapInuse-before.HeapInuse) / float64(sites) / 1024
	// Goroutine stacks are not heap: the transport's readers and the
	// session's goroutines cost as much again.
	stackKiB := float64(idle.StackInuse-before.StackInuse) / float64(sites) / 1024
	goroutines := float64(runtime.NumGoroutine()) / float64(sites)
	if *benchIdleHeap != "" {
		writeProfile(b, "heap", *benchIdleHeap, 0)
		writeProfile(b, "goroutine", *benchIdleHeap+".goroutines", 1)
	}

	b.ResetTimer()
	var overhead, wall, ends, between []float64
	var inRounds cpuTimes // within rounds 2 on
	var lag time.Duration // the latest a round's event reached the watch stream
	cpu0, agentsCPU0 := processCPU(b), agentsCPU()
	sample := func() cpuTimes {
		busy, softirq := machineCPU(b)
		return cpuTimes{coord: processCPU(b), agents: agentsCPU(), busy: busy, softirq: softirq}
	}
	for b.Loop() {
		jt := timeJob(ctx, b, jobs, store, src, 2, *benchRoundCPU, sample)
		wall, overhead, ends, between = append(wall, jt.wall...), append(overhead, jt.overhead...), append(ends, jt.end), append(between, jt.between...)
		inRounds, lag = inRounds.add(jt.inRounds), max(lag, jt.lag)
	}
	cpu, agentsCPU1 := processCPU(b)-cpu0, agentsCPU()-agentsCPU0
	b.StopTimer()
	if *benchAgentProc {
		b.ReportMetric(idleKiB, "coord-KiB/idle-site")
		b.ReportMetric(stackKiB, "coord-stack-KiB/idle-site")
		// The coordinator's own CPU (the agents' is in their process),
		// for the whole job: its tracking included.
		b.ReportMetric(cpu.Seconds()/float64(b.N*rounds), "coord-cpu-s/round")
		// The agents' process, for the same span: with the coordinator's,
		// what a round costs the machine's cores.
		b.ReportMetric(agentsCPU1.Seconds()/float64(b.N*rounds), "agents-cpu-s/round")
		// Within the rounds timed (the second on, to the last commit):
		// what the two processes spent while a round ran, which the
		// round's wall time cannot be less than on this machine's cores
		// (their sum over the cores).
		b.ReportMetric(inRounds.coord.Seconds()/float64(b.N*(rounds-1)), "coord-cpu-s/in-round")
		b.ReportMetric(inRounds.agents.Seconds()/float64(b.N*(rounds-1)), "agents-cpu-s/in-round")
		// The whole machine's, all cores, and the part of it in softirq
		// (loopback TCP is processed there, charged to no process).
		b.ReportMetric(inRounds.busy.Seconds()/float64(b.N*(rounds-1)), "machine-cpu-s/in-round")
		b.ReportMetric(inRounds.softirq.Seconds()/float64(b.N*(rounds-1)), "softirq-s/in-round")
	} else {
		b.ReportMetric(idleKiB, "KiB/idle-site")
		b.ReportMetric(stackKiB, "stack-KiB/idle-site")
	}
	b.ReportMetric(goroutines, "goroutines/site")
	b.ReportMetric(mean(wall), "s/round")
	b.ReportMetric(mean(overhead), "s-overhead/round")
	// From a round's commit to the next one's start: the arm waits there
	// for a tracker more than a round's events behind (recorder.catchUp).
	b.ReportMetric(mean(between), "s-between-rounds")
	// From the last round's commit to the job's end: the job waits for
	// its tracking to catch up and ends the site runs.
	b.ReportMetric(mean(ends), "s-job-end")
	// How late this process's watch stream got a round's event: the
	// goroutines of the coordinator (and of this benchmark's watcher in
	// its process) queue for the cores behind the sites'.
	b.ReportMetric(lag.Seconds(), "s-event-lag-max")
}

// processCPU is the CPU time, user and system, this process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// writeProfile writes a runtime profile (the heap's as of the last
// collection) to path.
func writeProfile(b *testing.B, name, path string, debug int) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.Lookup(name).WriteTo(f, debug); err != nil {
		b.Fatal(err)
	}
	if err := f.Close(); err != nil {
		b.Fatal(err)
	}
}

// startCPUProfile starts a CPU profile written to path, and returns the
// function that stops it and closes its file; calls after the first do
// nothing. It fails b where a profile runs already (go test -cpuprofile).
func startCPUProfile(b *testing.B, path string) (stop func()) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		b.Fatalf("%s: %v (-round-cpu-profile and go test's -cpuprofile exclude each other)", path, err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			pprof.StopCPUProfile()
			if err := f.Close(); err != nil {
				b.Error(err)
			}
		})
	}
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

// jobTimes is what timeJob measured of one job.
type jobTimes struct {
	// wall and overhead are, for each round from the first timed, its
	// wall time (round_started to round_committed) and what it took
	// beyond its slowest site's training (the site runs' train_seconds).
	wall, overhead []float64
	// between are the times from a round's commit to the next one's
	// start, from the first timed round on.
	between []float64
	sites   int     // the arm's site runs
	end     float64 // seconds from the last commit to the job's end
	// inRounds is the CPU from the first timed round's start to the last
	// commit, at the events' own times (see timeJob).
	inRounds cpuTimes
	// lag is the latest the watch stream delivered a round's event.
	lag time.Duration
}

// timeJob submits src, follows it to its end and returns its times from
// round first on. Earlier rounds are left out (the first waits for every
// site to connect). With profile set, it writes a CPU profile from round
// first's start to the job's end to that file. With cpu set, it measures
// the CPU the rounds took, without the job's end: both ends are the
// events' own times, read from samples taken every 50 ms, as the watch
// stream delivers an event seconds late while 10,000 sites' goroutines
// queue for the cores.
func timeJob(ctx context.Context, b *testing.B, jobs pb.JobsServiceClient, store *tracking.SQLiteStore, src []byte, first int32, profile string, cpu func() cpuTimes) (jt jobTimes) {
	b.Helper()
	var samples *cpuSamples
	if cpu != nil {
		samples = sampleCPU(cpu, 50*time.Millisecond)
		defer samples.stop() // on a b.Fatal too; a second call does nothing
	}
	resp, err := jobs.SubmitJob(ctx, &pb.SubmitJobRequest{JobYaml: src})
	if err != nil {
		b.Fatal(err)
	}
	id := resp.GetJob().GetJobId()
	st, err := jobs.WatchJob(ctx, &pb.WatchJobRequest{JobId: id})
	if err != nil {
		b.Fatal(err)
	}
	var started, committed, firstStarted, lastCommitted time.Time
	var stopProfile func() // the rounds' CPU profile, once started
	for {
		ev, err := st.Recv()
		if err != nil {
			break
		}
		at := time.UnixMilli(ev.GetUnixMs())
		switch ev.GetKind() {
		case "round_started":
			if ev.GetRound() > first && !committed.IsZero() {
				jt.between = append(jt.between, at.Sub(committed).Seconds())
			}
			started = at
			jt.lag = max(jt.lag, time.Since(at))
			if ev.GetRound() == first && firstStarted.IsZero() {
				firstStarted = at
			}
			if ev.GetRound() == first && profile != "" && stopProfile == nil {
				stopProfile = startCPUProfile(b, profile)
				defer stopProfile() // on a b.Fatal too; a second call does nothing
			}
		case "round_committed":
			committed = at
			jt.lag = max(jt.lag, time.Since(at))
			if ev.GetRound() >= first {
				jt.wall = append(jt.wall, committed.Sub(started).Seconds())
				lastCommitted = at
			}
		case "job_finished":
			jt.end = at.Sub(committed).Seconds()
		}
	}
	if samples != nil && !firstStarted.IsZero() && !lastCommitted.IsZero() {
		samples.stop()
		jt.inRounds = samples.at(b, lastCommitted).sub(samples.at(b, firstStarted))
	}
	if stopProfile != nil {
		stopProfile() // the rounds' profile ends with the job
	}
	got, err := jobs.GetJob(ctx, &pb.GetJobRequest{JobId: id})
	if err != nil || got.GetJob().GetState() != pb.JobState_JOB_STATE_SUCCEEDED {
		b.Fatalf("job: %v %v", got.GetJob(), err)
	}
	// Figures of a coordinator that kept up by dropping its tracking's
	// writes would not be a round's cost.
	jobRun, err := store.GetRun(ctx, got.GetJob().GetTrackingRunId())
	if err != nil {
		b.Fatal(err)
	}
	if n, ok := jobRun.Data.Tag(server.TagEventsDropped); ok {
		b.Fatalf("the recorder dropped %s round events", n)
	}
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
	for i, w := range jt.wall {
		jt.overhead = append(jt.overhead, w-slowest[int64(i)+int64(first)])
	}
	jt.sites = len(siteRuns)
	return jt
}

// mean is the mean of xs, 0 for none.
func mean(xs []float64) float64 {
	s := 0.0
	for _, x := range xs {
		s += x
	}
	return s / float64(max(1, len(xs)))
}
