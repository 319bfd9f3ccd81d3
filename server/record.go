package server

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cohortfl/cohort/aggregators"
	"github.com/cohortfl/cohort/energy"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/tracking"
)

// Bounds on what one update makes the coordinator log: a site's metrics
// beyond them are dropped with a warning, never the whole batch (MLflow
// refuses a batch over 1,000 metrics, or with a key over 250 characters).
const (
	maxSiteMetrics    = 900 // of the site's own, beside the coordinator's ~25
	maxMetricKey      = 250
	maxEnergyArtifact = 256 << 10 // bytes of a site's energy report kept as an artifact
)

// siteReportedKeys are the metrics a site agent itself reports: kept
// first, before a trainer's extras.
var siteReportedKeys = map[string]bool{
	tracking.MetricTrainLoss: true, tracking.MetricTrainSeconds: true, tracking.MetricTrainSteps: true, tracking.MetricTrainCPUSeconds: true,
	tracking.MetricEvalLoss: true, tracking.MetricEvalAccuracy: true, tracking.MetricEvalSamples: true,
	tracking.MetricTaskSeconds: true, tracking.MetricTrainerSeconds: true,
	MetricEnergyRejected: true, // the coordinator's flag, never crowded out
}

// siteMetricKeys returns the keys of a site's reported metrics to log —
// the agent's own first, then a trainer's extras, each sorted — and those
// dropped: over-long keys, and any beyond maxSiteMetrics.
func siteMetricKeys(m map[string]float64) (kept, dropped []string) {
	for k := range m {
		switch {
		case k == tracking.MetricNumSamples: // logged from the update itself
		case len(k) == 0 || len(k) > maxMetricKey:
			dropped = append(dropped, truncate(k, 40))
		default:
			kept = append(kept, k)
		}
	}
	slices.SortFunc(kept, func(a, b string) int {
		if pa, pb := siteReportedKeys[a], siteReportedKeys[b]; pa != pb {
			if pa {
				return -1
			}
			return 1
		}
		return strings.Compare(a, b)
	})
	if len(kept) > maxSiteMetrics {
		dropped = append(dropped, kept[maxSiteMetrics:]...)
		kept = kept[:maxSiteMetrics]
	}
	slices.Sort(dropped)
	return kept, dropped
}

// siteEnergy sums a site's energy report into the figures tracking logs.
type siteEnergy struct {
	gpuJ, cpuJ, estimatedJ float64
	gpuDeviceJ, cpuDeviceJ float64
	powerAvg, powerMax     float64
	util                   float64
	memMax                 float64
	measured               bool
	gpus                   int
}

// siteEnergyMethod is the cohort.energy_method tag of a site run: the
// site's own method, or "estimated" where the site measured nothing but
// sent an estimate (never "none" beside an estimated_energy_joules).
func siteEnergyMethod(method string, e siteEnergy) string {
	if !e.measured && e.estimatedJ > 0 && (method == "" || method == "none") {
		return methodEstimated
	}
	return method
}

func energyOf(r *pb.EnergyReport) siteEnergy {
	var e siteEnergy
	if r == nil {
		return e
	}
	for _, g := range r.GetGpus() {
		e.gpuJ += g.GetJoules()
		e.gpuDeviceJ += cmp.Or(g.GetDeviceJoules(), g.GetJoules()) // a site predating attribution sends only joules
		e.powerAvg += g.GetPowerAvgWatts()
		e.powerMax = math.Max(e.powerMax, g.GetPowerMaxWatts())
		e.util += g.GetUtilizationAvgPercent()
		e.memMax = math.Max(e.memMax, float64(g.GetMemoryMaxBytes()))
		e.gpus++
	}
	if e.gpus > 0 {
		e.util /= float64(e.gpus)
	}
	for _, d := range r.GetCpu() {
		e.cpuJ += d.GetJoules()
		e.cpuDeviceJ += cmp.Or(d.GetDeviceJoules(), d.GetJoules())
	}
	e.measured = e.gpus > 0 || len(r.GetCpu()) > 0
	e.estimatedJ = r.GetEstimated().GetJoules()
	return e
}

// siteReported takes an aggregated update into the round's figures and
// publishes it: to the job's events and to the recorder.
func (x *roundExec) siteReported(site string, up *receivedUpdate) {
	a := x.a
	delete(x.pending, site)
	x.energy.addReport(purposeTrain, up.energy)
	if up.evalEnergy != nil {
		x.energy.addReport(purposeEval, up.evalEnergy)
	}
	if n := up.metrics[tracking.MetricEvalSamples]; n > 0 {
		x.fedEvalN += n
		x.fedEvalAcc += n * up.metrics[tracking.MetricEvalAccuracy]
		x.fedEvalLoss += n * up.metrics[tracking.MetricEvalLoss]
	}
	ev := UpdateAccepted{
		Arm: a.arm.Name, Round: x.r, Site: site, NumSamples: up.numSamples, Claimed: up.claimed, Bytes: up.bytes,
		DeltaNorm: up.deltaNorm, Metrics: up.metrics, Energy: up.energy, EvalEnergy: up.evalEnergy, Dataset: up.dataset,
	}
	if n, ok := x.notes[site]; ok {
		ev.Screened = n.decision
	}
	a.rec.publish(ev)
	a.j.emit(&pb.JobEvent{Kind: "site_reported", Arm: a.arm.Name, Round: int32(x.r), Rounds: int32(x.rounds), Site: site,
		Metrics: map[string]float64{tracking.MetricTrainLoss: up.metrics[tracking.MetricTrainLoss], tracking.MetricNumSamples: float64(up.numSamples)}},
		func(info *pb.Job) { info.SitesReporting++ })
}

// siteMetrics are the metrics and tags an accepted update logs on its
// site's run.
func (r *recorder) siteMetrics(ev UpdateAccepted) ([]tracking.Metric, []tracking.Tag) {
	now := time.Now().UnixMilli()
	step := int64(ev.Round)
	m := func(k string, v float64) tracking.Metric {
		return tracking.Metric{Key: k, Value: v, Timestamp: now, Step: step}
	}
	ms := []tracking.Metric{m(tracking.MetricNumSamples, float64(ev.NumSamples)), m(tracking.MetricUpdateBytes, float64(ev.Bytes))}
	ms = append(ms, normMetric(ev.DeltaNorm, now, ev.Round)...)
	if ev.Claimed > 0 {
		ms = append(ms, m(MetricSamplesClaimed, float64(ev.Claimed)))
	}
	kept, dropped := siteMetricKeys(ev.Metrics)
	if len(dropped) > 0 {
		r.log.Warn("site_metrics_dropped", "arm", ev.Arm, "round", ev.Round, "site", ev.Site,
			"dropped", len(dropped), "first", dropped[:min(len(dropped), 5)],
			"fix", fmt.Sprintf("report at most %d metrics of at most %d characters each", maxSiteMetrics, maxMetricKey))
	}
	for _, k := range kept {
		ms = append(ms, m(k, ev.Metrics[k]))
	}
	e := energyOf(ev.Energy)
	if e.measured {
		ms = append(ms,
			m(tracking.MetricGPUEnergyJoules, e.gpuJ),
			m(tracking.MetricCPUEnergyJoules, e.cpuJ),
			m(tracking.MetricGPUDeviceEnergyJoules, e.gpuDeviceJ),
			m(tracking.MetricCPUDeviceEnergyJoules, e.cpuDeviceJ),
		)
	}
	if ev.EvalEnergy != nil {
		x := energyOf(ev.EvalEnergy)
		j := x.estimatedJ
		if x.measured {
			j = x.gpuJ + x.cpuJ
		}
		ms = append(ms, m(tracking.MetricEvalEnergyJoules, j))
	}
	ms = append(ms, systemMetrics(ev.Site, ev.Energy, now, step)...)
	if e.gpus > 0 {
		ms = append(ms,
			m(tracking.MetricGPUPowerWattsAvg, e.powerAvg),
			m(tracking.MetricGPUPowerWattsMax, e.powerMax),
			m(tracking.MetricGPUUtilizationPercent, e.util),
			m(tracking.MetricGPUMemoryBytesMax, e.memMax),
		)
	}
	if ev.Energy != nil {
		ms = append(ms, m(tracking.MetricEstimatedEnergyJoules, e.estimatedJ))
	}
	var tags []tracking.Tag
	if ev.Screened != "" {
		tags = append(tags, tracking.Tag{Key: TagScreened, Value: truncate(ev.Screened, 4000)})
	}
	if ev.Energy != nil {
		tags = append(tags, tracking.Tag{Key: tracking.TagEnergyMethod, Value: siteEnergyMethod(ev.Energy.GetMethod(), e)})
		if at := ev.Energy.GetAttribution(); at != "" {
			tags = append(tags, tracking.Tag{Key: tracking.TagEnergyAttribution, Value: at})
		}
	}
	return ms, tags
}

// finish publishes the committed model, evaluates it, commits the round
// to the cluster and publishes its figures.
func (x *roundExec) finish(ctx context.Context) error {
	c, a := x.c, x.a
	spec := a.j.spec
	if x.next == nil {
		return fmt.Errorf("round committed without a model")
	}
	// The committed model replaces the round's, in memory until
	// replicated; the round's file stays open for the uploads still
	// arriving until the round's tasks close (cleanup).
	a.global = x.next
	x.retired, a.file = a.file, nil
	if st, ok := a.strategy.(aggregators.Stateful); ok && x.nextState != nil {
		if err := st.SetState(x.nextState); err != nil {
			return fmt.Errorf("the server optimizer's state: %w", err)
		}
	}
	a.prevNorms = a.prevNorms[:0]
	a.prevNorms = append(a.prevNorms, x.norms.sorted...)
	seconds := time.Since(x.started).Seconds()
	sent := x.rr.bytesSent.Load()
	a.bytesSent += sent
	a.bytesReceived += x.bytesReceived
	ms := map[string]float64{
		tracking.MetricRoundSeconds:            seconds,
		tracking.MetricElapsedSeconds:          time.Since(a.started).Seconds(),
		tracking.MetricBytesSent:               float64(sent),
		tracking.MetricBytesReceived:           float64(x.bytesReceived),
		tracking.MetricBytesSentCumulative:     float64(a.bytesSent),
		tracking.MetricBytesReceivedCumulative: float64(a.bytesReceived),
		tracking.MetricSites:                   float64(len(x.commit.Contributors)),
		tracking.MetricNumSamples:              float64(x.commit.NumSamples),
	}
	for k, v := range x.serverMetrics {
		ms[tracking.MetricServerPrefix+k] = v
	}
	if eps, ok := a.epsilon(x.r); ok {
		ms[MetricDPEpsilon] = eps
	}
	every := max(spec.Eval.Every, 1)
	var ev Evaluation
	evaluated := a.prep.Evaluator != nil && (x.r%every == 0 || x.r == x.rounds)
	if evaluated {
		var err error
		if ev, err = c.evaluate(ctx, a, &x.energy); err != nil {
			return fmt.Errorf("evaluating the global model: %w", err)
		}
	}
	// What the round's discarded work cost: updates the round did not use
	// and reports that came in after their round had closed.
	x.discardPending()
	for _, r := range a.late.take() {
		x.energy.addReport(purposeWasted, r)
	}
	// Measured and estimated energy are never summed together: a round
	// counts as measured only when every contributor measured.
	e := x.energy.total()
	roundJ, method := e.Total, e.Method
	if method == methodMeasured {
		a.measuredAny = true
	}
	a.energyJ += roundJ
	ms[tracking.MetricEnergyJoules] = roundJ
	ms[tracking.MetricEnergyJoulesCumulative] = a.energyJ
	ms[tracking.MetricTrainEnergyJoules] = e.ByPurpose[purposeTrain]
	ms[tracking.MetricEvalEnergyJoules] = e.ByPurpose[purposeEval]
	ms[tracking.MetricWastedEnergyJoules] = e.ByPurpose[purposeWasted]
	ms[tracking.MetricBusySeconds] = e.BusySeconds
	if !math.IsNaN(e.GPUUtil) {
		ms[tracking.MetricGPUUtilizationPercent] = e.GPUUtil
	}
	if w := a.j.idleWatts; method == methodMeasured && w > 0 {
		// BusySeconds leaves out the coordinator's aggregation, which runs
		// beside the sites' tasks.
		ms[tracking.MetricEnergyAboveIdle] = roundJ - w*e.BusySeconds
	}
	co2 := energy.CO2Grams(roundJ, spec.Energy.PUE, spec.Energy.CarbonGPerKWh)
	a.co2Grams += co2
	ms[tracking.MetricCO2Grams] = co2
	ms[tracking.MetricCO2GramsCumulative] = a.co2Grams
	var prev map[string]float64
	// What `cohort watch` and `logs` print of the round.
	evMetrics := map[string]float64{
		tracking.MetricRoundSeconds: seconds, tracking.MetricSites: float64(len(x.commit.Contributors)),
		tracking.MetricEnergyJoules: roundJ, tracking.MetricCO2Grams: co2,
	}
	if x.fedEvalN > 0 {
		// The sites evaluated the model they received: the previous round's.
		prev = map[string]float64{
			tracking.MetricFederatedAccuracy: x.fedEvalAcc / x.fedEvalN,
			tracking.MetricFederatedLoss:     x.fedEvalLoss / x.fedEvalN,
		}
		evMetrics[tracking.MetricFederatedAccuracy] = x.fedEvalAcc / x.fedEvalN
		a.lastFedAcc, a.hasFedAcc = x.fedEvalAcc/x.fedEvalN, true
	}
	if evaluated {
		ms[tracking.MetricTestAccuracy], ms[tracking.MetricTestLoss] = ev.Accuracy, ev.Loss
		evMetrics[tracking.MetricTestAccuracy], evMetrics[tracking.MetricTestLoss] = ev.Accuracy, ev.Loss
		a.lastAcc = ev.Accuracy
	}
	// The round commits to the cluster before tracking hears of it: a
	// failover in between leaves a committed round without metrics, which
	// the next leader marks (backfill), never a round logged twice.
	if err := c.replicateRound(ctx, a, x.r); err != nil {
		return err
	}
	a.rec.publish(RoundClosed{Arm: a.arm.Name, Round: x.r, Rounds: x.rounds, Metrics: ms, Previous: prev,
		EnergyMethod: method, WeightFractions: x.weightFractions()})
	attrs := []any{"job", a.j.id, "arm", a.arm.Name, "round", x.r, "sites", len(x.commit.Contributors)}
	switch {
	case a.prep.Evaluator != nil:
		attrs = append(attrs, "accuracy", a.lastAcc)
	case a.hasFedAcc:
		attrs = append(attrs, "test_set", "none", "federated_accuracy", a.lastFedAcc)
	default:
		attrs = append(attrs, "test_set", "none")
	}
	c.log.Info("round_committed", attrs...)
	a.j.emit(&pb.JobEvent{Kind: "round_committed", Arm: a.arm.Name, Round: int32(x.r), Rounds: int32(x.rounds), Metrics: evMetrics},
		func(info *pb.Job) { info.Accuracy, info.NoTestSet = a.lastAcc, a.prep.Evaluator == nil })
	return nil
}

// evaluate evaluates the arm's global model on the test set and counts
// what it cost in t: the coordinator's own measurement, the eval site's
// report, and its seconds, which no site task overlaps.
func (c *Coordinator) evaluate(ctx context.Context, a *armRun, t *energyTally) (Evaluation, error) {
	w, err := a.globalWeights()
	if err != nil {
		return Evaluation{}, err
	}
	stop, began := c.meterAggregation(ctx), time.Now()
	ev, err := a.prep.Evaluator.Evaluate(ctx, w)
	joules, method := stop()
	t.addCoordinator(purposeEval, joules, method)
	t.alone += time.Since(began).Seconds()
	if err != nil {
		return ev, err
	}
	t.addCoordinator(purposeEval, ev.EnergyJoules, ev.EnergyMethod) // an eval site metered its task itself
	return ev, nil
}

// systemMetrics are a site's GPU figures under MLflow's system-metric names
// (system/<site>/gpu_<i>_power_usage_watts, …), so MLflow's own UI shows
// them in its system-metrics view beside Cohort's own names.
func systemMetrics(site string, r *pb.EnergyReport, now, step int64) []tracking.Metric {
	var ms []tracking.Metric
	for i, g := range r.GetGpus() {
		idx := int(g.GetIndex())
		if idx < 0 {
			idx = i
		}
		p := fmt.Sprintf("%s%s/gpu_%d_", tracking.MetricSystemPrefix, site, idx)
		ms = append(ms,
			tracking.Metric{Key: p + "power_usage_watts", Value: g.GetPowerAvgWatts(), Timestamp: now, Step: step},
			tracking.Metric{Key: p + "utilization_percentage", Value: g.GetUtilizationAvgPercent(), Timestamp: now, Step: step},
			tracking.Metric{Key: p + "memory_usage_megabytes", Value: float64(g.GetMemoryMaxBytes()) / (1 << 20), Timestamp: now, Step: step},
		)
	}
	return ms
}

// logDataset records, once per run and dataset, which data a site trained
// on: as the site run's input and as an input of the arm run tagged with
// the site. Backends without inputs (tracking.InputLogger) skip it.
func (r *recorder) logDataset(a *armRecord, site, siteRunID string, ds *pb.DatasetInfo) {
	il, ok := r.tr.(tracking.InputLogger)
	if !ok || ds.GetSha256() == "" {
		return
	}
	key := site + "\x00" + ds.GetSha256()
	if a.inputs[key] {
		return
	}
	a.inputs[key] = true
	a.digests[site] = ds.GetSha256()
	digest := ds.GetSha256()
	if len(digest) > tracking.MaxDatasetDigestLength {
		digest = digest[:tracking.MaxDatasetDigestLength]
	}
	profile, _ := json.Marshal(map[string]any{"num_samples": ds.GetNumSamples(), "sha256": ds.GetSha256(), "site": site})
	// MLflow's "local" source ({"uri": path}) is one mlflow.data.get_source
	// reads; the path is on the site's machine, which the profile names.
	source, _ := json.Marshal(map[string]string{"uri": cmp.Or(ds.GetSource(), ds.GetName())})
	in := tracking.DatasetInput{
		Tags:    []tracking.InputTag{{Key: tracking.TagDatasetContext, Value: "training"}},
		Dataset: tracking.Dataset{Name: ds.GetName(), Digest: digest, SourceType: "local", Source: string(source), Profile: string(profile)},
	}
	r.logInputs(il, siteRunID, in)
	if a.runID == "" {
		return
	}
	armIn := in
	armIn.Tags = append(slices.Clone(in.Tags), tracking.InputTag{Key: tracking.TagDatasetSite, Value: site})
	armIn.Dataset.Name = site + ":" + ds.GetName()
	r.logInputs(il, a.runID, armIn)
}

// logInputs logs a dataset input on a run: deferred with the round's
// other writes, as logBatch defers them, where the tracker takes inputs
// in its batches (a [BatchLogger]); else at once.
func (r *recorder) logInputs(il tracking.InputLogger, runID string, in tracking.DatasetInput) {
	if _, ok := r.tr.(BatchLogger); ok && r.deferring {
		r.pending = append(r.pending, tracking.RunBatch{RunID: runID, Inputs: []tracking.DatasetInput{in}})
		if len(r.pending) >= maxPending {
			r.flush()
		}
		return
	}
	r.failed("tracking_inputs_failed", il.LogInputs(r.ctx, runID, []tracking.DatasetInput{in}), "run", runID)
}
