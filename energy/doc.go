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
// summed with measured figures. [CO2Grams] turns joules into grams of CO2,
// and [Probe] tells an operator which sources work and how to fix the rest.
//
// go-nvml needs cgo and loads libnvidia-ml at run time: it sits behind a
// small interface in a linux && cgo file with a stub otherwise, so one
// binary runs on machines with and without a GPU, and CGO_ENABLED=0 builds
// report GPUs as unavailable. docs/energy.md describes the model.
package energy
