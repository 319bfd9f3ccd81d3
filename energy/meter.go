package energy

import (
	"context"
	"log/slog"
	"math"
	"sync"
	"syscall"
	"time"
)

// Options configures a Meter. The zero value of every field is usable.
type Options struct {
	// Interval is the power timeline's sampling interval (default 100ms).
	Interval time.Duration
	// CounterInterval is how often RAPL counters are read in between, to
	// catch wrap-arounds (default 1s). NVML's energy counter is read at the
	// window's boundaries only.
	CounterInterval time.Duration
	// CPUWattsPerCore is the estimate's wattage per busy core (default 10;
	// negative turns the estimate off).
	CPUWattsPerCore float64
	// PowercapRoot is the powercap tree (default /sys/class/powercap).
	PowercapRoot string
	// Devices is CUDA_VISIBLE_DEVICES (default: the environment's).
	Devices *string
	// CPUTime returns the CPU time the estimate is based on (default: this
	// process's user+system time).
	CPUTime func() time.Duration
	// Logger receives the meter's logs; nil discards them.
	Logger *slog.Logger

	gpus  gpuBackend // tests inject fakes; nil opens NVML
	noGPU bool
}

// SourceInfo says whether an energy source is in use, and why not.
type SourceInfo struct {
	Kind      string // nvml, rapl, estimate
	Name      string
	Available bool
	Reason    string
}

// Meter measures tasks. It is safe for concurrent use; measurements may
// overlap (each report says by how many others).
type Meter struct {
	opts    Options
	log     *slog.Logger
	gpus    gpuBackend
	rapl    []raplDomain
	sources []SourceInfo

	mu      sync.Mutex
	live    map[*Measurement]struct{}
	lastCPU time.Duration // process CPU time at the last Start or Stop
}

// NewMeter discovers the energy sources once. Missing hardware is not an
// error: [Meter.Sources] says what was found and why not.
func NewMeter(opts Options) (*Meter, error) {
	if opts.Interval <= 0 {
		opts.Interval = 100 * time.Millisecond
	}
	if opts.CounterInterval <= 0 {
		opts.CounterInterval = time.Second
	}
	if opts.CPUWattsPerCore == 0 {
		opts.CPUWattsPerCore = 10
	}
	if opts.PowercapRoot == "" {
		opts.PowercapRoot = "/sys/class/powercap"
	}
	if opts.CPUTime == nil {
		opts.CPUTime = processCPUTime
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Meter{opts: opts, log: opts.Logger, live: make(map[*Measurement]struct{})}
	switch {
	case opts.gpus != nil:
		m.gpus = opts.gpus
	case opts.noGPU:
	default:
		visible := lookupVisible(opts.Devices)
		b, reason := defaultGPUs(visible)
		if b == nil {
			m.sources = append(m.sources, SourceInfo{Kind: "nvml", Name: "NVIDIA GPUs", Reason: reason})
		}
		m.gpus = b
	}
	if m.gpus != nil {
		for _, d := range m.gpus.devices() {
			inf := d.info()
			s := SourceInfo{Kind: "nvml", Name: inf.name + " " + inf.uuid, Available: true}
			if _, err := d.energyMJ(); err != nil {
				s.Reason = "no energy counter (" + err.Error() + "): joules integrated from instant power"
			}
			m.sources = append(m.sources, s)
		}
	}
	rapl, reason := openRAPL(opts.PowercapRoot)
	m.rapl = rapl
	if len(rapl) == 0 {
		m.sources = append(m.sources, SourceInfo{Kind: "rapl", Name: "CPU package and DRAM", Reason: reason})
	}
	for _, d := range rapl {
		m.sources = append(m.sources, SourceInfo{Kind: "rapl", Name: d.name, Available: true})
	}
	m.sources = append(m.sources, SourceInfo{Kind: "estimate", Name: "process CPU time", Available: opts.CPUWattsPerCore > 0,
		Reason: "always reported beside measured figures, never summed with them"})
	return m, nil
}

// Sources lists the energy sources and why each is or is not in use.
func (m *Meter) Sources() []SourceInfo { return append([]SourceInfo(nil), m.sources...) }

// Close releases NVML.
func (m *Meter) Close() error {
	if m.gpus != nil {
		m.gpus.close()
	}
	return nil
}

// shareCPU credits the process CPU time spent since the last call equally
// to the live measurements. m.mu must be held.
func (m *Meter) shareCPU() {
	now := m.opts.CPUTime()
	if n := len(m.live); n > 0 {
		share := (now - m.lastCPU) / time.Duration(n)
		for x := range m.live {
			x.cpuShare += share
		}
	}
	m.lastCPU = now
}

// processCPUTime is this process's user plus system CPU time.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// gpuTrack is one GPU's state within a measurement.
type gpuTrack struct {
	dev         gpuDevice
	startMJ     uint64
	counter     bool
	samples     int
	powerSum    float64
	powerMax    float64
	utilSum     float64
	memMax      uint64
	lastW       float64
	lastT       time.Time
	integratedJ float64
	source      string
}

// Measurement is one task's measurement, from [Meter.Start] to
// [Measurement.Stop].
type Measurement struct {
	m        *Meter
	start    time.Time
	cpuShare time.Duration // guarded by m.mu
	gpus     []*gpuTrack
	rapl     []*raplCounter
	overlap  int

	stopOnce sync.Once
	cancel   context.CancelFunc
	done     chan struct{}
	report   Report
	mu       sync.Mutex // guards the tracks between the sampler and Stop
}

// Start begins measuring; call Stop when the task's work has ended. ctx
// bounds the sampler (it stops with ctx, and Stop still reports).
//
// The estimate's CPU time is this process's, shared out among the
// measurements running at the time: between any two Starts or Stops, each
// live measurement is credited an equal share of the CPU time the process
// spent. When the process does nothing but its measured tasks (a site, or
// `cohort run`'s simulated sites training side by side) that is each task's
// own CPU time up to the imbalance between concurrent tasks.
func (m *Meter) Start(ctx context.Context) (*Measurement, error) {
	x := &Measurement{m: m, start: time.Now(), done: make(chan struct{})}
	if m.gpus != nil {
		for _, d := range m.gpus.devices() {
			t := &gpuTrack{dev: d}
			if v, err := d.energyMJ(); err == nil {
				t.startMJ, t.counter = v, true
			}
			x.gpus = append(x.gpus, t)
		}
	}
	for _, d := range m.rapl {
		c := &raplCounter{d: d}
		if v, err := d.read(); err == nil {
			c.last = v
			x.rapl = append(x.rapl, c)
		}
	}
	m.mu.Lock()
	m.shareCPU()
	for o := range m.live {
		o.noteOverlap(len(m.live))
	}
	x.overlap = len(m.live)
	m.live[x] = struct{}{}
	m.mu.Unlock()
	x.sample(x.start)
	sctx, cancel := context.WithCancel(ctx)
	x.cancel = cancel
	go x.run(sctx)
	return x, nil
}

func (x *Measurement) noteOverlap(n int) {
	x.mu.Lock()
	x.overlap = max(x.overlap, n)
	x.mu.Unlock()
}

func (x *Measurement) run(ctx context.Context) {
	defer close(x.done)
	if len(x.gpus) == 0 && len(x.rapl) == 0 {
		<-ctx.Done()
		return
	}
	tick := time.NewTicker(x.m.opts.Interval)
	defer tick.Stop()
	lastCounter := time.Now()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			x.sample(now)
			if now.Sub(lastCounter) >= x.m.opts.CounterInterval {
				lastCounter = now
				x.mu.Lock()
				for _, c := range x.rapl {
					c.update()
				}
				x.mu.Unlock()
			}
		}
	}
}

// sample reads every GPU's power, utilization and memory.
func (x *Measurement) sample(now time.Time) {
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, t := range x.gpus {
		mw, src, err := t.dev.powerMW()
		if err != nil {
			continue
		}
		w := float64(mw) / 1000
		t.source = src
		if !t.lastT.IsZero() {
			t.integratedJ += (w + t.lastW) / 2 * now.Sub(t.lastT).Seconds()
		}
		t.lastW, t.lastT = w, now
		t.samples++
		t.powerSum += w
		t.powerMax = math.Max(t.powerMax, w)
		if u, err := t.dev.utilization(); err == nil {
			t.utilSum += float64(u)
		}
		if mem, err := t.dev.memoryUsed(); err == nil && mem > t.memMax {
			t.memMax = mem
		}
	}
}

// Stop ends the measurement and returns its report; later calls return
// the same report.
func (x *Measurement) Stop() Report {
	x.stopOnce.Do(func() {
		end := time.Now()
		x.cancel()
		<-x.done
		x.sample(end)
		m := x.m
		m.mu.Lock()
		m.shareCPU()
		delete(m.live, x)
		m.mu.Unlock()
		x.mu.Lock()
		defer x.mu.Unlock()
		r := Report{Start: x.start, End: end, Seconds: end.Sub(x.start).Seconds(), Interval: m.opts.Interval, Concurrent: x.overlap}
		r.LowConfidence = end.Sub(x.start) < LowConfidenceBelow
		driver := ""
		if m.gpus != nil {
			driver = m.gpus.driver()
		}
		for _, t := range x.gpus {
			inf := t.dev.info()
			g := GPUReport{UUID: inf.uuid, Index: inf.index, Name: inf.name, Shared: inf.mig, DriverVersion: driver,
				Samples: t.samples, PowerMaxW: t.powerMax, MemMaxBytes: t.memMax, IntegratedJ: t.integratedJ, PowerSource: t.source}
			if t.samples > 0 {
				g.PowerAvgW = t.powerSum / float64(t.samples)
				g.UtilAvgPct = t.utilSum / float64(t.samples)
			}
			g.Joules, g.Method = t.integratedJ, MethodIntegrated
			if t.counter {
				if v, err := t.dev.energyMJ(); err == nil {
					if v >= t.startMJ {
						g.Joules, g.Method = float64(v-t.startMJ)/1000, MethodCounter
					} else {
						g.Resets++ // the counter went backwards: a driver reset; keep the integral
						m.log.Warn("gpu_energy_counter_reset", "gpu", inf.uuid)
					}
				}
			}
			r.GPUs = append(r.GPUs, g)
		}
		for _, c := range x.rapl {
			c.update()
			r.CPU = append(r.CPU, DomainReport{Name: c.d.name, Joules: float64(c.total) / 1e6, Method: MethodCounter, Wraps: c.wraps})
		}
		cpu := x.cpuShare.Seconds()
		r.Estimated = Estimate{CPUSeconds: cpu, WattsPerCore: math.Max(m.opts.CPUWattsPerCore, 0), Method: MethodEstimated}
		r.Estimated.Joules = cpu * r.Estimated.WattsPerCore
		x.report = r
	})
	return x.report
}
