package server

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/cohortfl/cohort/aggregators"
	pb "github.com/cohortfl/cohort/proto/cohort/v1"
	"github.com/cohortfl/cohort/server/ha"
	"github.com/cohortfl/cohort/tracking"
)

// siteRun returns the tracking run of a site under an arm, creating it the
// first time the site takes part.
func (c *Coordinator) siteRun(ctx context.Context, a *armRun, site string) (string, error) {
	if id, ok := a.siteRuns[site]; ok {
		return id, nil
	}
	run, err := a.j.tracker.CreateRun(ctx, tracking.CreateRun{
		ExperimentID: a.expID, Name: a.arm.Name + "/" + site, StartTime: time.Now(), ParentRunID: a.runID, UserID: a.j.user,
		Tags: c.sourceTags(a.j, map[string]string{tracking.TagJobID: a.j.id, tracking.TagArm: a.arm.Name, tracking.TagSite: site, tracking.TagKind: "site"}),
	})
	if err != nil {
		c.log.Warn("tracking_create_failed", "site", site, "err", err)
		return "", err
	}
	a.siteRuns[site] = run.Info.RunID
	if err := c.saveRunIDs(ctx, a.j, ha.RunIDs{Sites: map[string]map[string]string{a.arm.Name: {site: run.Info.RunID}}}); err != nil {
		c.log.Warn("run_ids_replication_failed", "site", site, "err", err)
	}
	return run.Info.RunID, nil
}

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
	tracking.MetricTrainLoss: true, tracking.MetricTrainSeconds: true, "train_steps": true, "train_cpu_seconds": true,
	"eval_loss": true, "eval_accuracy": true, "eval_samples": true,
	tracking.MetricTaskSeconds: true, tracking.MetricTrainerSeconds: true,
	MetricEnergyRejected: true, // the coordinator's flag, never crowded out
}

// siteMetricKeys returns the keys of a site's reported metrics to log —
// the agent's own first, then a trainer's extras, each sorted — and those
// dropped: over-long keys, and any beyond maxSiteMetrics.
func siteMetricKeys(m map[string]float64) (kept, dropped []string) {
	for k := range m {
		switch {
		case k == "num_samples": // logged from the update itself
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

// siteReported records an aggregated update on the site's run.
func (x *roundExec) siteReported(ctx context.Context, site string, up *receivedUpdate) {
	c, a := x.c, x.a
	now := time.Now().UnixMilli()
	step := int64(x.r)
	ms := []tracking.Metric{
		{Key: "accepted", Value: 1, Timestamp: now, Step: step},
		{Key: tracking.MetricNumSamples, Value: float64(up.numSamples), Timestamp: now, Step: step},
		{Key: "update_bytes", Value: float64(up.bytes), Timestamp: now, Step: step},
	}
	ms = append(ms, normMetric(up.deltaNorm, now, x.r)...)
	if up.claimed > 0 {
		ms = append(ms, tracking.Metric{Key: MetricSamplesClaimed, Value: float64(up.claimed), Timestamp: now, Step: step})
	}
	kept, dropped := siteMetricKeys(up.metrics)
	if len(dropped) > 0 {
		c.log.Warn("site_metrics_dropped", "job", a.j.id, "arm", a.arm.Name, "round", x.r, "site", site,
			"dropped", len(dropped), "first", dropped[:min(len(dropped), 5)],
			"fix", fmt.Sprintf("report at most %d metrics of at most %d characters each", maxSiteMetrics, maxMetricKey))
	}
	for _, k := range kept {
		ms = append(ms, tracking.Metric{Key: k, Value: up.metrics[k], Timestamp: now, Step: step})
	}
	delete(x.pending, site)
	x.energy.addReport(purposeTrain, up.energy)
	if up.evalEnergy != nil {
		x.energy.addReport(purposeEval, up.evalEnergy)
	}
	e := energyOf(up.energy)
	if e.measured {
		ms = append(ms,
			tracking.Metric{Key: tracking.MetricGPUEnergyJoules, Value: e.gpuJ, Timestamp: now, Step: step},
			tracking.Metric{Key: tracking.MetricCPUEnergyJoules, Value: e.cpuJ, Timestamp: now, Step: step},
			tracking.Metric{Key: tracking.MetricGPUDeviceEnergyJoules, Value: e.gpuDeviceJ, Timestamp: now, Step: step},
			tracking.Metric{Key: tracking.MetricCPUDeviceEnergyJoules, Value: e.cpuDeviceJ, Timestamp: now, Step: step},
		)
	}
	if ev := energyOf(up.evalEnergy); up.evalEnergy != nil {
		j := ev.estimatedJ
		if ev.measured {
			j = ev.gpuJ + ev.cpuJ
		}
		ms = append(ms, tracking.Metric{Key: tracking.MetricEvalEnergyJoules, Value: j, Timestamp: now, Step: step})
	}
	ms = append(ms, systemMetrics(site, up.energy, now, step)...)
	if e.gpus > 0 {
		ms = append(ms,
			tracking.Metric{Key: tracking.MetricGPUPowerWattsAvg, Value: e.powerAvg, Timestamp: now, Step: step},
			tracking.Metric{Key: tracking.MetricGPUPowerWattsMax, Value: e.powerMax, Timestamp: now, Step: step},
			tracking.Metric{Key: tracking.MetricGPUUtilizationPercent, Value: e.util, Timestamp: now, Step: step},
			tracking.Metric{Key: tracking.MetricGPUMemoryBytesMax, Value: e.memMax, Timestamp: now, Step: step},
		)
	}
	if up.energy != nil {
		ms = append(ms, tracking.Metric{Key: "estimated_energy_joules", Value: e.estimatedJ, Timestamp: now, Step: step})
	}
	if n := up.metrics["eval_samples"]; n > 0 {
		x.fedEvalN += n
		x.fedEvalAcc += n * up.metrics["eval_accuracy"]
		x.fedEvalLoss += n * up.metrics["eval_loss"]
	}
	var tags []tracking.Tag
	if n, ok := x.notes[site]; ok {
		tags = append(tags, screenTag(n))
	}
	if up.energy != nil {
		tags = append(tags, tracking.Tag{Key: tracking.TagEnergyMethod, Value: siteEnergyMethod(up.energy.GetMethod(), e)})
		if at := up.energy.GetAttribution(); at != "" {
			tags = append(tags, tracking.Tag{Key: tracking.TagEnergyAttribution, Value: at})
		}
	}
	if runID, err := c.siteRun(ctx, a, site); err == nil {
		if err := a.j.tracker.LogBatch(ctx, runID, ms, nil, tags); err != nil {
			c.log.Warn("tracking_log_failed", "site", site, "err", err)
		}
		c.logDataset(ctx, a, site, runID, up.dataset)
		// The full report (method, window and interval of every figure)
		// is kept as an artifact beside the metrics.
		if js := up.energy.GetJson(); len(js) > maxEnergyArtifact {
			c.log.Warn("energy_report_too_large", "site", site, "bytes", len(js), "max", maxEnergyArtifact)
		} else if len(js) > 0 {
			name := fmt.Sprintf("energy/round-%04d.json", x.r)
			if err := a.j.tracker.LogArtifact(ctx, runID, name, bytes.NewReader(js)); err != nil {
				c.log.Warn("tracking_artifact_failed", "site", site, "err", err)
			}
		}
	}
	a.j.emit(&pb.JobEvent{Kind: "site_reported", Arm: a.arm.Name, Round: int32(x.r), Site: site,
		Metrics: map[string]float64{"train_loss": up.metrics["train_loss"], "num_samples": float64(up.numSamples)}},
		func(info *pb.Job) { info.SitesReporting++ })
}

// finish publishes the committed model, evaluates it and logs the round.
func (x *roundExec) finish(ctx context.Context) error {
	c, a := x.c, x.a
	spec := a.j.spec
	if x.next == nil {
		return fmt.Errorf("round committed without a model")
	}
	a.global = x.next
	if st, ok := a.strategy.(aggregators.Stateful); ok && x.nextState != nil {
		if err := st.SetState(x.nextState); err != nil {
			return fmt.Errorf("the server optimizer's state: %w", err)
		}
	}
	x.logWeights(ctx)
	a.prevNorms = a.prevNorms[:0]
	for _, n := range x.norms {
		a.prevNorms = append(a.prevNorms, n)
	}
	seconds := time.Since(x.started).Seconds()
	sent := x.rr.bytesSent.Load()
	a.bytesSent += sent
	a.bytesReceived += x.bytesReceived
	now := time.Now().UnixMilli()
	step := int64(x.r)
	m := func(k string, v float64) tracking.Metric {
		return tracking.Metric{Key: k, Value: v, Timestamp: now, Step: step}
	}
	ms := []tracking.Metric{
		m(tracking.MetricRoundSeconds, seconds),
		m("elapsed_seconds", time.Since(a.started).Seconds()),
		m(tracking.MetricBytesSent, float64(sent)),
		m(tracking.MetricBytesReceived, float64(x.bytesReceived)),
		m("bytes_sent_cumulative", float64(a.bytesSent)),
		m("bytes_received_cumulative", float64(a.bytesReceived)),
		m("sites", float64(len(x.commit.Contributors))),
		m("num_samples", float64(x.commit.NumSamples)),
	}
	for k, v := range x.serverMetrics {
		ms = append(ms, m("server_"+k, v))
	}
	if eps, ok := a.epsilon(x.r); ok {
		ms = append(ms, m(MetricDPEpsilon, eps))
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
	ms = append(ms, m(tracking.MetricEnergyJoules, roundJ), m("energy_joules_cumulative", a.energyJ),
		m(tracking.MetricTrainEnergyJoules, e.ByPurpose[purposeTrain]),
		m(tracking.MetricEvalEnergyJoules, e.ByPurpose[purposeEval]),
		m(tracking.MetricWastedEnergyJoules, e.ByPurpose[purposeWasted]),
		m("busy_seconds", e.BusySeconds))
	if !math.IsNaN(e.GPUUtil) {
		ms = append(ms, m(tracking.MetricGPUUtilizationPercent, e.GPUUtil))
	}
	if w := a.j.idleWatts; method == methodMeasured && w > 0 {
		// BusySeconds leaves out the coordinator's aggregation, which runs
		// beside the sites' tasks.
		ms = append(ms, m(tracking.MetricEnergyAboveIdle, roundJ-w*e.BusySeconds))
	}
	co2 := roundJ / 3.6e6 * spec.Energy.PUE * spec.Energy.CarbonGPerKWh
	a.co2Grams += co2
	ms = append(ms, m(tracking.MetricCO2Grams, co2), m("co2_grams_cumulative", a.co2Grams))
	if x.fedEvalN > 0 {
		// The sites evaluated the model they received: the previous round's.
		ms = append(ms,
			tracking.Metric{Key: "federated_accuracy", Value: x.fedEvalAcc / x.fedEvalN, Timestamp: now, Step: step - 1},
			tracking.Metric{Key: "federated_loss", Value: x.fedEvalLoss / x.fedEvalN, Timestamp: now, Step: step - 1},
		)
	}
	evMetrics := map[string]float64{"round_seconds": seconds, "sites": float64(len(x.commit.Contributors)), "energy_joules": roundJ}
	if x.fedEvalN > 0 {
		evMetrics["federated_accuracy"] = x.fedEvalAcc / x.fedEvalN
		a.lastFedAcc, a.hasFedAcc = x.fedEvalAcc/x.fedEvalN, true
	}
	if evaluated {
		ms = append(ms, m(tracking.MetricTestAccuracy, ev.Accuracy), m(tracking.MetricTestLoss, ev.Loss))
		evMetrics["test_accuracy"], evMetrics["test_loss"] = ev.Accuracy, ev.Loss
		a.lastAcc = ev.Accuracy
	}
	// The round commits to the cluster before tracking hears of it: a
	// failover in between leaves a committed round without metrics, which
	// the next leader marks (backfill), never a round logged twice.
	if err := c.replicateRound(ctx, a, x.r); err != nil {
		return err
	}
	if err := a.j.tracker.LogBatch(ctx, a.runID, ms, nil, []tracking.Tag{{Key: tracking.TagEnergyMethod, Value: method}}); err != nil {
		return fmt.Errorf("tracking: logging round %d: %w", x.r, err)
	}
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
	stop, began := c.meterAggregation(ctx), time.Now()
	ev, err := a.prep.Evaluator.Evaluate(ctx, a.global)
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
		p := fmt.Sprintf("system/%s/gpu_%d_", site, idx)
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
func (c *Coordinator) logDataset(ctx context.Context, a *armRun, site, siteRunID string, ds *pb.DatasetInfo) {
	il, ok := a.j.tracker.(tracking.InputLogger)
	if !ok || ds.GetSha256() == "" {
		return
	}
	key := site + "\x00" + ds.GetSha256()
	if a.inputs[key] {
		return
	}
	if a.inputs == nil {
		a.inputs = make(map[string]bool)
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
	if err := il.LogInputs(ctx, siteRunID, []tracking.DatasetInput{in}); err != nil {
		c.log.Warn("tracking_inputs_failed", "site", site, "err", err)
	}
	armIn := in
	armIn.Tags = append(slices.Clone(in.Tags), tracking.InputTag{Key: "cohort.site", Value: site})
	armIn.Dataset.Name = site + ":" + ds.GetName()
	if err := il.LogInputs(ctx, a.runID, []tracking.DatasetInput{armIn}); err != nil {
		c.log.Warn("tracking_inputs_failed", "arm", a.arm.Name, "err", err)
	}
}
