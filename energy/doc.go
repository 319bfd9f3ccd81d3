// Package energy measures what a task costs in energy. A [Meter] discovers
// the machine's sources once — NVIDIA GPUs through NVML (go-nvml), CPU
// packages and DRAM through RAPL (/sys/class/powercap) — and wraps each task
// in a [Measurement]: the GPUs' total-energy counters and RAPL's counters
// are read at the task's start and end (and once a second in between, for
// wrap-arounds and resets), the GPUs' instant power, utilization and memory
// are sampled at the job's interval, and [Measurement.Stop] returns a
// [Report] that says for every figure how it was obtained (counter,
// integrated) over which window and interval. Without a GPU or RAPL nothing
// fails: the report's measured energy is "none", and an estimate from CPU
// time × a per-core wattage stands beside it, labelled "estimated", never
// summed with measured figures. Measurements may overlap on a device: the
// Meter keeps a ledger per device and gives each its share of every span
// it was live in — by its process tree's use of the device
// ([Measurement.Track]), or equally — so that shares add up to the
// device's energy over the union of the windows, and each figure says how
// it was attributed. [Meter.Idle] measures idle power, [CO2Grams] turns
// joules into grams of CO2, and [Probe] tells an operator which sources
// work and how to fix the rest.
//
// go-nvml needs cgo and loads libnvidia-ml at run time: it sits behind a
// small interface in a linux && cgo file with a stub otherwise, so one
// binary runs on machines with and without a GPU, and CGO_ENABLED=0 builds
// report GPUs as unavailable. docs/energy.md describes the model.
package energy
