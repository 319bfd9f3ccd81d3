package tracking

import "strconv"

// Tags MLflow itself reads. Nesting is [TagParentRunID] exactly as MLflow
// does it, so any MLflow UI shows Cohort's run tree.
const (
	// TagParentRunID holds the ID of the run this run is nested under.
	TagParentRunID = "mlflow.parentRunId"
	// TagRunName mirrors the run's name.
	TagRunName = "mlflow.runName"
	// TagUser is the user who started the run.
	TagUser = "mlflow.user"
	// TagSourceName is what ran: a program, a job file.
	TagSourceName = "mlflow.source.name"
	// TagSourceType is the kind of source: LOCAL, JOB, PROJECT, NOTEBOOK.
	TagSourceType = "mlflow.source.type"
	// TagSourceGitCommit is the code version the run ran.
	TagSourceGitCommit = "mlflow.source.git.commit"
	// TagNote is the run's description, shown by the MLflow UI.
	TagNote = "mlflow.note.content"
)

// Tags Cohort sets on its runs.
const (
	// TagJobID is the coordinator's job ID, on the job run.
	TagJobID = "cohort.job_id"
	// TagArm is the arm's name (centralized, fedavg, …), on an arm run.
	TagArm = "cohort.arm"
	// TagKind says what an arm run is: [KindCentralized] or [KindFederated].
	TagKind = "cohort.kind"
	// TagSite is the site's name, on a site run.
	TagSite = "cohort.site"
	// TagEnergyMethod says how an arm's or site's energy figures were
	// obtained (the energy package's method: measured counter, integrated
	// power, estimated, none); measured and estimated figures are never
	// summed together.
	TagEnergyMethod = "cohort.energy_method"
	// TagEnergyAttribution says, on a site run, how its energy figures
	// were split from the devices it shared: exclusive (alone on the
	// device), attributed-utilization (by NVML's per-process utilisation,
	// or CPU time for RAPL) or attributed-equal (equal shares, the
	// fallback).
	TagEnergyAttribution = "cohort.energy_attribution"
)

// Values of [TagKind].
const (
	KindCentralized = "centralized"
	KindFederated   = "federated"
)

// Metrics logged on an arm run, one point per round (federated) or epoch
// (centralized), the step being the round or epoch number.
const (
	MetricTestAccuracy  = "test_accuracy"
	MetricTestLoss      = "test_loss"
	MetricRoundSeconds  = "round_seconds"
	MetricBytesSent     = "bytes_sent"
	MetricBytesReceived = "bytes_received"
	MetricEnergyJoules  = "energy_joules"
	MetricCO2Grams      = "co2_grams"
	// MetricEnergyJoules splits into training (the aggregated updates and
	// the aggregation), evaluation (of the global model, by the sites and
	// by the coordinator or eval site) and wasted work (updates rejected,
	// late, cut or cancelled; tasks that failed; rounds run again).
	MetricTrainEnergyJoules  = "train_energy_joules"
	MetricEvalEnergyJoules   = "eval_energy_joules"
	MetricWastedEnergyJoules = "wasted_energy_joules"
	// MetricEnergyAboveIdle is energy_joules less the devices' idle power
	// (measured before the job) over the seconds the arm's work covered:
	// an arm that waits is told apart from one that computes.
	MetricEnergyAboveIdle = "energy_joules_above_idle"
)

// Metrics logged on a site run, one point per round.
const (
	MetricTrainLoss             = "train_loss"
	MetricNumSamples            = "num_samples"
	MetricTrainSeconds          = "train_seconds"
	MetricGPUEnergyJoules       = "gpu_energy_joules"
	MetricCPUEnergyJoules       = "cpu_energy_joules"
	MetricGPUPowerWattsAvg      = "gpu_power_watts_avg"
	MetricGPUPowerWattsMax      = "gpu_power_watts_max"
	MetricGPUUtilizationPercent = "gpu_utilization_percent"
	// MetricDPEpsilon is the ε of the (ε, δ) central differential privacy
	// a DP-FedAvg arm has spent after each round.
	MetricDPEpsilon         = "dp_epsilon"
	MetricGPUMemoryBytesMax = "gpu_memory_bytes_max"
	// MetricGPUEnergyJoules and MetricCPUEnergyJoules are the site's
	// attributed share of the devices it used; these are the whole
	// devices' energy over the task's window, others' work included.
	MetricGPUDeviceEnergyJoules = "gpu_device_energy_joules"
	MetricCPUDeviceEnergyJoules = "cpu_device_energy_joules"
	// MetricTaskSeconds is the site's wall time for the task, from the
	// task's arrival to its update's upload; MetricTrainerSeconds the time
	// the trainer reports inside its own work (an exec trainer's script,
	// or the built-in trainer's training).
	MetricTaskSeconds    = "task_seconds"
	MetricTrainerSeconds = "trainer_seconds"
)

// More metrics of an arm run, one point per round (or epoch).
const (
	// MetricElapsedSeconds is the arm's wall time so far.
	MetricElapsedSeconds = "elapsed_seconds"
	// MetricSites is how many sites the round aggregated.
	MetricSites = "sites"
	// Running totals of bytes, energy and CO2.
	MetricBytesSentCumulative     = "bytes_sent_cumulative"
	MetricBytesReceivedCumulative = "bytes_received_cumulative"
	MetricEnergyJoulesCumulative  = "energy_joules_cumulative"
	MetricCO2GramsCumulative      = "co2_grams_cumulative"
	// MetricBusySeconds is the union of the round's measured windows.
	MetricBusySeconds = "busy_seconds"
	// MetricFederatedAccuracy and MetricFederatedLoss are the sites' own
	// evaluation of the model they received (the previous round's), logged
	// at the previous round's step.
	MetricFederatedAccuracy = "federated_accuracy"
	MetricFederatedLoss     = "federated_loss"
	// MetricServerPrefix prefixes the figures a strategy reports about
	// its aggregation (server_…).
	MetricServerPrefix = "server_"
	// MetricFailover is 1 at the round an arm resumed at after a failover.
	MetricFailover = "failover"
)

// More metrics of a site run, one point per round.
const (
	// MetricAccepted is 1 when the round counted the site's update, 0 when
	// it did not (refused, failed, or aggregated by an attempt at the round
	// that then failed).
	MetricAccepted = "accepted"
	// MetricUpdateBytes is the update's size on the wire.
	MetricUpdateBytes = "update_bytes"
	// MetricUpdateNorm is the L2 norm of the update's delta as received.
	MetricUpdateNorm = "update_norm"
	// MetricWeightFraction is the share of the round's aggregation weight
	// the update got.
	MetricWeightFraction = "weight_fraction"
	// MetricSamplesClaimed is the sample count an update claimed where it
	// was capped at the count the site declared.
	MetricSamplesClaimed = "samples_claimed"
	// MetricEnergyRejected is 1 where the coordinator dropped the site's
	// energy report as implausible.
	MetricEnergyRejected = "energy_rejected"
	// MetricVirtualReassigned is, on a worker's site run, how many of its
	// virtual clients another worker trained in the round after it failed
	// (the update logged there for the round is that worker's).
	MetricVirtualReassigned = "virtual_reassigned"
	// MetricEstimatedEnergyJoules is the CPU-time estimate a site sends
	// beside (never summed with) measured figures.
	MetricEstimatedEnergyJoules = "estimated_energy_joules"
	// What a site agent reports of its task.
	MetricTrainSteps      = "train_steps"
	MetricTrainCPUSeconds = "train_cpu_seconds"
	MetricEvalLoss        = "eval_loss"
	MetricEvalAccuracy    = "eval_accuracy"
	MetricEvalSamples     = "eval_samples"
	// MetricSystemPrefix prefixes MLflow's system metrics
	// (system/<site>/gpu_<i>_power_usage_watts, …).
	MetricSystemPrefix = "system/"
)

// Metrics of a job run.
const (
	// MetricIdlePowerWatts is the devices' idle power, measured before the
	// job ran.
	MetricIdlePowerWatts = "idle_power_watts"
	// MetricWallSeconds is an arm's wall time (in its arm_finished event).
	MetricWallSeconds = "wall_seconds"
	// The comparison's figures per arm, logged as ARM + suffix when the
	// job ends.
	SuffixFinalTestAccuracy = ".final_test_accuracy"
	SuffixWallSeconds       = ".wall_seconds"
	SuffixEnergyJoules      = ".energy_joules"
)

// More tags Cohort sets on its runs.
const (
	// TagCohortVersion is the Cohort version that ran the job.
	TagCohortVersion = "cohort.version"
	// TagError is why a job failed, on the job run.
	TagError = "cohort.error"
	// TagDatasetSite names, on an arm run's dataset input, the site that
	// trained on it.
	TagDatasetSite = "cohort.site"
)

// RoundStatusTag is the tag, on a site run (or an arm run, for a round
// backfilled after a failover), that says what became of the run's work
// in round r: "rejected: …", "failed: …", "discarded: …", "ok: …".
func RoundStatusTag(r int) string { return "cohort.round_" + strconv.Itoa(r) + ".status" }
