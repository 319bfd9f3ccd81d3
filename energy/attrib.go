package energy

import (
	"slices"
	"time"
)

// Attributions: how a figure's share of a device shared with other
// measurements of the same Meter was worked out, as GPUReport.Attribution,
// DomainReport.Attribution and Report.Attribution say.
const (
	// AttributionExclusive: no other measurement of the Meter was live on
	// the device during the window, so the figure is the device's energy
	// over the window (whatever else, outside the Meter, ran on it).
	AttributionExclusive = "exclusive"
	// AttributionUtilization: in at least one span shared with other
	// measurements, the device's energy was split by the measurements'
	// process trees' use of it — NVML's per-process SM utilization for a
	// GPU, CPU time for a RAPL domain.
	AttributionUtilization = "attributed-utilization"
	// AttributionEqual: the device was shared, and every shared span was
	// split in equal shares (no process tree tracked, or no utilization
	// reported for any).
	AttributionEqual = "attributed-equal"
)

// ledger splits each device's energy among the measurements live on it.
// Every device's counter is read at each Start and Stop and at the
// measurements' periodic counter reads; each delta between two readings
// is split among the measurements live in that segment by weight, so the
// shares of all measurements add up to the device's energy over the union
// of their windows. It is guarded by Meter.mu.
type ledger struct {
	init bool
	t    time.Time // the last boundary
	gpu  []devLedger
	rapl []devLedger
}

// devLedger is one device's account.
type devLedger struct {
	last    uint64 // the last good counter reading (mJ or µJ)
	ok      bool   // last is set
	pending []segment
	since   uint64 // GPU: the last process utilization sample seen, µs
}

// maxPending bounds the segments kept while a counter cannot be read.
const maxPending = 1 << 12

// segment is a span between two boundaries whose energy is not split yet
// (its closing counter read failed).
type segment struct {
	seconds float64
	who     []*Measurement
	frac    []float64 // each one's share of the segment, summing to 1
}

// share is a measurement's account of one device.
type share struct {
	joules   float64 // from the counter's deltas
	fracSec  float64 // Σ share × seconds, for a figure without a counter
	shared   bool    // another measurement was live on the device with it
	weighted bool    // a shared segment was split by utilization or CPU time
}

func (s share) attribution() string {
	switch {
	case !s.shared:
		return AttributionExclusive
	case s.weighted:
		return AttributionUtilization
	}
	return AttributionEqual
}

// reading is one counter read.
type reading struct {
	v   uint64
	err error
}

// readings are every device's counter at one boundary, in the order of
// gpuBackend.devices and Meter.rapl.
type readings struct {
	gpu  []reading
	rapl []reading
}

// Track adds the process pid and, from then on, its descendants to the
// measurement's process tree: a shared device's energy is split among
// overlapping measurements by their trees' use of it (NVML's per-process
// utilization of a GPU, CPU time for RAPL). Call it once the task's
// trainer process has started, any time before Stop, as often as there
// are roots. A process is known by its PID and start time, so a PID reused
// after the process exited is not credited; one that exits stops counting.
// A measurement never tracked (a trainer inside this process) gets an
// equal share of a shared span. Track does nothing after Stop, or where
// /proc cannot be read.
func (x *Measurement) Track(pid int) {
	p, err := readStat(x.m.opts.proc, pid)
	if err != nil {
		x.m.log.Debug("energy_track_failed", "pid", pid, "err", err)
	}
	m := x.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, live := m.live[x]; !live {
		return
	}
	x.tracked = true
	if err == nil {
		if _, ok := x.members[p.key()]; !ok {
			x.members[p.key()] = p.ticks
		}
	}
}

// AddCPUTime adds d to the CPU time behind the measurement's estimate: the
// CPU time of work done outside this process for the measured task (an
// external trainer's process, which the meter's own CPU time does not
// include). It does nothing after Stop.
func (x *Measurement) AddCPUTime(d time.Duration) {
	m := x.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, live := m.live[x]; live && d > 0 {
		x.cpuShare += d
	}
}

// advance closes the segment ending at now: it reads every counter, splits
// each device's delta since its last good reading among the measurements
// live in the segment, and returns the readings. m.mu must be held.
func (m *Meter) advance(now time.Time) readings {
	var rd readings
	var devs []gpuDevice
	if m.gpus != nil {
		devs = m.gpus.devices()
	}
	for _, d := range devs {
		v, err := d.energyMJ()
		rd.gpu = append(rd.gpu, reading{v, err})
	}
	for _, d := range m.rapl {
		v, err := d.read()
		rd.rapl = append(rd.rapl, reading{v, err})
	}
	l := &m.led
	if !l.init {
		l.init, l.t = true, now
		l.gpu = make([]devLedger, len(devs))
		l.rapl = make([]devLedger, len(m.rapl))
	}
	if now.Before(l.t) {
		now = l.t
	}
	dur := now.Sub(l.t).Seconds()
	l.t = now

	live := make([]*Measurement, 0, len(m.live))
	tracked := false
	for x := range m.live {
		live = append(live, x)
		tracked = tracked || x.tracked
	}
	slices.SortFunc(live, func(a, b *Measurement) int { return a.seq - b.seq })
	shared := len(live) > 1

	var snap procSnap
	var cpu []float64
	if tracked {
		snap = snapshot(m.opts.proc)
		cpu = m.grow(snap, live)
	}
	stamp := uint64(max(now.UnixMicro(), 0))
	for i, d := range devs {
		dl := &l.gpu[i]
		var w []float64
		if shared && tracked {
			w = m.gpuWeights(dl, d, snap, live)
		} else {
			dl.since = max(dl.since, stamp)
		}
		frac, weighted := fractions(live, w)
		dl.settle(rd.gpu[i], dur, live, frac, weighted, func(x *Measurement) *share { return &x.gpuShare[i] },
			func(last, v uint64) float64 {
				if v < last { // a driver reload restarted the counter
					return float64(v) / 1000
				}
				return float64(v-last) / 1000
			})
	}
	for j, d := range m.rapl {
		frac, weighted := fractions(live, cpu)
		l.rapl[j].settle(rd.rapl[j], dur, live, frac, weighted, func(x *Measurement) *share { return &x.raplShare[j] },
			func(last, v uint64) float64 { return float64(raplDelta(last, v, d.maxRange)) / 1e6 })
	}
	return rd
}

// settle records the segment just ended and, when the counter was read,
// splits the delta since the last good reading over the pending segments
// by length and within each by share.
func (dl *devLedger) settle(r reading, dur float64, live []*Measurement, frac []float64, weighted []bool,
	acc func(*Measurement) *share, delta func(last, v uint64) float64) {
	if len(live) > 0 {
		for i, x := range live {
			s := acc(x)
			s.fracSec += frac[i] * dur
			if len(live) > 1 {
				s.shared = true
				s.weighted = s.weighted || weighted[i]
			}
		}
		dl.pending = append(dl.pending, segment{seconds: dur, who: live, frac: frac})
	}
	if r.err != nil {
		if !dl.ok || len(dl.pending) > maxPending {
			// No reading to start from (no counter), or none for too
			// long: what the segments drew cannot be known.
			dl.pending = nil
		}
		return
	}
	if dl.ok && len(dl.pending) > 0 {
		j := delta(dl.last, r.v)
		var total float64
		for _, s := range dl.pending {
			total += s.seconds
		}
		for _, s := range dl.pending {
			part := j / float64(len(dl.pending))
			if total > 0 {
				part = j * s.seconds / total
			}
			for i, x := range s.who {
				acc(x).joules += part * s.frac[i]
			}
		}
	}
	dl.pending = nil
	dl.last, dl.ok = r.v, true
}

// fractions returns each live measurement's share of a segment given the
// weights w of the tracked ones (nil: none known): a measurement without a
// tracked process gets 1/n; the tracked ones split the rest by weight, or
// equally when none has any. weighted says whose share came from a
// weight.
func fractions(live []*Measurement, w []float64) ([]float64, []bool) {
	n := len(live)
	frac := make([]float64, n)
	weighted := make([]bool, n)
	var sum float64
	k := 0
	for i, x := range live {
		if x.tracked {
			k++
			if w != nil {
				sum += w[i]
			}
		}
	}
	for i, x := range live {
		switch {
		case !x.tracked || sum <= 0:
			frac[i] = 1 / float64(n)
		default:
			frac[i] = float64(k) / float64(n) * w[i] / sum
			weighted[i] = true
		}
	}
	return frac, weighted
}

// grow brings the live measurements' process trees up to date with snap —
// it drops processes that are gone (or whose PID was reused) and adds the
// descendants of those left — and returns the CPU ticks each tree spent
// since the last boundary.
func (m *Meter) grow(snap procSnap, live []*Measurement) []float64 {
	owner := make(map[procKey]*Measurement)
	for _, x := range live {
		for k := range x.members {
			if !snap.alive(k) {
				delete(x.members, k)
				continue
			}
			if _, taken := owner[k]; !taken {
				owner[k] = x
			}
		}
	}
	for pid, p := range snap {
		k := procKey{pid, p.start}
		if _, ok := owner[k]; ok {
			continue
		}
		chain := []procKey{k}
		for q, depth := p.ppid, 0; q > 0 && depth < 64; depth++ {
			pp, ok := snap[q]
			if !ok {
				break
			}
			pk := procKey{q, pp.start}
			if x, ok := owner[pk]; ok {
				for _, c := range chain {
					owner[c] = x
					x.members[c] = 0 // started inside the window: all its CPU time counts
				}
				break
			}
			chain = append(chain, pk)
			q = pp.ppid
		}
	}
	cpu := make([]float64, len(live))
	for i, x := range live {
		for k, base := range x.members {
			if owner[k] != x {
				continue
			}
			t := snap[k.pid].ticks
			if t > base {
				cpu[i] += float64(t - base)
			}
			x.members[k] = t
		}
	}
	return cpu
}

// gpuWeights sums each live measurement's processes' SM utilization in the
// samples NVML took since the last boundary; nil when it has none.
func (m *Meter) gpuWeights(dl *devLedger, d gpuDevice, snap procSnap, live []*Measurement) []float64 {
	samples, err := d.processUtilization(dl.since)
	if err != nil || len(samples) == 0 {
		return nil // NOT_FOUND (no sample since), not supported: equal shares
	}
	owner := make(map[procKey]int)
	for i, x := range live {
		for k := range x.members {
			if _, taken := owner[k]; !taken {
				owner[k] = i
			}
		}
	}
	w := make([]float64, len(live))
	since := dl.since
	for _, s := range samples {
		dl.since = max(dl.since, s.stamp)
		if s.stamp <= since {
			continue
		}
		p, ok := snap[s.pid]
		if !ok {
			continue // exited
		}
		if i, ok := owner[p.key()]; ok {
			w[i] += float64(s.smUtil)
		}
	}
	return w
}
