package energy

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"
)

// A TaskOption adjusts one measurement, for a job whose settings differ
// from the Meter's.
type TaskOption func(*task)

type task struct {
	interval time.Duration
	watts    float64
}

// WithInterval samples this measurement's power timeline every d (0: the
// Meter's interval; at least MinInterval).
func WithInterval(d time.Duration) TaskOption {
	return func(t *task) {
		if d > 0 {
			t.interval = max(d, MinInterval)
		}
	}
}

// WithCPUWattsPerCore sets this measurement's estimate wattage; unlike
// Options.CPUWattsPerCore, 0 (or less) turns the estimate off, as the job
// setting energy.cpu_watts_per_core does.
func WithCPUWattsPerCore(w float64) TaskOption {
	return func(t *task) {
		if math.IsNaN(w) || math.IsInf(w, 0) || w < 0 {
			w = 0
		}
		t.watts = w
	}
}

// errStopped is the cause with which Stop ends the sampler.
var errStopped = errors.New("measurement stopped")

// Measurement is one task's measurement, from [Meter.Start] to
// [Measurement.Stop].
type Measurement struct {
	m       *Meter
	start   time.Time
	task    task
	counter time.Duration // how often counters are read

	cancel   context.CancelFunc
	done     chan struct{} // closed when the sampler has returned
	stopOnce sync.Once
	report   Report

	// Guarded by m.mu: the measurement's accounts in the Meter's ledger.
	seq       int
	cpuShare  time.Duration
	gpuShare  []share            // by GPU, in gpuBackend.devices order
	raplShare []share            // by domain, in Meter.rapl order
	tracked   bool               // Track was called
	members   map[procKey]uint64 // its process tree: CPU ticks accounted so far

	mu          sync.Mutex // guards what follows, between the sampler and Stop
	gpus        []*gpuTrack
	rapl        []*raplCounter
	overlap     int
	lastCounter time.Time
}

// gpuTrack is one GPU's state within a measurement.
type gpuTrack struct {
	dev gpuDevice
	inf gpuInfo

	// The energy counter.
	counter  bool    // read at the start: the figure is by counter
	startMJ  uint64  // the reading at the start
	lastMJ   uint64  // the last successful reading
	lastOK   bool    // the last reading succeeded
	counterJ float64 // joules up to lastMJ
	segJ     float64 // the timeline's integral since lastMJ
	resets   int

	// The power timeline.
	samples     int
	firstT      time.Time
	lastT       time.Time
	lastW       float64
	integratedJ float64
	powerMax    float64
	utilSum     float64
	utilN       int
	memMax      uint64
	source      string

	notes []string
}

// note records a fact once.
func (t *gpuTrack) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	if !slices.Contains(t.notes, s) {
		t.notes = append(t.notes, s)
	}
}

// Start begins measuring a task: it reads the energy counters, takes the
// first power sample and starts the goroutine that samples the timeline
// every interval until Stop (or until ctx ends; Stop still reports). Call
// Stop once the task's GPU work has ended (after the framework's device
// synchronisation), so the final counter reading covers it. It returns
// ErrClosed after Close, and no other error.
//
// The estimate's CPU time is this process's, shared out among the
// measurements running at the time: between any two Starts or Stops, each
// live measurement is credited an equal share of the CPU time the process
// spent (or of Options.CPUTime's). Where the process does nothing but its
// measured tasks — a site, or the simulated sites of `cohort run` training
// side by side in one process — that is each task's own CPU time, up to the
// imbalance between concurrent tasks.
//
// Device energy is shared out the same way, but by use: every Start, Stop
// and periodic counter read closes a span of the Meter's per-device
// ledger, whose energy goes to the measurements live in it by their
// process trees' utilization (see [Measurement.Track]), or equally.
func (m *Meter) Start(ctx context.Context, opts ...TaskOption) (*Measurement, error) {
	t := task{interval: m.opts.Interval, watts: m.opts.CPUWattsPerCore}
	for _, o := range opts {
		o(&t)
	}
	x := &Measurement{m: m, task: t, counter: m.opts.CounterInterval, done: make(chan struct{}), members: make(map[procKey]uint64)}
	if m.gpus != nil {
		for _, d := range m.gpus.devices() {
			x.gpus = append(x.gpus, &gpuTrack{dev: d, inf: d.info()})
		}
	}
	x.gpuShare = make([]share, len(x.gpus))
	x.raplShare = make([]share, len(m.rapl))
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil, ErrClosed
	}
	x.start = m.clock()
	m.shareCPU()
	rd := m.advance(x.start)
	for o := range m.live {
		o.noteOverlap(len(m.live))
	}
	x.overlap = len(m.live)
	m.seq++
	x.seq = m.seq
	m.live[x] = struct{}{}
	m.mu.Unlock()

	for i, d := range m.rapl {
		if r := rd.rapl[i]; r.err == nil {
			x.rapl = append(x.rapl, &raplCounter{d: d, idx: i, last: r.v})
		} else {
			m.log.Warn("rapl_read_failed", "domain", d.name, "err", r.err)
		}
	}
	x.mu.Lock()
	for i, g := range x.gpus {
		if r := rd.gpu[i]; r.err == nil {
			g.counter, g.startMJ, g.lastMJ, g.lastOK = true, r.v, r.v, true
		} else if g.inf.counter {
			g.note("energy counter unreadable at the start (%v): joules integrated from power", r.err)
		}
	}
	x.sample(x.start)
	x.lastCounter = x.start
	idle := len(x.gpus) == 0 && len(x.rapl) == 0
	x.mu.Unlock()

	if idle {
		x.cancel = func() {}
		close(x.done)
		return x, nil
	}
	sctx, cancel := context.WithCancelCause(ctx)
	x.cancel = func() { cancel(errStopped) }
	go x.run(sctx)
	return x, nil
}

func (x *Measurement) noteOverlap(n int) {
	x.mu.Lock()
	x.overlap = max(x.overlap, n)
	x.mu.Unlock()
}

// run samples the timeline every interval, and reads the counters every
// counter interval, until ctx ends.
func (x *Measurement) run(ctx context.Context) {
	defer close(x.done)
	ticks := x.m.opts.ticks
	if ticks == nil {
		every := x.task.interval
		if len(x.gpus) == 0 {
			every = x.counter // RAPL only: nothing to sample in between
		}
		t := time.NewTicker(every)
		defer t.Stop()
		ticks = t.C
	}
	for {
		select {
		case <-ctx.Done():
			if context.Cause(ctx) != errStopped {
				x.mu.Lock()
				for _, t := range x.gpus {
					t.note("sampling stopped %.1fs into the window when the task's context ended: the timeline's last span is one straight segment", x.m.clock().Sub(x.start).Seconds())
				}
				x.mu.Unlock()
			}
			return
		case now, ok := <-ticks:
			if !ok {
				<-ctx.Done()
				return
			}
			x.mu.Lock()
			x.sample(now)
			// Ticks jitter: allow half an interval so that a 1 s counter
			// interval means every 10th tick at 100 ms, not every 11th.
			due := now.Sub(x.lastCounter) >= x.counter-x.task.interval/2
			x.mu.Unlock()
			if due {
				x.readCounters(now)
			}
			if x.m.opts.tickDone != nil {
				x.m.opts.tickDone <- struct{}{}
			}
		}
	}
}

// sample reads every GPU's power, utilization and memory. x.mu must be
// held.
func (x *Measurement) sample(now time.Time) {
	for _, t := range x.gpus {
		mw, err := t.dev.powerMW()
		if err != nil {
			t.note("power reading failed: %v", err)
		} else {
			w := float64(mw) / 1000
			if !t.lastT.IsZero() {
				if dt := now.Sub(t.lastT).Seconds(); dt > 0 {
					j := (w + t.lastW) / 2 * dt
					t.integratedJ += j
					t.segJ += j
				}
			} else {
				t.firstT = now
			}
			t.lastW, t.lastT = w, now
			t.samples++
			t.powerMax = math.Max(t.powerMax, w)
			t.source = t.inf.power
		}
		if u, err := t.dev.utilization(); err == nil {
			t.utilSum += float64(u)
			t.utilN++
		}
		if mem, err := t.dev.memoryUsed(); err == nil && mem > t.memMax {
			t.memMax = mem
		}
	}
}

// readCounters reads every device's counter through the Meter's ledger,
// which splits what each moved among the live measurements, and takes
// this measurement's readings. Neither x.mu nor m.mu may be held.
func (x *Measurement) readCounters(now time.Time) {
	x.m.mu.Lock()
	rd := x.m.advance(now)
	x.m.mu.Unlock()
	x.mu.Lock()
	x.applyCounters(now, rd)
	x.mu.Unlock()
}

// applyCounters takes the GPUs' energy counters and the RAPL counters
// from rd. x.mu must be held.
func (x *Measurement) applyCounters(now time.Time, rd readings) {
	x.lastCounter = now
	for i, t := range x.gpus {
		if !t.counter {
			continue
		}
		v, err := rd.gpu[i].v, rd.gpu[i].err
		if err != nil {
			t.lastOK = false
			t.note("energy counter read failed: %v", err)
			continue
		}
		if v >= t.lastMJ {
			t.counterJ += float64(v-t.lastMJ) / 1000
		} else {
			// The counter went backwards: the driver was reloaded. The
			// span since the last reading is taken from the timeline.
			t.resets++
			t.counterJ += t.segJ
			t.note("energy counter went backwards (driver reset): the span around it is integrated from power")
			x.m.log.Warn("gpu_energy_counter_reset", "gpu", t.inf.uuid, "from_mj", t.lastMJ, "to_mj", v)
		}
		t.lastMJ, t.lastOK, t.segJ = v, true, 0
	}
	for _, c := range x.rapl {
		c.update(rd.rapl[c.idx])
	}
}

// Stop ends the measurement: it stops the sampler, takes a last sample,
// reads the counters and returns the report. Later calls return the same
// report.
func (x *Measurement) Stop() Report {
	x.stopOnce.Do(func() {
		x.cancel()
		<-x.done
		m := x.m
		m.mu.Lock()
		end := m.clock()
		m.shareCPU()
		rd := m.advance(end)
		delete(m.live, x)
		cpu := x.cpuShare
		gs, rs := slices.Clone(x.gpuShare), slices.Clone(x.raplShare)
		m.mu.Unlock()

		x.mu.Lock()
		defer x.mu.Unlock()
		x.sample(end)
		x.applyCounters(end, rd)
		x.report = x.build(end, cpu, gs, rs)
	})
	return x.report
}

// build assembles the report. x.mu must be held.
func (x *Measurement) build(end time.Time, cpu time.Duration, gs, rs []share) Report {
	m := x.m
	window := end.Sub(x.start)
	r := Report{
		Start: x.start, End: end, Seconds: window.Seconds(),
		LowConfidence: window < LowConfidenceBelow,
		Concurrent:    x.overlap, Measurements: 1,
		Interval: x.task.interval, CounterInterval: x.counter,
	}
	driver := ""
	if m.gpus != nil {
		driver = m.gpus.driver()
	}
	for i, t := range x.gpus {
		g := GPUReport{
			UUID: t.inf.uuid, Index: t.inf.index, Name: t.inf.name,
			PowerMaxW: t.powerMax, IntegratedJ: t.integratedJ, PowerSource: t.source,
			MemMaxBytes: t.memMax, Samples: t.samples, Interval: x.task.interval,
			Shared: t.inf.mig, MIG: slices.Clone(t.inf.migs), Resets: t.resets, DriverVersion: driver,
		}
		if span := t.lastT.Sub(t.firstT).Seconds(); span > 0 {
			g.PowerAvgW = t.integratedJ / span
		} else if t.samples > 0 {
			g.PowerAvgW = t.lastW
		}
		if t.utilN > 0 {
			g.UtilAvgPct = t.utilSum / float64(t.utilN)
		}
		g.DeviceJoules, g.Method = t.integratedJ, MethodIntegrated
		if t.counter {
			g.DeviceJoules, g.Method = t.counterJ, MethodCounter
			g.CounterStartJ, g.CounterEndJ = float64(t.startMJ)/1000, float64(t.lastMJ)/1000
			if !t.lastOK {
				// The last reading failed: the tail since the last good
				// one comes from the timeline.
				g.DeviceJoules += t.segJ
			}
		}
		s := gs[i]
		g.Attribution = s.attribution()
		switch {
		case !s.shared:
			g.Joules = g.DeviceJoules
		case t.counter:
			g.Joules = s.joules
			if !t.lastOK || t.resets > 0 {
				t.note("energy counter unreadable or reset in the window: the attributed share may lack the spans around it")
			}
		case window > 0:
			// No counter: the timeline's integral, by the time-weighted
			// share.
			g.Joules = g.DeviceJoules * min(s.fracSec/window.Seconds(), 1)
		}
		if t.samples < 2 && g.Method == MethodIntegrated {
			t.note("fewer than two power samples: nothing to integrate")
		}
		g.Notes = slices.Clone(t.notes)
		r.GPUs = append(r.GPUs, g)
	}
	for _, c := range x.rapl {
		s := rs[c.idx]
		d := DomainReport{Name: c.d.name, Joules: s.joules, DeviceJoules: float64(c.total) / 1e6,
			Method: MethodCounter, Attribution: s.attribution(), Wraps: c.wraps}
		if !s.shared {
			d.Joules = d.DeviceJoules
		}
		if c.fails > 0 {
			d.Notes = append(d.Notes, fmt.Sprintf("counter reads failed: %d (last: %v); a wrap-around may have been missed", c.fails, c.err))
		}
		if c.wraps > 0 && c.d.maxRange == 0 {
			d.Notes = append(d.Notes, "max_energy_range_uj unknown: the energy before each wrap-around is lost")
		}
		r.CPU = append(r.CPU, d)
	}
	r.Attribution = r.attribution()
	r.Estimated = Estimate{CPUSeconds: cpu.Seconds(), WattsPerCore: x.task.watts, Method: MethodEstimated}
	r.Estimated.Joules = r.Estimated.CPUSeconds * r.Estimated.WattsPerCore
	if len(r.GPUs) == 0 && len(r.CPU) == 0 {
		m.log.Debug("energy_measured_none", "seconds", r.Seconds, "estimated_joules", r.Estimated.Joules)
	}
	return r
}
