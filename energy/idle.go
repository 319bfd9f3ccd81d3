package energy

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// IdleReport is the machine's idle power: every source's average over a
// span in which nothing was measured, to be taken before a job so that its
// energy above idle is its joules − Watts × its seconds.
type IdleReport struct {
	Start   time.Time `json:"start"`
	Seconds float64   `json:"seconds"`
	// Watts is the GPUs' and RAPL domains' average power summed.
	Watts float64 `json:"watts"`
	// Method is MethodCounter when every figure is by counter,
	// MethodIntegrated when any is from power readings, MethodNone when
	// the machine has no source.
	Method string       `json:"method"`
	GPUs   []IdleGPU    `json:"gpus,omitempty"`
	CPU    []IdleDomain `json:"cpu,omitempty"`
}

// IdleGPU is one GPU's idle power.
type IdleGPU struct {
	UUID  string  `json:"uuid"`
	Index int     `json:"index"`
	Watts float64 `json:"watts"`
	// Method is MethodCounter (the energy counter's difference over the
	// span) or MethodIntegrated (the mean of the power readings at its
	// ends, without a readable counter).
	Method string `json:"method"`
}

// IdleDomain is one RAPL domain's idle power, by counter.
type IdleDomain struct {
	Name   string  `json:"name"`
	Watts  float64 `json:"watts"`
	Method string  `json:"method"`
}

// Idle reads every source's counter at the start and the end of d (2 s is
// typical) and returns their average power. Call it while nothing runs on
// the devices — before a job; measurements live meanwhile are counted in.
// It fails for a non-positive d, after Close (ErrClosed), or when ctx ends
// first.
func (m *Meter) Idle(ctx context.Context, d time.Duration) (IdleReport, error) {
	if d <= 0 {
		return IdleReport{}, fmt.Errorf("measuring idle power: span %s must be positive (2s is typical)", d)
	}
	m.mu.Lock()
	closed := m.closed
	m.mu.Unlock()
	if closed {
		return IdleReport{}, fmt.Errorf("measuring idle power: %w", ErrClosed)
	}
	var devs []gpuDevice
	if m.gpus != nil {
		devs = m.gpus.devices()
	}
	type ends struct {
		mj  uint64
		ok  bool
		mw  uint32
		pok bool
	}
	readGPUs := func() []ends {
		out := make([]ends, len(devs))
		for i, g := range devs {
			out[i].mj, out[i].ok = readOK(g.energyMJ)
			out[i].mw, out[i].pok = readOK(g.powerMW)
		}
		return out
	}
	readRAPL := func() []reading {
		out := make([]reading, len(m.rapl))
		for i, r := range m.rapl {
			out[i].v, out[i].err = r.read()
		}
		return out
	}
	if len(devs) == 0 && len(m.rapl) == 0 {
		// Nothing to read: no need to wait.
		return IdleReport{Start: m.clock(), Method: MethodNone}, nil
	}
	start := m.clock()
	g0, r0 := readGPUs(), readRAPL()
	after := m.opts.after
	if after == nil {
		t := time.NewTimer(d)
		defer t.Stop()
		after = func(time.Duration) <-chan time.Time { return t.C }
	}
	select {
	case <-ctx.Done():
		return IdleReport{}, fmt.Errorf("measuring idle power: %w", ctx.Err())
	case <-after(d):
	}
	end := m.clock()
	g1, r1 := readGPUs(), readRAPL()

	rep := IdleReport{Start: start, Seconds: end.Sub(start).Seconds(), Method: MethodNone}
	if rep.Seconds <= 0 {
		return rep, fmt.Errorf("measuring idle power: the clock did not advance over %s", d)
	}
	for i, g := range devs {
		inf := g.info()
		e := IdleGPU{UUID: inf.uuid, Index: inf.index}
		switch a, b := g0[i], g1[i]; {
		case a.ok && b.ok && b.mj >= a.mj:
			e.Watts, e.Method = float64(b.mj-a.mj)/1000/rep.Seconds, MethodCounter
		case a.pok && b.pok:
			e.Watts, e.Method = (float64(a.mw)+float64(b.mw))/2/1000, MethodIntegrated
		default:
			m.log.Warn("gpu_idle_unreadable", "gpu", inf.uuid)
			continue
		}
		rep.GPUs = append(rep.GPUs, e)
	}
	for i, r := range m.rapl {
		a, b := r0[i], r1[i]
		if a.err != nil || b.err != nil {
			m.log.Warn("rapl_read_failed", "domain", r.name, "err", errors.Join(a.err, b.err))
			continue
		}
		w := float64(raplDelta(a.v, b.v, r.maxRange)) / 1e6 / rep.Seconds
		rep.CPU = append(rep.CPU, IdleDomain{Name: r.name, Watts: w, Method: MethodCounter})
	}
	for _, g := range rep.GPUs {
		rep.Watts += g.Watts
		rep.Method = worseMethod(rep.Method, g.Method)
	}
	for _, c := range rep.CPU {
		rep.Watts += c.Watts
		rep.Method = worseMethod(rep.Method, c.Method)
	}
	return rep, nil
}

// readOK calls a reading and says whether it succeeded.
func readOK[T any](f func() (T, error)) (T, bool) {
	v, err := f()
	return v, err == nil
}

// worseMethod is the method of a sum of figures by a and b.
func worseMethod(a, b string) string {
	if a == MethodIntegrated || b == MethodIntegrated {
		return MethodIntegrated
	}
	return b
}
