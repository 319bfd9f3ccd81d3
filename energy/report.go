package energy

import "time"

// Methods: how a figure was obtained.
const (
	// MethodCounter is the difference of a hardware energy counter (NVML's
	// total energy, RAPL's energy_uj) read at the task's start and end.
	MethodCounter = "counter"
	// MethodIntegrated is the trapezoidal integral of sampled instant power,
	// used for GPUs without an energy counter (before Volta).
	MethodIntegrated = "integrated"
	// MethodEstimated is process CPU time × a per-core wattage.
	MethodEstimated = "estimated"
	// MethodMeasured labels a report with any counter or integrated figure.
	MethodMeasured = "measured"
	// MethodNone labels a report with nothing measured.
	MethodNone = "none"
)

// LowConfidenceBelow is the task length under which figures are flagged:
// NVML's counter ticks about every 100 ms, so short windows are coarse.
const LowConfidenceBelow = time.Second

// Report is what a Measurement measured. It is JSON-serialisable with
// stable snake_case keys.
type Report struct {
	Start   time.Time `json:"start"`
	End     time.Time `json:"end"`
	Seconds float64   `json:"seconds"`
	// LowConfidence is set for windows shorter than [LowConfidenceBelow].
	LowConfidence bool `json:"low_confidence"`
	// Concurrent is the most other measurements of this Meter that
	// overlapped this one: their figures cover the same devices, so they
	// must not be summed as if independent.
	Concurrent int            `json:"concurrent"`
	Interval   time.Duration  `json:"interval_ns"`
	GPUs       []GPUReport    `json:"gpus,omitempty"`
	CPU        []DomainReport `json:"cpu,omitempty"`
	// Estimated is always filled, separately from the measured figures.
	Estimated Estimate `json:"estimated"`
}

// GPUReport is one GPU's figures over the window.
type GPUReport struct {
	UUID          string  `json:"uuid"`
	Index         int     `json:"index"`
	Name          string  `json:"name"`
	Joules        float64 `json:"joules"`
	Method        string  `json:"method"`
	PowerAvgW     float64 `json:"power_avg_w"`
	PowerMaxW     float64 `json:"power_max_w"`
	IntegratedJ   float64 `json:"integrated_joules"` // ∫ instant power, beside the counter
	UtilAvgPct    float64 `json:"util_avg_pct"`
	MemMaxBytes   uint64  `json:"mem_max_bytes"`
	Samples       int     `json:"samples"`
	Shared        bool    `json:"shared"` // a MIG device: whole-GPU figures
	Resets        int     `json:"resets"` // counter went backwards (driver reset)
	DriverVersion string  `json:"driver_version"`
	PowerSource   string  `json:"power_source"` // instant or average (GetPowerUsage)
}

// DomainReport is one RAPL domain's energy over the window.
type DomainReport struct {
	Name   string  `json:"name"` // package-0, dram, ...
	Joules float64 `json:"joules"`
	Method string  `json:"method"`
	Wraps  int     `json:"wraps"`
}

// Estimate is the CPU-time estimate.
type Estimate struct {
	CPUSeconds   float64 `json:"cpu_seconds"`
	WattsPerCore float64 `json:"watts_per_core"`
	Joules       float64 `json:"joules"`
	Method       string  `json:"method"`
}

// GPUJoules returns the GPUs' joules summed.
func (r Report) GPUJoules() float64 {
	var s float64
	for _, g := range r.GPUs {
		s += g.Joules
	}
	return s
}

// CPUJoules returns the RAPL domains' joules summed.
func (r Report) CPUJoules() float64 {
	var s float64
	for _, d := range r.CPU {
		s += d.Joules
	}
	return s
}

// MeasuredJoules returns GPU plus CPU measured joules (never the estimate).
func (r Report) MeasuredJoules() float64 { return r.GPUJoules() + r.CPUJoules() }

// Method returns MethodMeasured when anything was measured, else MethodNone.
func (r Report) Method() string {
	if len(r.GPUs) > 0 || len(r.CPU) > 0 {
		return MethodMeasured
	}
	return MethodNone
}

// CO2Grams converts joules to grams of CO2: kWh × PUE × carbon intensity.
func CO2Grams(joules, pue, gPerKWh float64) float64 {
	return joules / 3.6e6 * pue * gPerKWh
}
