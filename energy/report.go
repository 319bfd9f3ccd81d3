package energy

import (
	"slices"
	"time"
)

// Methods: how a figure was obtained.
const (
	// MethodCounter is the difference of a hardware energy counter (NVML's
	// total energy, RAPL's energy_uj) read at the task's start and end and
	// every Options.CounterInterval in between.
	MethodCounter = "counter"
	// MethodIntegrated is the trapezoidal integral of sampled power, used
	// for GPUs without an energy counter (before Volta).
	MethodIntegrated = "integrated"
	// MethodEstimated is process CPU time × a per-core wattage: a model,
	// not a measurement.
	MethodEstimated = "estimated"
	// MethodMeasured is what [Report.Method] says of a report with any
	// counter or integrated figure.
	MethodMeasured = "measured"
	// MethodNone is what [Report.Method] says of a report with nothing
	// measured (no GPU, no readable RAPL): only the estimate stands.
	MethodNone = "none"
)

// LowConfidenceBelow is the window under which a report is flagged
// low-confidence: NVML's energy counter and power readings refresh about
// every 100 ms, so a shorter task's figures are a few readings at best.
const LowConfidenceBelow = time.Second

// Report is what a [Measurement] measured, or the sum of several (see
// [Report.Merge]). Each device figure's Joules is the measurement's share
// of the device: the device's energy over the window where no other
// measurement of the Meter overlapped it, split among the overlapping ones
// otherwise (see [AttributionExclusive] and the others), so that shares add
// up across measurements; DeviceJoules is the whole device's over the
// window, which overlapping reports must not sum. It is
// JSON-serialisable with stable snake_case keys; durations are integer
// nanoseconds in keys ending in _ns.
type Report struct {
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// Seconds is the window's length (after Merge, the windows' total).
	Seconds float64 `json:"seconds"`
	// LowConfidence is set for a window shorter than [LowConfidenceBelow].
	LowConfidence bool `json:"low_confidence"`
	// Concurrent is the most other measurements of the same Meter that
	// overlapped this one: they saw the same devices, so their
	// DeviceJoules must not be summed as if independent (their Joules may).
	Concurrent int `json:"concurrent"`
	// Attribution sums up the figures' attributions: AttributionExclusive
	// when every figure is, AttributionUtilization when any is, else
	// AttributionEqual; empty when nothing was measured.
	Attribution string `json:"attribution"`
	// Measurements is how many windows the report covers: 1, or more after
	// Merge.
	Measurements int `json:"measurements"`
	// Interval is the power timeline's sampling interval.
	Interval time.Duration `json:"interval_ns"`
	// CounterInterval is how often energy counters were read between the
	// window's ends.
	CounterInterval time.Duration `json:"counter_interval_ns"`
	// GPUs has one entry per visible NVIDIA GPU, in NVML order.
	GPUs []GPUReport `json:"gpus,omitempty"`
	// CPU has one entry per readable RAPL package or DRAM domain.
	CPU []DomainReport `json:"cpu,omitempty"`
	// Estimated is always filled, and never part of MeasuredJoules.
	Estimated Estimate `json:"estimated"`
}

// GPUReport is one GPU's figures over the window.
type GPUReport struct {
	UUID  string `json:"uuid"`
	Index int    `json:"index"` // NVML's index (PCI bus order)
	Name  string `json:"name"`
	// Joules is this measurement's share of the GPU's energy over the
	// window, by Method and Attribution: DeviceJoules when exclusive.
	Joules float64 `json:"joules"`
	// DeviceJoules is the whole GPU's energy over the window, whatever ran
	// on it.
	DeviceJoules float64 `json:"device_joules"`
	// Attribution is how Joules was split from DeviceJoules:
	// AttributionExclusive, AttributionUtilization or AttributionEqual.
	Attribution string `json:"attribution"`
	// CounterStartJ and CounterEndJ are NVML's total-energy counter at the
	// window's ends, in joules (0 without a counter; after Merge, the first
	// window's start and the last one's end). Windows of one GPU overlap
	// exactly where these spans do, so a coordinator with reports from
	// several processes can take the GPU's energy over their union in
	// counter space.
	CounterStartJ float64 `json:"counter_start_joules"`
	CounterEndJ   float64 `json:"counter_end_joules"`
	// Method is MethodCounter (NVML's total-energy counter) or
	// MethodIntegrated (the integral of the power timeline).
	Method string `json:"method"`
	// PowerAvgW is the time-weighted mean of the power timeline; PowerMaxW
	// its largest sample.
	PowerAvgW float64 `json:"power_avg_w"`
	PowerMaxW float64 `json:"power_max_w"`
	// IntegratedJ is the power timeline's integral, kept beside a counter
	// figure as a cross-check.
	IntegratedJ float64 `json:"integrated_joules"`
	// PowerSource is PowerInstant or PowerAverage.
	PowerSource string `json:"power_source"`
	// UtilAvgPct is the mean of the sampled utilization (percent of time a
	// kernel ran); MemMaxBytes the most device memory in use.
	UtilAvgPct  float64 `json:"util_avg_pct"`
	MemMaxBytes uint64  `json:"mem_max_bytes"`
	// Samples is how many power readings the timeline has, taken every
	// Interval.
	Samples  int           `json:"samples"`
	Interval time.Duration `json:"interval_ns"`
	// Shared marks a GPU in MIG mode: the figures are the whole GPU's,
	// shared by its MIG instances; MIG lists the instances this process
	// was given, where CUDA_VISIBLE_DEVICES named them.
	Shared bool     `json:"shared"`
	MIG    []string `json:"mig,omitempty"`
	// Resets counts energy counter readings that went backwards (a driver
	// reload): the span around each is integrated from the power timeline.
	Resets        int    `json:"resets"`
	DriverVersion string `json:"driver_version"`
	// Notes are facts about the figures worth knowing (a reading that
	// failed, a source that stopped).
	Notes []string `json:"notes,omitempty"`
}

// DomainReport is one RAPL domain's energy over the window: the whole
// package's (or its DRAM's), whatever ran on it.
type DomainReport struct {
	Name string `json:"name"` // package-0, package-0/dram, ...
	// Joules is this measurement's share of the domain's energy (as
	// GPUReport.Joules); DeviceJoules the whole domain's.
	Joules       float64  `json:"joules"`
	DeviceJoules float64  `json:"device_joules"`
	Method       string   `json:"method"`      // MethodCounter
	Attribution  string   `json:"attribution"` // as GPUReport.Attribution
	Wraps        int      `json:"wraps"`       // counter wrap-arounds counted in
	Notes        []string `json:"notes,omitempty"`
}

// Estimate is the CPU-time estimate: CPUSeconds × WattsPerCore.
type Estimate struct {
	CPUSeconds   float64 `json:"cpu_seconds"`
	WattsPerCore float64 `json:"watts_per_core"`
	Joules       float64 `json:"joules"`
	Method       string  `json:"method"` // MethodEstimated
}

// attribution sums up the figures' attributions (see Report.Attribution).
func (r Report) attribution() string {
	var labels []string
	for _, g := range r.GPUs {
		labels = append(labels, g.Attribution)
	}
	for _, d := range r.CPU {
		labels = append(labels, d.Attribution)
	}
	out := ""
	for _, l := range labels {
		out = worseAttribution(out, l)
	}
	return out
}

// worseAttribution returns the less exclusive of two attributions, as a
// figure covering both would be labelled: utilization over equal over
// exclusive ("" is none).
func worseAttribution(a, b string) string {
	rank := func(s string) int {
		switch s {
		case AttributionUtilization:
			return 3
		case AttributionEqual:
			return 2
		case AttributionExclusive:
			return 1
		}
		return 0
	}
	if rank(b) > rank(a) {
		return b
	}
	return a
}

// GPUJoules returns the GPUs' attributed joules summed.
func (r Report) GPUJoules() float64 {
	var s float64
	for _, g := range r.GPUs {
		s += g.Joules
	}
	return s
}

// CPUJoules returns the RAPL domains' attributed joules summed.
func (r Report) CPUJoules() float64 {
	var s float64
	for _, d := range r.CPU {
		s += d.Joules
	}
	return s
}

// MeasuredJoules returns the GPU plus CPU measured joules, attributed
// (so that overlapping measurements' add up); never the estimate.
func (r Report) MeasuredJoules() float64 { return r.GPUJoules() + r.CPUJoules() }

// Method returns MethodMeasured when any figure was measured, else
// MethodNone (the estimate alone stands).
func (r Report) Method() string {
	if len(r.GPUs) > 0 || len(r.CPU) > 0 {
		return MethodMeasured
	}
	return MethodNone
}

// CO2Grams converts joules to grams of CO2: kWh × PUE × carbon intensity
// (gCO2 per kWh).
func CO2Grams(joules, pue, gPerKWh float64) float64 {
	return joules / 3.6e6 * pue * gPerKWh
}

// Merge returns the sum of two reports of successive tasks metered by the
// same Meter (say the evaluation and the training of one round on one
// site): joules, samples and CPU seconds add up; maxima and flags carry
// over; averages are weighted by window length; the window spans both, and
// Seconds is the windows' total. A GPU that one report measured by counter
// and the other by integral is labelled integrated; attributions combine
// as Report.Attribution does. Reports of overlapping tasks may be merged
// for their Joules (attributed shares), but the merged DeviceJoules then
// counts the overlap twice. The zero Report is Merge's identity.
func (r Report) Merge(o Report) Report {
	if r.Measurements == 0 && r.Start.IsZero() {
		return o.clone()
	}
	if o.Measurements == 0 && o.Start.IsZero() {
		return r.clone()
	}
	out := r.clone()
	if o.Start.Before(out.Start) {
		out.Start = o.Start
	}
	if o.End.After(out.End) {
		out.End = o.End
	}
	out.Seconds = r.Seconds + o.Seconds
	out.LowConfidence = r.LowConfidence || o.LowConfidence
	out.Concurrent = max(r.Concurrent, o.Concurrent)
	out.Attribution = worseAttribution(r.Attribution, o.Attribution)
	out.Measurements = max(r.Measurements, 1) + max(o.Measurements, 1)
	out.Interval = max(r.Interval, o.Interval)
	out.CounterInterval = max(r.CounterInterval, o.CounterInterval)
	wr, wo := weights(r.Seconds, o.Seconds)
	for _, g := range o.GPUs {
		i := slices.IndexFunc(out.GPUs, func(x GPUReport) bool { return x.UUID == g.UUID })
		if i < 0 {
			out.GPUs = append(out.GPUs, g.clone())
			continue
		}
		a := &out.GPUs[i]
		a.Joules += g.Joules
		a.DeviceJoules += g.DeviceJoules
		a.Attribution = worseAttribution(a.Attribution, g.Attribution)
		if g.Method == MethodCounter && a.Method == MethodCounter {
			if g.CounterStartJ < a.CounterStartJ {
				a.CounterStartJ = g.CounterStartJ
			}
			a.CounterEndJ = max(a.CounterEndJ, g.CounterEndJ)
		} else {
			a.CounterStartJ, a.CounterEndJ = 0, 0
		}
		if a.Method != g.Method {
			a.Method = MethodIntegrated
		}
		a.PowerAvgW = a.PowerAvgW*wr + g.PowerAvgW*wo
		a.UtilAvgPct = a.UtilAvgPct*wr + g.UtilAvgPct*wo
		a.PowerMaxW = max(a.PowerMaxW, g.PowerMaxW)
		a.MemMaxBytes = max(a.MemMaxBytes, g.MemMaxBytes)
		a.IntegratedJ += g.IntegratedJ
		a.Samples += g.Samples
		a.Interval = max(a.Interval, g.Interval)
		a.Shared = a.Shared || g.Shared
		a.MIG = union(a.MIG, g.MIG)
		a.Resets += g.Resets
		if a.DriverVersion == "" {
			a.DriverVersion = g.DriverVersion
		}
		a.Notes = union(a.Notes, g.Notes)
	}
	for _, d := range o.CPU {
		i := slices.IndexFunc(out.CPU, func(x DomainReport) bool { return x.Name == d.Name })
		if i < 0 {
			out.CPU = append(out.CPU, d.clone())
			continue
		}
		a := &out.CPU[i]
		a.Joules += d.Joules
		a.DeviceJoules += d.DeviceJoules
		a.Attribution = worseAttribution(a.Attribution, d.Attribution)
		a.Wraps += d.Wraps
		a.Notes = union(a.Notes, d.Notes)
	}
	e := &out.Estimated
	e.CPUSeconds += o.Estimated.CPUSeconds
	e.Joules += o.Estimated.Joules
	if e.WattsPerCore != o.Estimated.WattsPerCore && e.CPUSeconds > 0 {
		e.WattsPerCore = e.Joules / e.CPUSeconds // the effective rate
	}
	if e.Method == "" {
		e.Method = o.Estimated.Method
	}
	return out
}

// weights returns the shares of two windows in their total (halves when
// both are empty).
func weights(a, b float64) (float64, float64) {
	if a+b <= 0 {
		return 0.5, 0.5
	}
	return a / (a + b), b / (a + b)
}

// union appends to a the strings of b it lacks.
func union(a, b []string) []string {
	for _, s := range b {
		if !slices.Contains(a, s) {
			a = append(a, s)
		}
	}
	return a
}

// clone returns a copy that shares no slice with r.
func (r Report) clone() Report {
	r.GPUs = slices.Clone(r.GPUs)
	for i := range r.GPUs {
		r.GPUs[i] = r.GPUs[i].clone()
	}
	r.CPU = slices.Clone(r.CPU)
	for i := range r.CPU {
		r.CPU[i] = r.CPU[i].clone()
	}
	return r
}

func (g GPUReport) clone() GPUReport {
	g.MIG, g.Notes = slices.Clone(g.MIG), slices.Clone(g.Notes)
	return g
}

func (d DomainReport) clone() DomainReport {
	d.Notes = slices.Clone(d.Notes)
	return d
}
