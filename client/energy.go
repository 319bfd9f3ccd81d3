package client

import (
	"context"
	"encoding/json"
	"time"

	"github.com/cohortfl/cohort/energy"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
)

// EnergyMeter adapts an energy.Meter to the agent's [Meter].
func EnergyMeter(m *energy.Meter) Meter { return energyMeter{m} }

type energyMeter struct{ m *energy.Meter }

// Start begins a measurement of the task with the job's sampling interval
// and estimate wattage.
func (e energyMeter) Start(ctx context.Context, t *pb.Task) (Measurement, error) {
	x, err := e.m.Start(ctx,
		energy.WithInterval(time.Duration(t.GetEnergyIntervalMs())*time.Millisecond),
		energy.WithCPUWattsPerCore(t.GetCpuWattsPerCore()))
	if err != nil {
		return nil, err
	}
	return measurement{x}, nil
}

type measurement struct{ x *energy.Measurement }

func (m measurement) Track(pid int) { m.x.Track(pid) }
func (m measurement) AddCPUTime(seconds float64) {
	m.x.AddCPUTime(time.Duration(seconds * float64(time.Second)))
}
func (m measurement) Stop() *pb.EnergyReport { return ReportToProto(m.x.Stop()) }

// ReportToProto converts an energy report for the wire; the full report
// also travels as JSON for tracking artifacts.
func ReportToProto(r energy.Report) *pb.EnergyReport {
	out := &pb.EnergyReport{
		Seconds:       r.Seconds,
		LowConfidence: r.LowConfidence,
		Method:        r.Method(),
		Concurrent:    int32(r.Concurrent),
		Attribution:   r.Attribution,
		StartUnixMs:   unixMs(r.Start),
		EndUnixMs:     unixMs(r.End),
		Estimated: &pb.EnergyEstimate{
			CpuSeconds: r.Estimated.CPUSeconds, WattsPerCore: r.Estimated.WattsPerCore, Joules: r.Estimated.Joules,
		},
	}
	for _, g := range r.GPUs {
		out.Gpus = append(out.Gpus, &pb.GPUEnergy{
			Uuid: g.UUID, Index: int32(g.Index), Name: g.Name, Joules: g.Joules, Method: g.Method,
			PowerAvgWatts: g.PowerAvgW, PowerMaxWatts: g.PowerMaxW, UtilizationAvgPercent: g.UtilAvgPct,
			MemoryMaxBytes: g.MemMaxBytes, Samples: int32(g.Samples), IntervalMs: r.Interval.Milliseconds(),
			Shared: g.Shared, Resets: int32(g.Resets), DriverVersion: g.DriverVersion,
			DeviceJoules: g.DeviceJoules, Attribution: g.Attribution,
			CounterStartJoules: g.CounterStartJ, CounterEndJoules: g.CounterEndJ,
		})
	}
	for _, c := range r.CPU {
		out.Cpu = append(out.Cpu, &pb.DomainEnergy{Name: c.Name, Joules: c.Joules, Method: c.Method, Wraps: int32(c.Wraps),
			DeviceJoules: c.DeviceJoules, Attribution: c.Attribution})
	}
	if b, err := json.Marshal(r); err == nil {
		out.Json = b
	}
	return out
}

func unixMs(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMilli()
}
