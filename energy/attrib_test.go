package energy

import (
	"context"
	"fmt"
	"io/fs"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"testing/fstest"
	"time"
)

// fakeProc is a /proc tree the test edits between boundaries.
type fakeProc struct {
	mu    sync.Mutex
	procs map[int]procStat
	fsys  fstest.MapFS
}

func newFakeProc(ps ...procStat) *fakeProc {
	p := &fakeProc{procs: make(map[int]procStat)}
	p.set(ps...)
	return p
}

func (p *fakeProc) Open(name string) (fs.File, error) {
	p.mu.Lock()
	f := p.fsys
	p.mu.Unlock()
	return f.Open(name)
}

// edit changes the processes and rebuilds the tree (a new map, so that
// readers of the old one are not raced).
func (p *fakeProc) edit(f func(procs map[int]procStat)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f(p.procs)
	m := make(fstest.MapFS)
	for pid, s := range p.procs {
		m[strconv.Itoa(pid)+"/stat"] = &fstest.MapFile{Data: []byte(statLine(pid, "python3 train.py", s.ppid, s.ticks, 0, s.start))}
	}
	m["self"] = &fstest.MapFile{Mode: fs.ModeDir}
	p.fsys = m
}

func (p *fakeProc) set(ps ...procStat) {
	p.edit(func(procs map[int]procStat) {
		for _, s := range ps {
			procs[s.pid] = s
		}
	})
}

func (p *fakeProc) kill(pid int) { p.edit(func(procs map[int]procStat) { delete(procs, pid) }) }

func (p *fakeProc) addTicks(pid int, n uint64) {
	p.edit(func(procs map[int]procStat) {
		s := procs[pid]
		s.ticks += n
		procs[pid] = s
	})
}

// proc is a process of the fake tree started at boot tick 1000+pid.
func proc(pid, ppid int) procStat { return procStat{pid: pid, ppid: ppid, start: uint64(1000 + pid)} }

// utilNow has the fake GPU report these SM percentages, by PID, as
// sampled just before the clock's present.
func utilNow(r *rig, g *fakeGPU, sm map[int]uint32) {
	stamp := uint64(r.clock().UnixMicro())
	g.set(func(g *fakeGPU) {
		g.utilOn = true
		for pid, u := range sm {
			g.samples = append(g.samples, procUtil{pid: pid, stamp: stamp, smUtil: u})
		}
	})
}

func approx(a, b float64) bool {
	return math.Abs(a-b) <= 1e-9*math.Max(1, math.Max(math.Abs(a), math.Abs(b)))
}

// Four measurements on one GPU, staggered, each tracking its trainer:
// each segment's energy goes by the trainers' SM utilization, and the
// shares add up to the counter over the union of the windows.
func TestAttributionByUtilization(t *testing.T) {
	r := newRig(t)
	g := newFakeGPU("GPU-share", true)
	fp := newFakeProc(proc(1, 0), proc(101, 1), proc(102, 1), proc(103, 1), proc(104, 1), proc(999, 1))
	o := r.options()
	o.gpus, o.proc = gpus(g), fp
	m := newMeter(t, o)
	joules := func(j uint64) { g.set(func(g *fakeGPU) { g.mj += j * 1000 }) }
	step := func(j uint64, sm map[int]uint32) {
		r.advance(time.Second)
		joules(j)
		if sm != nil {
			utilNow(r, g, sm)
		}
	}
	var xs []*Measurement
	begin := func(pid int) {
		x := start(t, m)
		x.Track(pid)
		xs = append(xs, x)
	}
	reps := make([]Report, 4)
	begin(101)                                                             // t=0: A
	step(100, nil)                                                         // A alone: A 100
	begin(102)                                                             // t=1: B
	step(200, map[int]uint32{101: 30, 102: 10})                            // A 150, B 50
	begin(103)                                                             // t=2: C
	step(300, map[int]uint32{101: 20, 102: 20, 103: 60})                   // A 60, B 60, C 180
	begin(104)                                                             // t=3: D
	step(400, map[int]uint32{101: 10, 102: 10, 103: 10, 104: 10, 999: 50}) // 100 each; 999 is no one's
	reps[0] = xs[0].Stop()                                                 // t=4
	step(500, nil)                                                         // NOT_FOUND: B, C, D 500/3 each
	reps[1] = xs[1].Stop()                                                 // t=5
	step(600, map[int]uint32{103: 0, 104: 40})                             // D 600
	reps[2] = xs[2].Stop()                                                 // t=6
	step(700, nil)                                                         // D alone: 700
	reps[3] = xs[3].Stop()                                                 // t=7

	want := []struct{ joules, device float64 }{
		{100 + 150 + 60 + 100, 100 + 200 + 300 + 400},
		{50 + 60 + 100 + 500.0/3, 200 + 300 + 400 + 500},
		{180 + 100 + 500.0/3, 300 + 400 + 500 + 600},
		{100 + 500.0/3 + 600 + 700, 400 + 500 + 600 + 700},
	}
	var sum float64
	for i, rep := range reps {
		gr := rep.GPUs[0]
		if !approx(gr.Joules, want[i].joules) || !approx(gr.DeviceJoules, want[i].device) || gr.Attribution != AttributionUtilization || rep.Attribution != AttributionUtilization {
			t.Errorf("measurement %c: %v J of %v J, %s (report %s); want %v J of %v J, %s", 'A'+i, gr.Joules, gr.DeviceJoules, gr.Attribution, rep.Attribution, want[i].joules, want[i].device, AttributionUtilization)
		}
		sum += rep.MeasuredJoules()
	}
	if union := 2800.0; math.Abs(sum-union) > 1e-9*union {
		t.Errorf("shares sum to %v J, want the counter over the union, %v J", sum, union)
	}
	if got, want := reps[0].GPUs[0].CounterStartJ, 0.0; got != want {
		t.Errorf("A's CounterStartJ = %v, want %v", got, want)
	}
	if got, want := reps[3].GPUs[0].CounterEndJ, 2800.0; got != want {
		t.Errorf("D's CounterEndJ = %v, want %v", got, want)
	}
}

// A child of a tracked trainer is credited; a process that exited is not,
// nor one that reuses a tracked PID with another start time.
func TestAttributionProcessExitAndPIDReuse(t *testing.T) {
	r := newRig(t)
	g := newFakeGPU("GPU-exit", true)
	fp := newFakeProc(proc(1, 0), proc(201, 1), proc(202, 1), proc(301, 201))
	o := r.options()
	o.gpus, o.proc = gpus(g), fp
	m := newMeter(t, o)
	a, b := start(t, m), start(t, m)
	a.Track(201)
	b.Track(202)

	r.advance(time.Second)
	g.set(func(g *fakeGPU) { g.mj += 100_000 })
	utilNow(r, g, map[int]uint32{201: 10, 301: 30, 202: 20}) // A 40 (with its child), B 20
	r.tick(0)                                                // a periodic read closes the segment
	fp.kill(301)
	fp.set(procStat{pid: 301, ppid: 1, start: 5000}) // PID 301 reused by another process
	fp.kill(202)                                     // B's trainer exits

	r.advance(time.Second)
	g.set(func(g *fakeGPU) { g.mj += 60_000 })
	utilNow(r, g, map[int]uint32{201: 10, 301: 50, 202: 40}) // only A's own is live and A's
	ra, rb := a.Stop(), b.Stop()

	wantA, wantB := 100*40.0/60+60, 100*20.0/60
	if ga, gb := ra.GPUs[0], rb.GPUs[0]; !approx(ga.Joules, wantA) || !approx(gb.Joules, wantB) {
		t.Errorf("A %v J, B %v J; want %v J, %v J", ga.Joules, gb.Joules, wantA, wantB)
	}
	if s := ra.GPUs[0].Joules + rb.GPUs[0].Joules; !approx(s, 160) {
		t.Errorf("shares sum to %v J, want 160 J", s)
	}
}

// Without per-process utilization (NOT_FOUND, not supported, or nothing
// tracked) shared segments split equally; a lone measurement is exclusive.
func TestAttributionEqualAndExclusive(t *testing.T) {
	for _, tc := range []struct {
		name   string
		utilOn bool
		track  bool
	}{
		{"not found", true, true},
		{"not supported", false, true},
		{"untracked", true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			g := newFakeGPU("GPU-eq", true)
			g.set(func(g *fakeGPU) { g.utilOn = tc.utilOn })
			o := r.options()
			o.gpus, o.proc = gpus(g), newFakeProc(proc(1, 0), proc(11, 1), proc(12, 1), proc(13, 1))
			m := newMeter(t, o)
			var xs []*Measurement
			for i := range 3 {
				x := start(t, m)
				if tc.track {
					x.Track(11 + i)
				}
				xs = append(xs, x)
			}
			r.advance(time.Second)
			g.set(func(g *fakeGPU) { g.mj += 90_000 })
			var sum float64
			for _, x := range xs {
				rep := x.Stop()
				gr := rep.GPUs[0]
				if !approx(gr.Joules, 30) || gr.DeviceJoules != 90 || gr.Attribution != AttributionEqual || rep.Attribution != AttributionEqual {
					t.Errorf("share %v J of %v J, %s (report %s); want 30 J of 90 J, %s", gr.Joules, gr.DeviceJoules, gr.Attribution, rep.Attribution, AttributionEqual)
				}
				sum += gr.Joules
			}
			if !approx(sum, 90) {
				t.Errorf("shares sum to %v J, want 90 J", sum)
			}

			x := start(t, m)
			x.Track(11)
			r.tick(time.Second)
			g.set(func(g *fakeGPU) { g.mj += 123_456 })
			r.advance(time.Second)
			rep := x.Stop()
			if gr := rep.GPUs[0]; gr.Joules != 123.456 || gr.DeviceJoules != gr.Joules || gr.Attribution != AttributionExclusive || rep.Attribution != AttributionExclusive {
				t.Errorf("alone: %v J of %v J, %s; want 123.456 J of the same, %s", gr.Joules, gr.DeviceJoules, gr.Attribution, AttributionExclusive)
			}
		})
	}
}

// Random staggered windows, some tracked with utilization, some not,
// periodic reads in between: the shares always add up to the counter over
// the union of the windows, and a measurement alone throughout gets its
// window's device energy.
func TestAttributionSharesSumToDevice(t *testing.T) {
	for seed := range uint64(20) {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			rnd := rand.New(rand.NewPCG(seed, 7))
			r := newRig(t)
			g := newFakeGPU("GPU-rand", true)
			pids := []procStat{proc(1, 0)}
			for i := range 8 {
				pids = append(pids, proc(100+i, 1))
			}
			o := r.options()
			o.gpus, o.proc = gpus(g), newFakeProc(pids...)
			m := newMeter(t, o)
			var (
				live  []*Measurement
				pidOf = map[*Measurement]int{}
				union float64
				sum   float64
				next  = 100
			)
			stop := func(i int) {
				rep := live[i].Stop()
				gr := rep.GPUs[0]
				sum += gr.Joules
				if gr.Attribution == AttributionExclusive && gr.Joules != gr.DeviceJoules {
					t.Errorf("exclusive share %v J != device %v J", gr.Joules, gr.DeviceJoules)
				}
				live = append(live[:i], live[i+1:]...)
			}
			for range 60 {
				switch k := rnd.IntN(4); {
				case k == 0 && next < 108:
					x := start(t, m)
					if rnd.IntN(2) == 0 {
						x.Track(next)
						pidOf[x] = next
					}
					next++
					live = append(live, x)
				case k == 1 && len(live) > 0:
					stop(rnd.IntN(len(live)))
				case k == 2 && len(live) > 0:
					r.tick(time.Duration(rnd.IntN(1000)) * time.Millisecond)
				default:
					r.advance(time.Duration(rnd.IntN(1000)) * time.Millisecond)
				}
				mj := uint64(rnd.IntN(50_000))
				g.set(func(g *fakeGPU) { g.mj += mj })
				if len(live) > 0 {
					union += float64(mj) / 1000
				}
				sm := map[int]uint32{}
				for _, x := range live {
					if pid, ok := pidOf[x]; ok && rnd.IntN(3) > 0 {
						sm[pid] = uint32(rnd.IntN(100))
					}
				}
				utilNow(r, g, sm)
			}
			for len(live) > 0 {
				stop(0)
			}
			if math.Abs(sum-union) > 1e-9*math.Max(union, 1) {
				t.Errorf("shares sum to %v J, want the counter over the union, %v J", sum, union)
			}
		})
	}
}

// RAPL rising at exactly 100 W under four overlapping measurements, two
// tracking trainers (split by their CPU ticks), two in this process (equal
// shares): the package's shares add up to 100 W × the union's seconds.
func TestAttributionRAPL(t *testing.T) {
	r := newRig(t)
	root := powercap(t)
	fp := newFakeProc(proc(1, 0), proc(401, 1), proc(402, 1))
	o := r.options()
	o.PowercapRoot, o.powercap, o.proc = root, os.DirFS(root), fp
	m := newMeter(t, o)
	pkg := filepath.Join(root, "intel-rapl:0", "energy_uj")
	const base = 1_000_000_000
	elapsed := 0
	write(t, pkg, base)
	second := func(ticksA, ticksB uint64) {
		fp.addTicks(401, ticksA)
		fp.addTicks(402, ticksB)
		r.advance(time.Second)
		elapsed++
		write(t, pkg, base+uint64(elapsed)*100_000_000) // 100 J a second
	}
	a := start(t, m)
	a.Track(401)
	second(9, 9) // A alone: 100
	b := start(t, m)
	b.Track(402)
	second(3, 1) // A 75, B 25
	c := start(t, m)
	second(1, 1) // C 100/3; A, B 100/3 each
	d := start(t, m)
	second(0, 0) // C, D 25; A, B no CPU time: 25 each
	ra := a.Stop()
	second(0, 5) // C, D, B 100/3 each
	rb := b.Stop()
	second(0, 0) // C, D 50
	rc := c.Stop()
	second(0, 0) // D 100
	rd := d.Stop()

	want := []struct {
		joules float64
		attr   string
	}{
		{100 + 75 + 100.0/3 + 25, AttributionUtilization},
		{25 + 100.0/3 + 25 + 100.0/3, AttributionUtilization},
		{100.0/3 + 25 + 100.0/3 + 50, AttributionEqual},
		{25 + 100.0/3 + 50 + 100, AttributionEqual},
	}
	var sum float64
	for i, rep := range []Report{ra, rb, rc, rd} {
		p := rep.CPU[0]
		if p.Name != "package-0" || !approx(p.Joules, want[i].joules) || p.Attribution != want[i].attr {
			t.Errorf("measurement %c: %s %v J (%s); want package-0 %v J (%s)", 'A'+i, p.Name, p.Joules, p.Attribution, want[i].joules, want[i].attr)
		}
		sum += p.Joules
	}
	if union := 100.0 * 7; math.Abs(sum-union) > 1e-9*union {
		t.Errorf("package-0 shares sum to %v J, want 100 W × 7 s = %v J", sum, union)
	}
	if dj := ra.CPU[0].DeviceJoules; !approx(dj, 400) {
		t.Errorf("A's DeviceJoules = %v, want 400 (4 s at 100 W)", dj)
	}
}

func TestIdle(t *testing.T) {
	r := newRig(t)
	root := powercap(t)
	g := newFakeGPU("GPU-idle", true)
	g.set(func(g *fakeGPU) { g.mj = 7_000_000 })
	h := newFakeGPU("GPU-old", false)
	h.set(func(g *fakeGPU) { g.mw = 35_000 })
	o := r.options()
	o.gpus = gpus(g, h)
	o.PowercapRoot, o.powercap = root, os.DirFS(root)
	pkg := filepath.Join(root, "intel-rapl:0", "energy_uj")
	write(t, pkg, 5_000_000)
	o.after = func(d time.Duration) <-chan time.Time {
		r.advance(d)
		g.set(func(g *fakeGPU) { g.mj += uint64(120 * d.Seconds() * 1000) }) // 120 W
		write(t, pkg, 5_000_000+uint64(50*d.Seconds()*1e6))                  // 50 W
		c := make(chan time.Time, 1)
		c <- r.clock()
		return c
	}
	m := newMeter(t, o)
	rep, err := m.Idle(context.Background(), 2*time.Second)
	if err != nil {
		t.Fatalf("Idle: %v", err)
	}
	if rep.Seconds != 2 || len(rep.GPUs) != 2 || len(rep.CPU) != 3 || rep.Method != MethodIntegrated {
		t.Fatalf("Idle() = %+v; want 2 s, 2 GPUs, 3 domains, integrated (one GPU lacks a counter)", rep)
	}
	if g0, g1 := rep.GPUs[0], rep.GPUs[1]; !approx(g0.Watts, 120) || g0.Method != MethodCounter || g0.UUID != "GPU-idle" || !approx(g1.Watts, 35) || g1.Method != MethodIntegrated {
		t.Errorf("GPUs = %+v; want GPU-idle 120 W by counter, GPU-old 35 W integrated", rep.GPUs)
	}
	if c := rep.CPU[0]; c.Name != "package-0" || !approx(c.Watts, 50) || rep.CPU[1].Watts != 0 {
		t.Errorf("CPU = %+v; want package-0 at 50 W, the rest 0", rep.CPU)
	}
	if !approx(rep.Watts, 205) {
		t.Errorf("Watts = %v, want 205", rep.Watts)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m.opts.after = func(time.Duration) <-chan time.Time { return nil }
	if _, err := m.Idle(ctx, time.Second); err == nil {
		t.Error("Idle with an ended context succeeded")
	}
	if _, err := m.Idle(context.Background(), 0); err == nil {
		t.Error("Idle(0) succeeded")
	}
	none := newMeter(t, Options{noGPU: true, powercap: emptyFS{}, clock: r.clock, after: o.after})
	if rep, err := none.Idle(context.Background(), time.Second); err != nil || rep.Method != MethodNone || rep.Watts != 0 {
		t.Errorf("Idle without sources = %+v, %v; want none, 0 W", rep, err)
	}
}
