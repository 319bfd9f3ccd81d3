package tracking

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
