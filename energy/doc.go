// Package energy measures what a task costs in energy: a [Meter] wraps each
// task in a [Measurement] that reads NVIDIA GPUs' total-energy counters
// (NVML, through go-nvml) and the CPU's RAPL counters (powercap) at the
// task's start and end, samples the GPUs' instant power, utilization and
// memory at the job's interval in between, and returns a [Report] that says
// for every figure how it was obtained. Without a GPU or RAPL nothing fails:
// the report's measured energy is "none" and an estimate from the process's
// CPU time times a per-core wattage stands beside it, labelled "estimated",
// never summed with measured figures.
//
// go-nvml needs cgo and loads libnvidia-ml at run time; it sits behind a
// small interface in a linux && cgo file with a stub otherwise, so one
// binary runs with and without a GPU.
package energy
