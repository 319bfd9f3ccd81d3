package server

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// purpose says what a piece of an arm's energy paid for.
type purpose int

const (
	// purposeTrain is training whose update the round aggregated, and the
	// coordinator's aggregation.
	purposeTrain purpose = iota
	// purposeEval is evaluating a global model: the sites' evaluation of
	// the model they received, and the coordinator's or eval site's
	// test-set evaluation.
	purposeEval
	// purposeWasted is work that was then discarded: an update rejected,
	// late, cut by over-selection or cancelled, a task that failed.
	purposeWasted
	purposes
)

// Energy methods of an arm's figures (the cohort.energy_method tag).
const (
	methodMeasured  = "measured"
	methodEstimated = "estimated"
)

// energyTally adds up what one round of an arm cost, by purpose, from the
// sites' energy reports and the coordinator's own measurements. Measured
// and estimated figures are kept apart and never summed together: the
// round is measured only when every report measured something.
//
// Site reports carry attributed figures (an overlapping task's share of a
// shared device, see package energy), so within one meter their sum is the
// device's energy over the union of the windows. Reports from different
// meters on one GPU (several site agents on one host) cannot know of each
// other; the tally catches that in counter space: the windows of one GPU
// overlap exactly where their counter readings do, so the figures of a
// GPU are scaled down to the union of their counter intervals whenever
// they add up to more.
type energyTally struct {
	reports []taggedReport
	// missing is set when a site's work came without a report (a site
	// without a meter): the round is then estimated, as nothing measured it.
	missing bool
	// coordinator-side measurements, by purpose and method
	coordMeasured  [purposes]float64
	coordEstimated [purposes]float64
	// alone is the seconds of the coordinator's work that no site task
	// overlapped (evaluating the round's model), counted in BusySeconds.
	alone float64
}

type taggedReport struct {
	why purpose
	r   *pb.EnergyReport
}

// roundEnergy is a round's energy, by the one method the round's figures
// share.
type roundEnergy struct {
	Method string // methodMeasured or methodEstimated
	// Total is every joule of the round: Train + Eval + Wasted.
	Total float64
	// ByPurpose splits Total.
	ByPurpose [purposes]float64
	// BusySeconds is the union of the site reports' windows, plus the
	// coordinator's evaluation: the time during which something of the arm
	// was measured.
	BusySeconds float64
	// GPUUtil is the seconds-weighted mean GPU utilisation of the reports
	// that had a GPU; NaN when none did.
	GPUUtil float64
}

// addReport counts a site's report for why; nil is a site's work that
// nothing measured.
func (t *energyTally) addReport(why purpose, r *pb.EnergyReport) {
	if r == nil {
		t.missing = true
		return
	}
	t.reports = append(t.reports, taggedReport{why, r})
}

// addCoordinator counts one of the coordinator's own measurements.
func (t *energyTally) addCoordinator(why purpose, joules float64, method string) {
	switch method {
	case methodMeasured:
		t.coordMeasured[why] += joules
	case methodEstimated:
		t.coordEstimated[why] += joules
	}
}

// merge adds o's figures to t.
func (t *energyTally) merge(o *energyTally) {
	t.reports = append(t.reports, o.reports...)
	t.missing = t.missing || o.missing
	t.alone += o.alone
	for i := range purposes {
		t.coordMeasured[i] += o.coordMeasured[i]
		t.coordEstimated[i] += o.coordEstimated[i]
	}
}

// wasteAll turns every figure into wasted work: the round they were spent
// on failed.
func (t *energyTally) wasteAll() {
	for i := range purposes {
		if i == purposeWasted {
			continue
		}
		t.coordMeasured[purposeWasted] += t.coordMeasured[i]
		t.coordEstimated[purposeWasted] += t.coordEstimated[i]
		t.coordMeasured[i], t.coordEstimated[i] = 0, 0
	}
	for i := range t.reports {
		t.reports[i].why = purposeWasted
	}
}

// measured reports whether a site report has any measured figure.
func measured(r *pb.EnergyReport) bool {
	return len(r.GetGpus()) > 0 || len(r.GetCpu()) > 0
}

// total returns the round's energy.
func (t *energyTally) total() roundEnergy {
	out := roundEnergy{Method: methodEstimated, GPUUtil: math.NaN()}
	allMeasured := !t.missing
	for _, tr := range t.reports {
		allMeasured = allMeasured && measured(tr.r)
	}
	factor := gpuOverlapFactors(t.reports)
	var measuredBy, estimatedBy [purposes]float64
	var utilSum, utilSeconds float64
	for _, tr := range t.reports {
		for _, g := range tr.r.GetGpus() {
			f, ok := factor[g.GetUuid()]
			if !ok {
				f = 1
			}
			measuredBy[tr.why] += f * g.GetJoules()
		}
		for _, d := range tr.r.GetCpu() {
			measuredBy[tr.why] += d.GetJoules()
		}
		estimatedBy[tr.why] += tr.r.GetEstimated().GetJoules()
		if gs := tr.r.GetGpus(); len(gs) > 0 && tr.r.GetSeconds() > 0 {
			u := 0.0
			for _, g := range gs {
				u += g.GetUtilizationAvgPercent()
			}
			utilSum += u / float64(len(gs)) * tr.r.GetSeconds()
			utilSeconds += tr.r.GetSeconds()
		}
	}
	if utilSeconds > 0 {
		out.GPUUtil = utilSum / utilSeconds
	}
	out.BusySeconds = busySeconds(t.reports) + t.alone
	var m float64
	for i := range purposes {
		m += measuredBy[i] + t.coordMeasured[i]
	}
	by := &estimatedBy
	coord := &t.coordEstimated
	if allMeasured && m > 0 {
		out.Method, by, coord = methodMeasured, &measuredBy, &t.coordMeasured
	}
	for i := range purposes {
		out.ByPurpose[i] = by[i] + coord[i]
		out.Total += out.ByPurpose[i]
	}
	return out
}

// gpuOverlapFactors returns, for each GPU whose reported figures add up to
// more than the union of their counter intervals (windows measured by
// different meters that overlapped), the factor that scales them down to
// that union. GPUs without counter readings are left out.
func gpuOverlapFactors(reports []taggedReport) map[string]float64 {
	type span struct{ from, to float64 }
	spans := make(map[string][]span)
	sums := make(map[string]float64)
	for _, tr := range reports {
		for _, g := range tr.r.GetGpus() {
			from, to := g.GetCounterStartJoules(), g.GetCounterEndJoules()
			if g.GetUuid() == "" || !(to > from) {
				continue
			}
			spans[g.GetUuid()] = append(spans[g.GetUuid()], span{from, to})
			sums[g.GetUuid()] += g.GetJoules()
		}
	}
	out := make(map[string]float64)
	for uuid, ss := range spans {
		slices.SortFunc(ss, func(a, b span) int {
			switch {
			case a.from < b.from:
				return -1
			case a.from > b.from:
				return 1
			}
			return 0
		})
		union, end := 0.0, math.Inf(-1)
		for _, s := range ss {
			if s.from > end {
				union += s.to - s.from
				end = s.to
			} else if s.to > end {
				union += s.to - end
				end = s.to
			}
		}
		if sum := sums[uuid]; sum > union*(1+1e-9) && sum > 0 {
			out[uuid] = union / sum
		}
	}
	return out
}

// busySeconds is the length of the union of the reports' windows.
func busySeconds(reports []taggedReport) float64 {
	type win struct{ from, to int64 }
	var ws []win
	for _, tr := range reports {
		from, to := tr.r.GetStartUnixMs(), tr.r.GetEndUnixMs()
		if from > 0 && to > from {
			ws = append(ws, win{from, to})
		}
	}
	slices.SortFunc(ws, func(a, b win) int { return int(min(max(a.from-b.from, -1), 1)) })
	var ms, end int64
	for _, w := range ws {
		switch {
		case w.from > end:
			ms += w.to - w.from
			end = w.to
		case w.to > end:
			ms += w.to - end
			end = w.to
		}
	}
	return float64(ms) / 1000
}

// lateEnergy collects the reports of an arm's tasks that arrived after
// their round had closed (an update too late to be used, the failure of a
// task the round cancelled); the next round counts them as wasted.
type lateEnergy struct {
	mu      sync.Mutex
	reports []*pb.EnergyReport
}

// add keeps r; nil is ignored. It is bounded by the tasks of one round:
// every round takes what came before it.
func (l *lateEnergy) add(r *pb.EnergyReport) {
	if r == nil || l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.reports) < 1<<16 {
		l.reports = append(l.reports, r)
	}
}

// take returns the reports kept so far and forgets them.
func (l *lateEnergy) take() []*pb.EnergyReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.reports
	l.reports = nil
	return out
}

// Bounds on what a site's energy report may claim. A site's hardware is
// not known to the coordinator (its capabilities list GPUs without their
// power limits), so the bounds are those of the largest parts, with
// slack: a report over them is a broken meter or a lie.
const (
	// maxGPUWatts bounds one GPU's power (an H200 SXM is 700 W, a B200
	// 1,000 W).
	maxGPUWatts = 1500.0
	// maxCPUDomainWatts bounds one CPU package or RAPL domain.
	maxCPUDomainWatts = 500.0
	// maxEstimateWatts bounds a CPU-time estimate: 256 busy cores at the
	// default 10 W a core, and more.
	maxEstimateWatts = 4000.0
	// energySlack multiplies every bound.
	energySlack = 1.5
)

// MetricEnergyRejected is logged, as 1, on the site run of a round whose
// update came with an energy report the coordinator dropped as
// implausible (see [checkEnergy]); the round counts that site's work as
// unmeasured.
const MetricEnergyRejected = tracking.MetricEnergyRejected

// errImplausibleEnergy is what checkEnergy's errors wrap.
var errImplausibleEnergy = errors.New("implausible energy report")

// checkEnergy returns an error naming the figure when r claims energy no
// hardware spends: a negative or non-finite figure, or more joules than
// the bound of its device's kind × the report's window × energySlack.
// The window is the report's (seconds, or end − start), at most the
// task's age plus a second where age is positive, and at least a second.
func checkEnergy(r *pb.EnergyReport, age time.Duration) error {
	if r == nil {
		return nil
	}
	window := r.GetSeconds()
	if s, e := r.GetStartUnixMs(), r.GetEndUnixMs(); s > 0 && e > s {
		window = max(window, float64(e-s)/1000)
	}
	if !finite(window) || window < 0 {
		return fmt.Errorf("%w: a window of %v s", errImplausibleEnergy, window)
	}
	if age > 0 {
		window = min(window, age.Seconds()+1)
	}
	window = max(window, 1)
	check := func(what string, joules, watts float64) error {
		bound := watts * window * energySlack
		switch {
		case !finite(joules) || joules < 0:
			return fmt.Errorf("%w: %s reports %v J", errImplausibleEnergy, what, joules)
		case joules > bound:
			return fmt.Errorf("%w: %s reports %.4g J, over the %.4g J bound (%g W × %.3g s × %g)", errImplausibleEnergy, what, joules, bound, watts, window, energySlack)
		}
		return nil
	}
	var errs []error
	for i, g := range r.GetGpus() {
		what := fmt.Sprintf("GPU %d (%s)", i, cmp.Or(g.GetUuid(), g.GetName(), "?"))
		errs = append(errs, check(what, g.GetJoules(), maxGPUWatts), check(what+" device", g.GetDeviceJoules(), maxGPUWatts))
	}
	for _, d := range r.GetCpu() {
		what := "CPU domain " + cmp.Or(d.GetName(), "?")
		errs = append(errs, check(what, d.GetJoules(), maxCPUDomainWatts), check(what+" device", d.GetDeviceJoules(), maxCPUDomainWatts))
	}
	if est := r.GetEstimated(); est != nil {
		errs = append(errs, check("the CPU-time estimate", est.GetJoules(), maxEstimateWatts))
		if cs := est.GetCpuSeconds(); !finite(cs) || cs < 0 {
			errs = append(errs, fmt.Errorf("%w: the CPU-time estimate reports %v CPU seconds", errImplausibleEnergy, cs))
		}
	}
	return errors.Join(errs...)
}

// reportJoules is everything r claims, for messages.
func reportJoules(r *pb.EnergyReport) float64 {
	e := energyOf(r)
	return e.gpuJ + e.cpuJ + e.estimatedJ
}

// screenEnergy returns r, or nil and true when [checkEnergy] refuses it:
// the report is then dropped from the round's energy (the site's work
// counts as unmeasured) and a warning names the site, the joules claimed
// and the bound. sent is when the task was taken on (zero: unknown).
func (c *Coordinator) screenEnergy(site, task string, sent time.Time, r *pb.EnergyReport) (*pb.EnergyReport, bool) {
	var age time.Duration
	if !sent.IsZero() {
		age = c.now().Sub(sent)
	}
	err := checkEnergy(r, age)
	if err == nil {
		return r, false
	}
	c.log.Warn("energy_report_rejected", "site", site, "task", task, "joules", reportJoules(r), "err", err,
		"fix", "check the site's meter (nvidia-smi -q -d POWER, RAPL permissions); its work counts as unmeasured")
	return nil, true
}

// finite reports whether f is neither NaN nor infinite.
func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }
