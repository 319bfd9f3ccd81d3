package energy

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"sync"
	"time"
)

// Defaults and limits of [Options].
const (
	// DefaultInterval is the power timeline's default sampling interval.
	DefaultInterval = 100 * time.Millisecond
	// MinInterval is the shortest sampling interval accepted. NVML's power
	// readings refresh no faster than every few milliseconds; below that
	// sampling costs CPU and adds nothing.
	MinInterval = time.Millisecond
	// DefaultCounterInterval is how often energy counters are read between
	// a window's ends by default: NVML's counter costs milliseconds of CPU
	// a read, so at most once a second.
	DefaultCounterInterval = time.Second
	// DefaultCPUWattsPerCore is the estimate's default wattage per busy
	// core: TDP ÷ cores of common server parts (a 150 W 16-core CPU is
	// 9.4 W a core), the way Green Algorithms (Lannelongue et al., 2021)
	// estimates.
	DefaultCPUWattsPerCore = 10.0
	// DefaultPowercapRoot is where Linux exposes RAPL.
	DefaultPowercapRoot = "/sys/class/powercap"
)

// Options configures a Meter. The zero value of every field is usable.
type Options struct {
	// Interval is the power timeline's sampling interval (default
	// DefaultInterval; at least MinInterval).
	Interval time.Duration
	// CounterInterval is how often the energy counters (NVML's total
	// energy, RAPL) are read between a window's start and end (default
	// DefaultCounterInterval). Reading them in between catches RAPL's
	// wrap-arounds and NVML counter resets; NVML's counter costs
	// milliseconds of CPU a read, so keep this at a second or more. It is
	// read on a sampling tick, so it is at least Interval in effect.
	CounterInterval time.Duration
	// CPUWattsPerCore is the estimate's wattage per busy core (0: the
	// default, DefaultCPUWattsPerCore; negative: no estimate, 0 J).
	CPUWattsPerCore float64
	// PowercapRoot is the powercap tree (default DefaultPowercapRoot).
	PowercapRoot string
	// Devices selects GPUs as CUDA_VISIBLE_DEVICES does (indices, GPU-/MIG-
	// UUIDs or unique prefixes). Empty: the environment's
	// CUDA_VISIBLE_DEVICES, every GPU when it is unset and none when it is
	// set but empty, as CUDA reads it. "all": every GPU.
	Devices string
	// NVML replaces the NVIDIA library, for tests: go-nvml's mock
	// (github.com/NVIDIA/go-nvml/pkg/nvml/mock). Nil loads libnvidia-ml.
	// Ignored in builds without cgo.
	NVML NVML
	// CPUTime returns the CPU time the estimate is based on (default: this
	// process's user+system time, all threads). A site that can tell its
	// task's own CPU time (a trainer in a child process) passes it here.
	CPUTime func() time.Duration
	// Logger receives the meter's logs; nil discards them.
	Logger *slog.Logger

	// For tests.
	gpus     gpuBackend                           // replaces NVML altogether
	noGPU    bool                                 // no NVML at all
	powercap fs.FS                                // replaces os.DirFS(PowercapRoot)
	clock    func() time.Time                     // replaces time.Now
	proc     fs.FS                                // replaces os.DirFS("/proc")
	after    func(time.Duration) <-chan time.Time // replaces time.After in Idle
	ticks    <-chan time.Time                     // replaces the sampler's ticker
	tickDone chan<- struct{}                      // told after each tick from ticks is handled
}

// validate returns every problem of o, each naming its field.
func (o Options) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidOptions}, args...)...))
	}
	if o.Interval < 0 || (o.Interval > 0 && o.Interval < MinInterval) {
		bad("Interval %s is shorter than %s; use %s (the default) or more", o.Interval, MinInterval, DefaultInterval)
	}
	if o.CounterInterval < 0 {
		bad("CounterInterval %s is negative; use %s (the default) or more", o.CounterInterval, DefaultCounterInterval)
	}
	if math.IsNaN(o.CPUWattsPerCore) || math.IsInf(o.CPUWattsPerCore, 0) {
		bad("CPUWattsPerCore %g is not a number of watts; use your CPU's TDP ÷ cores, or 0 for the default %g W", o.CPUWattsPerCore, DefaultCPUWattsPerCore)
	}
	return errors.Join(errs...)
}

// Source kinds, as SourceInfo.Kind says.
const (
	SourceNVML     = "nvml"
	SourceRAPL     = "rapl"
	SourceEstimate = "estimate"
)

// SourceInfo says whether an energy source is in use, and why not.
type SourceInfo struct {
	Kind      string `json:"kind"` // SourceNVML, SourceRAPL or SourceEstimate
	Name      string `json:"name"`
	Available bool   `json:"available"`
	// Reason says why an unavailable source is missing and what would fix
	// it, or how an available one is read.
	Reason string `json:"reason,omitempty"`
}

// Meter measures tasks. It discovers the energy sources once, in
// NewMeter, and is safe for concurrent use: measurements may overlap (each
// report says how many others did).
type Meter struct {
	opts    Options
	log     *slog.Logger
	clock   func() time.Time
	gpus    gpuBackend
	rapl    []raplDomain
	sources []SourceInfo

	mu      sync.Mutex
	closed  bool
	live    map[*Measurement]struct{}
	lastCPU time.Duration // process CPU time at the last Start or Stop
	led     ledger
	seq     int // the last measurement's number
}

// NewMeter discovers the energy sources. Missing hardware is not an
// error: [Meter.Sources] says what was found and why not. It fails only
// for invalid options.
func NewMeter(opts Options) (*Meter, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("opening the energy meter: %w", err)
	}
	if opts.Interval == 0 {
		opts.Interval = DefaultInterval
	}
	if opts.CounterInterval == 0 {
		opts.CounterInterval = DefaultCounterInterval
	}
	switch {
	case opts.CPUWattsPerCore == 0:
		opts.CPUWattsPerCore = DefaultCPUWattsPerCore
	case opts.CPUWattsPerCore < 0:
		opts.CPUWattsPerCore = 0
	}
	if opts.PowercapRoot == "" {
		opts.PowercapRoot = DefaultPowercapRoot
	}
	if opts.powercap == nil {
		opts.powercap = os.DirFS(opts.PowercapRoot)
	}
	if opts.proc == nil {
		opts.proc = os.DirFS("/proc")
	}
	if opts.CPUTime == nil {
		opts.CPUTime = processCPUTime
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	m := &Meter{opts: opts, log: opts.Logger, clock: opts.clock, live: make(map[*Measurement]struct{})}
	if m.clock == nil {
		m.clock = time.Now
	}
	m.openGPUs()
	m.openRAPL()
	est := SourceInfo{Kind: SourceEstimate, Name: "process CPU time", Available: opts.CPUWattsPerCore > 0}
	if est.Available {
		est.Reason = fmt.Sprintf("CPU seconds × %g W a core; reported beside measured figures, never summed with them", opts.CPUWattsPerCore)
	} else {
		est.Reason = "turned off (CPUWattsPerCore < 0)"
	}
	m.sources = append(m.sources, est)
	m.lastCPU = opts.CPUTime()
	return m, nil
}

func (m *Meter) openGPUs() {
	o := m.opts
	var reason string
	switch {
	case o.gpus != nil:
		m.gpus = o.gpus
	case o.noGPU:
		reason = "NVML turned off"
	default:
		spec, limited := resolveVisible(o.Devices)
		m.gpus, reason = defaultGPUs(o.NVML, spec, limited)
	}
	if m.gpus == nil {
		m.sources = append(m.sources, SourceInfo{Kind: SourceNVML, Name: "NVIDIA GPUs", Reason: reason})
		m.log.Info("energy_source_missing", "kind", SourceNVML, "reason", reason)
		return
	}
	for _, d := range m.gpus.devices() {
		inf := d.info()
		how := "energy counter"
		if !inf.counter {
			how = "no energy counter (before Volta, or not supported): joules integrated from power"
		}
		switch inf.power {
		case PowerInstant:
			how += "; instant power (FI_DEV_POWER_INSTANT)"
		default:
			how += "; power from nvmlDeviceGetPowerUsage (a 1 s average on Ampere and later: the driver lacks the instant field)"
		}
		if inf.mig {
			how += "; MIG mode: whole-GPU figures, shared by its instances"
		}
		how += "; driver " + m.gpus.driver()
		name := fmt.Sprintf("GPU %d %s %s", inf.index, inf.name, inf.uuid)
		m.sources = append(m.sources, SourceInfo{Kind: SourceNVML, Name: name, Available: true, Reason: how})
	}
}

func (m *Meter) openRAPL() {
	rapl, reason := openRAPL(m.opts.powercap, m.opts.PowercapRoot)
	m.rapl = rapl
	if len(rapl) == 0 {
		m.sources = append(m.sources, SourceInfo{Kind: SourceRAPL, Name: "CPU packages and DRAM", Reason: reason})
		m.log.Info("energy_source_missing", "kind", SourceRAPL, "reason", reason)
	}
	for _, d := range rapl {
		how := "energy_uj counter"
		if d.maxRange == 0 {
			how += "; max_energy_range_uj unreadable, so a wrap-around loses the part before it"
		}
		m.sources = append(m.sources, SourceInfo{Kind: SourceRAPL, Name: d.name, Available: true, Reason: how})
	}
}

// Sources lists the energy sources and why each is or is not in use.
func (m *Meter) Sources() []SourceInfo { return append([]SourceInfo(nil), m.sources...) }

// Close shuts NVML down. Measurements still running keep their timeline
// so far and report their GPU readings after Close as failed; Start then
// returns ErrClosed. Close is idempotent.
func (m *Meter) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	if m.gpus != nil {
		m.gpus.close()
	}
	return nil
}

// shareCPU credits the process CPU time spent since the last call equally
// to the live measurements. m.mu must be held.
func (m *Meter) shareCPU() {
	now := m.opts.CPUTime()
	if n := len(m.live); n > 0 && now > m.lastCPU {
		share := (now - m.lastCPU) / time.Duration(n)
		for x := range m.live {
			x.cpuShare += share
		}
	}
	m.lastCPU = now
}
