package job

import (
	"fmt"
	"math"
	"time"

	"github.com/cohortfl/cohort/internal/strictyaml"
)

// Known values of the job's enumerated settings.
const (
	// DatasetFashionMNIST is Zalando's Fashion-MNIST (IDX files, 10 classes).
	DatasetFashionMNIST = "fashion-mnist"
	// DatasetSynthetic is Synthetic(α,β), generated per site as in the
	// FedProx paper (Li et al., 2020).
	DatasetSynthetic = "synthetic"

	// PartitionIID splits the samples uniformly at random.
	PartitionIID = "iid"
	// PartitionDirichlet draws each site's class mix from Dirichlet(α).
	PartitionDirichlet = "dirichlet"
	// PartitionLabels gives each site samples of Partition.Labels classes.
	PartitionLabels = "labels"
	// PartitionShards sorts by label and deals Partition.ShardsPerSite
	// contiguous shards to each site (McMahan et al., 2017).
	PartitionShards = "shards"

	// ModelLogReg is multinomial logistic regression.
	ModelLogReg = "logreg"
	// ModelMLP is a multilayer perceptron with Model.Hidden ReLU layers.
	ModelMLP = "mlp"
	// ModelCNN is a convolutional network with Model.Conv channels.
	ModelCNN = "cnn"
	// ModelExec is an external trainer process started with Model.Command.
	ModelExec = "exec"
	// ModelTransfer is the transfer-only model: Model.Params float32
	// parameters that the sites do not train but send back at once,
	// slightly perturbed, so that a job measures the orchestrator's own
	// costs (moving, aggregating and storing the model) at any size.
	ModelTransfer = "transfer"
	// ExecPerTask starts an "exec" trainer's command once per task.
	ExecPerTask = "per-task"
	// ExecPersistent starts an "exec" trainer's command once per site and
	// arm and hands it task after task (docs/trainer-protocol.md).
	ExecPersistent = "persistent"

	// StrategyFedAvg is federated averaging (McMahan et al., 2017).
	StrategyFedAvg = "fedavg"
	// StrategyFedProx is FedAvg with a proximal term μ (Li et al., 2020).
	StrategyFedProx = "fedprox"
	// StrategyMedian is the coordinate-wise median (Yin et al., 2018).
	StrategyMedian = "median"
	// StrategyTrimmedMean is the coordinate-wise β-trimmed mean (Yin et
	// al., 2018).
	StrategyTrimmedMean = "trimmed_mean"
	// StrategyKrum is Krum (Blanchard et al., 2017): the update closest to
	// its n − f − 2 nearest others.
	StrategyKrum = "krum"
	// StrategyMultiKrum is Multi-Krum: the mean of the m best-scored
	// updates by Krum's score.
	StrategyMultiKrum = "multi_krum"
)

// Defaults filled in by [Parse] and [Spec.ApplyDefaults] for settings the
// job leaves out.
const (
	// DefaultTrackingURI is the embedded SQLite store in the working directory.
	DefaultTrackingURI = "sqlite:cohort.db"
	// DefaultTestFraction is the share of each site's partition held out as
	// its local test split.
	DefaultTestFraction = 0.1
	// DefaultShardsPerSite is McMahan et al.'s pathological non-IID split:
	// two label-sorted shards per site.
	DefaultShardsPerSite = 2
	// DefaultSyntheticDim and DefaultSyntheticClasses are the FedProx
	// paper's Synthetic(α,β) sizes: 60 features, 10 classes.
	DefaultSyntheticDim     = 60
	DefaultSyntheticClasses = 10
	// DefaultEpochs, DefaultBatchSize and DefaultLR are the local training
	// settings of the shipped Fashion-MNIST examples: one epoch of SGD with
	// batches of 32 at 0.05 per round. Tune them per model.
	DefaultEpochs    = 1
	DefaultBatchSize = 32
	DefaultLR        = 0.05
	// DefaultServerLR applies the averaged update as is (plain FedAvg).
	DefaultServerLR = 1.0
	// DefaultMaxWeightFraction caps one site's share of a round's weight
	// in jobs of at least 3 sites.
	DefaultMaxWeightFraction = 0.5
	// DefaultAdaptiveFactor screens an update whose delta norm is over
	// this multiple of the round's median.
	DefaultAdaptiveFactor = 10.0
	// DefaultDPDelta is the δ DP-FedAvg reports ε for.
	DefaultDPDelta = 1e-5
	// DefaultAdaptiveEta and DefaultAdagradEta are the server learning
	// rates η of fedadam and fedyogi, and of fedadagrad.
	DefaultAdaptiveEta = 0.01
	DefaultAdagradEta  = 0.1
	// DefaultBeta1 and DefaultBeta2 are fedadam's and fedyogi's moment
	// decays β1 and β2.
	DefaultBeta1 = 0.9
	DefaultBeta2 = 0.99
	// DefaultTau is the adaptive optimizers' adaptivity τ.
	DefaultTau = 1e-3
	// DefaultServerMomentum is fedavgm's server momentum β.
	DefaultServerMomentum = 0.9
	// DefaultBeta is trimmed_mean's β: 10% of the values trimmed at each
	// end.
	DefaultBeta = 0.1
	// DefaultF is krum's and multi_krum's f: one Byzantine site.
	DefaultF = 1
	// DefaultEvalEvery evaluates the global model after every round.
	DefaultEvalEvery = 1
	// DefaultRoundDeadline is how long a round waits for stragglers.
	DefaultRoundDeadline = 10 * time.Minute
	// DefaultEnergyInterval is the power-timeline sampling interval (10 Hz).
	DefaultEnergyInterval = 100 * time.Millisecond
	// MinEnergyInterval is the shortest sampling interval accepted (100 Hz):
	// faster sampling costs CPU without adding information, as NVML's
	// readings themselves refresh more slowly (its energy counter about
	// every 100 ms).
	MinEnergyInterval = 10 * time.Millisecond
	// DefaultCarbonGPerKWh is the world-average carbon intensity of
	// electricity generation, 475 gCO2/kWh, from the IEA's Global Energy &
	// CO2 Status Report 2019 (figure for 2018). Set the job's
	// energy.carbon_g_per_kwh to your grid's figure (e.g. from Ember or
	// electricityMaps) for real accounting.
	DefaultCarbonGPerKWh = 475.0
	// DefaultPUE assumes no data-centre overhead; set energy.pue to the
	// facility's power usage effectiveness (typically 1.1-1.6).
	DefaultPUE = 1.0
	// DefaultCPUWattsPerCore is the wattage per busy core used for the
	// `estimated` CPU energy when nothing can be measured. It is TDP divided
	// by core count of common parts, rounded up: a 150 W 16-core server CPU
	// is 9.4 W per core, a 65 W 8-core desktop CPU 8.1 W, a 280 W 64-core
	// one 4.4 W. Green Algorithms (Lannelongue et al., 2021) estimates the
	// same way, from per-core TDP. Set energy.cpu_watts_per_core to your
	// part's TDP / cores for a better estimate; 0 turns the estimate off.
	DefaultCPUWattsPerCore = 10.0
	// defaultMLPHidden is the width of the FedAvg paper's "2NN" hidden
	// layers (it has two; the default here has one). The CNN default,
	// [32, 64], is that paper's CNN's channels.
	defaultMLPHidden = 200
)

// Limits on sizes, so that a typo cannot ask for an impossible allocation.
const (
	// MaxSize is the largest job file accepted, in bytes.
	MaxSize = 1 << 20
	// MaxSites is the most sites a job may have: 10,000, the most
	// connected site agents one coordinator is sized for (DESIGN.md,
	// issue 17). Each site is a process at an institute with its own
	// session, registry entry and site run per arm; a job asking for more
	// is a typo or a simulation, which needs virtual clients, not sites.
	MaxSites = 10_000
	// MaxVirtualClients is the most virtual clients (sites.virtual) a
	// simulation may have: a billion. Their partitions are drawn lazily,
	// so the limit guards only against typos.
	MaxVirtualClients = 1_000_000_000
	// MaxClientsPerRound is the most virtual clients a round may train
	// (sites.per_round): the round's client ids travel in the tasks.
	MaxClientsPerRound = 1_000_000
	// MaxNameLen is the longest job name, in bytes: 200. The name becomes
	// the tracking experiment's and the job run's, lines of `cohort jobs`
	// and file names of the comparison plot, which a longer name would
	// break (most file systems cap a name at 255 bytes).
	MaxNameLen = 200
	// MaxRounds bounds rounds, epochs and eval.every.
	MaxRounds = 1_000_000
	// MaxLayerWidth bounds one hidden layer's units or one convolution's
	// channels.
	MaxLayerWidth = 1 << 20
)

// Spec is one job: what to train, on which sites, and which arms to compare.
// [Parse] returns it with every default filled in and validated; a Spec built
// in Go should go through [Spec.ApplyDefaults] and [Spec.Validate] too.
type Spec struct {
	// Name names the job; it is required and is the default experiment.
	Name string
	// Seed seeds every random choice (partitioning, initial weights, site
	// selection), so a job reruns identically.
	Seed     int64
	Tracking Tracking
	Data     Data
	Model    Model
	Sites    Sites
	// Rounds is the number of federated rounds, at least 1.
	Rounds int
	// Train holds the local training settings every arm uses unless the
	// arm overrides them.
	Train Train
	// Arms are the runs to compare; each becomes a child run of the job's
	// tracking run.
	Arms     []Arm
	Eval     Eval
	Deadline Deadline
	Energy   Energy
	// Register, when set, registers each arm's final global model in the
	// tracking store's model registry; nil (the default) registers none.
	Register *Register

	// lines maps each dotted key path present in the file to its position.
	lines map[string]strictyaml.Pos
	// namesGenerated is set by ApplyDefaults when it made up the sites'
	// names from sites.count ([Spec.SimulatedSites]).
	namesGenerated bool
	// file is the name of the file the spec was parsed from, "" when
	// unknown.
	file string
}

// Tracking says where the job's runs are logged.
type Tracking struct {
	// URI is "sqlite:FILE" for the embedded store (default
	// "sqlite:cohort.db") or "http(s)://HOST[:PORT]" of an MLflow server.
	URI string
	// Experiment is the experiment the job's run goes under; default Name.
	Experiment string
}

// Data says which dataset each site loads and how it is split.
type Data struct {
	// Dataset is "fashion-mnist" or "synthetic".
	Dataset string
	// Path is a folder holding the dataset's files. Empty means the
	// loader's search order: $COHORT_DATA, /usr/share/datasets/..., then a
	// download into the user cache. A relative path is resolved against
	// the working directory of `cohort run`, which alone reads it: in a
	// deployment sites read their data from site.yaml, and a job with a
	// path is refused at submit.
	Path string
	// Partition says how the samples are split across sites (not used for
	// synthetic data, which is generated per site).
	Partition Partition
	// TestFraction is the share of each site's partition it holds out as
	// its local test split, 0 ≤ f < 1; default 0.1.
	TestFraction float64
	// Synthetic holds Synthetic(α,β)'s parameters; only for dataset
	// "synthetic".
	Synthetic Synthetic
}

// Partition says how a dataset is split across sites.
type Partition struct {
	// Kind is "iid" (default), "dirichlet", "labels" or "shards".
	Kind string
	// Alpha is the Dirichlet concentration for kind "dirichlet", > 0;
	// small values (0.1) are very skewed, large ones (100) nearly IID.
	Alpha float64
	// Labels is the number of classes each site holds for kind "labels",
	// 1 ≤ k ≤ classes.
	Labels int
	// ShardsPerSite is the number of label-sorted shards each site gets for
	// kind "shards"; default 2.
	ShardsPerSite int
}

// Synthetic holds the parameters of the FedProx paper's Synthetic(α,β).
//
// Each site generates its own partition from the job's seed and its name
// (in `cohort run` and in a deployment alike), so the same seed and site
// name give the same samples wherever the site runs; renaming a site
// changes its data.
type Synthetic struct {
	// Alpha controls how much the local models differ across sites, ≥ 0.
	Alpha float64
	// Beta controls how much the local data differ across sites, ≥ 0.
	Beta float64
	// Dim is the number of features; default 60.
	Dim int
	// Classes is the number of classes; default 10.
	Classes int
	// SamplesPerSite fixes every site's sample count; 0 draws it from the
	// paper's power law (lognormal(4, 2) + 50, as in its code).
	SamplesPerSite int
}

// Model says which model the sites train.
type Model struct {
	// Kind is "logreg", "mlp", "cnn", "exec" or "transfer".
	Kind string
	// Params is a "transfer" model's number of float32 parameters,
	// 1 ≤ Params ≤ [MaxTransferParams]; required for it, unused by the
	// other kinds. The coordinator's max_model_bytes bounds it further.
	Params int64
	// Hidden lists the hidden layers' widths of an "mlp"; default [200].
	Hidden []int
	// Conv lists the channels of a "cnn"'s 5×5 convolutions; default
	// [32, 64].
	Conv []int
	// Command is the argv of an "exec" trainer; required for it.
	Command []string
	// Env adds environment variables to an "exec" trainer.
	Env map[string]string
	// Init says where an "exec" model's initial weights come from; nil
	// leaves them to the trainer on the machine that runs the job (`cohort
	// run` only: a deployed coordinator runs no job commands).
	Init *ModelInit
	// Exec holds an "exec" trainer's settings.
	Exec ExecSettings
}

// ExecSettings are the settings of an "exec" trainer (model.exec).
type ExecSettings struct {
	// Mode is [ExecPerTask] (the default) or [ExecPersistent].
	Mode string
}

// ModelInit is where an exec model's global model before round 1 comes
// from: exactly one of Site and Weights is set.
type ModelInit struct {
	// Site names the site that runs an init task: its trainer builds the
	// initial weights and uploads them.
	Site string
	// Weights is a safetensors file of the initial weights: a path
	// (relative to the job file's folder) or, in a job submitted to a
	// coordinator, "sha256:HEX" of weights uploaded with it.
	Weights string
}

// WeightsRefPrefix starts a [ModelInit.Weights] that names uploaded
// weights by their SHA-256.
const WeightsRefPrefix = "sha256:"

// Sites says how many sites take part and how many each round needs.
type Sites struct {
	// Count is the number of sites; default len(Names).
	Count int
	// Names are the sites' names (their certificates' CNs in a
	// deployment); default "site-1" … "site-N", for `cohort run` only
	// ([Spec.SimulatedSites]): a job submitted to a coordinator lists them.
	Names []string
	// MinPerRound is the quorum: a round commits once this many selected
	// sites report; default every selected site ([Sites.PerRound]).
	MinPerRound int
	// Fraction of the sites selected each round, 0 < f ≤ 1; default 1.
	Fraction float64
	// OverSelect, ≥ 0, selects that share more sites than a round needs
	// (ceil(k × (1 + over_select)), at most every site) so that
	// stragglers and dropouts cost less; the round still aggregates every
	// update that arrives in time. Default 0.
	OverSelect float64
	// Adversaries marks simulated sites as attackers, to study how the
	// arms hold up against them. Only `cohort run` honours it, whose sites
	// are simulated; a deployment's sites are real institutes, and a
	// coordinator refuses a submitted job that lists adversaries.
	Adversaries []Adversary

	// Virtual, when above 0, makes the job a simulation of that many
	// virtual clients, ids 0 … Virtual−1, each holding a partition of the
	// dataset drawn lazily from the job's seed and its id. The sites are
	// then Workers workers named worker-1 … worker-N, each training its
	// share of the round's clients; count, names, fraction, over_select
	// and adversaries do not apply.
	Virtual int64
	// ClientsPerRound is the number of virtual clients sampled each round
	// (key per_round), 1 ≤ per_round ≤ virtual; only with Virtual.
	ClientsPerRound int
	// Workers is the number of worker sites that train the virtual
	// clients; default 1. The round's clients are split among them, and
	// the result does not depend on how many there are.
	Workers int
	// SamplesPerClient fixes each virtual client's sample count; 0 (the
	// default) draws it from a lognormal distribution (median 32).
	SamplesPerClient int
}

// WorkerName returns the name of virtual-client worker i (1-based).
func WorkerName(i int) string { return fmt.Sprintf("worker-%d", i) }

// Attacks a simulated adversary can make.
const (
	// AttackScale multiplies the update's weights by Factor: −1 sends the
	// negated model, 100 a norm bomb.
	AttackScale = "scale"
	// AttackSignFlip sends global − delta (scale by −1).
	AttackSignFlip = "sign_flip"
	// AttackNoise replaces the update with global + Gaussian noise of
	// standard deviation Factor.
	AttackNoise = "noise"
	// AttackClaimSamples reports Samples as the update's sample count.
	AttackClaimSamples = "claim_samples"
	// AttackLabelFlip trains on labels mapped y → classes − 1 − y.
	AttackLabelFlip = "label_flip"
)

// Adversary is a simulated attacking site: what its update does, applied
// after honest local training.
type Adversary struct {
	// Site is the attacking site's name.
	Site string
	// Attacks are applied in order: label_flip before training, then
	// scale / sign_flip / noise on the trained update, then claim_samples.
	Attacks []Attack
}

// Attack is one attack of an adversary. Its canonical form in a job file is
// {kind: scale, factor: -1}; the shorthands are a bare kind (sign_flip,
// label_flip) and a mapping from the kind to its parameter ({scale: -1},
// {noise: 0.5}, {claim_samples: 1099511627776}).
type Attack struct {
	// Kind is "scale", "sign_flip", "noise", "claim_samples" or
	// "label_flip".
	Kind string
	// Factor is scale's multiplier (finite, not 0) or noise's standard
	// deviation (> 0); only for those two kinds.
	Factor float64
	// Samples is claim_samples' claimed count, ≥ 1; only for that kind.
	Samples int64
}

// PerRound returns how many sites a round selects: ceil(Fraction × Count),
// at least 1 and at most Count. An out-of-range Fraction counts as 1.
func (s Sites) PerRound() int {
	if s.Count <= 0 {
		return 0
	}
	f := s.Fraction
	if !(f > 0 && f <= 1) {
		return s.Count
	}
	n := int(math.Ceil(f*float64(s.Count) - 1e-9))
	return min(max(n, 1), s.Count)
}

// Train holds local training settings.
type Train struct {
	// Epochs over the local data per round; default 1.
	Epochs int
	// BatchSize of local SGD; default 32.
	BatchSize int
	// LR is the SGD learning rate, > 0; default 0.05.
	LR float64
	// Momentum of SGD, 0 ≤ m < 1; default 0.
	Momentum float64
	// WeightDecay is the L2 penalty, ≥ 0; default 0.
	WeightDecay float64
	// LRDecay multiplies the learning rate after every round: round r
	// trains with LR·LRDecay^(r−1), in (0, 1]; default 1, no decay. A
	// centralized arm decays per round-equivalent, every Epochs epochs
	// ([Train.EpochLR]), so that both kinds of arm train their last pass
	// over the data at the same rate. A decaying rate lets the last rounds
	// settle instead of ending wherever constant-rate SGD's noise leaves
	// the model.
	LRDecay float64
}

// RoundLR returns the learning rate of round (or epoch) r, from 1.
func (t Train) RoundLR(r int) float64 {
	if t.LRDecay <= 0 || t.LRDecay >= 1 || r <= 1 {
		return t.LR
	}
	return t.LR * math.Pow(t.LRDecay, float64(r-1))
}

// EpochLR returns the learning rate of a centralized arm's epoch e, from 1:
// that of the round the epoch stands for when every round is Epochs
// epochs, so that LRDecay applies per round-equivalent as in the federated
// arms (10 epochs as 5 rounds × 2 epochs decay 4 times, not 9).
func (t Train) EpochLR(e int) float64 {
	per := max(t.Epochs, 1)
	return t.RoundLR((e + per - 1) / per)
}

// TrainOverride overrides some of the job's [Train] settings for one arm;
// nil fields keep the job's value.
type TrainOverride struct {
	Epochs      *int
	BatchSize   *int
	LR          *float64
	Momentum    *float64
	WeightDecay *float64
}

// Arm is one run to compare: exactly one of Centralized and Strategy is set.
type Arm struct {
	// Name is a simple identifier (letters, digits, '_' and '-'), unique in
	// the job; default "centralized" or the strategy's name.
	Name string
	// Centralized trains one model on all sites' data pooled.
	Centralized *Centralized
	// Strategy runs federated rounds with this aggregation strategy.
	Strategy *Strategy
	// Train overrides the job's training settings for this arm.
	Train *TrainOverride
}

// Federated reports whether the arm runs federated rounds.
func (a Arm) Federated() bool { return a.Strategy != nil }

// Centralized is the centralized baseline.
type Centralized struct {
	// Epochs over the pooled data; default Rounds × the arm's train epochs,
	// the same number of passes over the data as the federated arms.
	Epochs int
	// Site names the site that trains the arm on its data (the pooled or
	// reference data); empty: a site advertising the pooled-data trainer.
	Site string
}

// Strategy is a federated aggregation strategy.
type Strategy struct {
	// Name is "fedavg", "fedprox", "median", "trimmed_mean", "krum",
	// "multi_krum", "fedadam", "fedyogi", "fedadagrad" or "fedavgm".
	Name string
	// Mu is FedProx's proximal coefficient μ ≥ 0 (0 is FedAvg); fedprox only.
	Mu float64
	// ServerLR scales the aggregated update applied to the global model;
	// default 1.
	ServerLR float64
	// Beta is the fraction trimmed at each end, 0 ≤ β < 0.5; trimmed_mean
	// only, default 0.1.
	Beta float64
	// F is the number of Byzantine sites assumed, ≥ 0; krum and multi_krum
	// only, default 1. A round needs at least 2f + 3 updates.
	F int
	// M is how many best-scored updates are averaged; multi_krum only,
	// default 0: n − f of a round's n updates.
	M int
	// ServerOpt holds the adaptive server optimizers' settings (fedadam,
	// fedyogi, fedadagrad, fedavgm); zero values take the defaults.
	ServerOpt ServerOpt

	// MaxWeightFraction caps the share of a round's aggregation weight any
	// one site's update gets, 0 < f ≤ 1; default [DefaultMaxWeightFraction]
	// for a job with at least 3 sites, else 1. 1 switches the cap off.
	MaxWeightFraction float64
	// Clip screens each update's delta (update − global) by its L2 norm
	// before aggregation; on by default.
	Clip Clip
	// DP, when set, makes the arm DP-FedAvg (McMahan et al., 2018):
	// central differential privacy at the coordinator.
	DP *DP
}

// Server optimizer and screening modes.
const (
	// StrategyFedAdam is FedAdam (Reddi et al., 2021).
	StrategyFedAdam = "fedadam"
	// StrategyFedYogi is FedYogi (Reddi et al., 2021).
	StrategyFedYogi = "fedyogi"
	// StrategyFedAdagrad is FedAdagrad (Reddi et al., 2021).
	StrategyFedAdagrad = "fedadagrad"
	// StrategyFedAvgM is FedAvg with server momentum (Hsu et al., 2019).
	StrategyFedAvgM = "fedavgm"

	// ClipReject refuses an update whose delta norm is over the bound.
	ClipReject = "reject"
	// ClipClip scales an update's delta down to the bound.
	ClipClip = "clip"
	// ClipOff switches norm screening off (non-finite updates are still
	// refused).
	ClipOff = "off"
)

// ServerOpt is an adaptive server optimizer's settings (Reddi et al.,
// "Adaptive Federated Optimization", 2021).
type ServerOpt struct {
	// Eta is the server learning rate η; default 0.01 (fedadam, fedyogi),
	// 0.1 (fedadagrad); fedavgm uses the strategy's ServerLR.
	Eta float64
	// Beta1 is the first-moment decay β1 (fedadam, fedyogi); default 0.9.
	Beta1 float64
	// Beta2 is the second-moment decay β2 (fedadam, fedyogi); default 0.99.
	Beta2 float64
	// Tau is the adaptivity τ > 0; default 1e-3.
	Tau float64
	// Momentum is fedavgm's server momentum β, 0 ≤ β < 1; default 0.9.
	Momentum float64
}

// Clip is how updates are screened by the L2 norm of their delta.
type Clip struct {
	// Mode is "reject" (default), "clip" or "off".
	Mode string
	// Norm is an absolute bound on the delta's L2 norm; 0: none.
	Norm float64
	// AdaptiveFactor bounds the delta's norm at this multiple of the
	// round's median delta norm; default [DefaultAdaptiveFactor]; 0 with
	// the key written switches the adaptive bound off.
	AdaptiveFactor float64
}

// DP is central differential privacy for an arm (DP-FedAvg): each update's
// delta is clipped to Clip, the deltas are averaged unweighted, and
// Gaussian noise of standard deviation NoiseMultiplier·Clip/n is added to
// the average of n updates.
type DP struct {
	// Clip is the L2 bound S on each update's delta, > 0.
	Clip float64
	// NoiseMultiplier is σ ≥ 0; the noise on the sum is σ·S.
	NoiseMultiplier float64
	// Delta is the δ of the (ε, δ) guarantee reported; default 1e-5.
	Delta float64
}

// Eval says when the global model is evaluated.
type Eval struct {
	// Every N rounds (and always after the last); default 1.
	Every int
	// Site names the site that evaluates the global model on its test set
	// (an evaluate task); empty: the coordinator's own test set where it
	// holds one, else the sites' federated evaluation alone.
	Site string
}

// Deadline bounds a round.
type Deadline struct {
	// Round is how long a round waits; sites that have not reported by
	// then are dropped from it. Default 10m.
	Round time.Duration
	// Retries is how many times a round that failed for want of
	// min_per_round updates (dropouts, stragglers past the deadline) is
	// run again, with a fresh selection, before the job fails; default 0.
	Retries int
}

// Energy holds the energy-measurement and carbon settings.
type Energy struct {
	// Interval between power samples, ≥ 10ms; default 100ms.
	Interval time.Duration
	// CarbonGPerKWh is the grid's carbon intensity in gCO2/kWh, ≥ 0;
	// default [DefaultCarbonGPerKWh].
	CarbonGPerKWh float64
	// PUE is the facility's power usage effectiveness, ≥ 1; default 1.
	PUE float64
	// CPUWattsPerCore is the wattage per busy core behind the `estimated`
	// figure, ≥ 0; default [DefaultCPUWattsPerCore].
	CPUWattsPerCore float64
}

// Register says how a job registers its arms' final models: each arm that
// finishes becomes a version of the registered model Name, and AliasBest,
// when set, is moved to the best arm's version by BestMetric once every
// arm has finished.
type Register struct {
	// Name is the registered model; it is created if it does not exist.
	Name string
	// AliasBest is an alias (e.g. champion) moved to the best arm's
	// version; "" moves none.
	AliasBest string
	// BestMetric picks the best arm: test_accuracy (default, higher is
	// better), accuracy_per_kj (higher), energy_joules or wall_seconds
	// (lower).
	BestMetric string
}

// Metrics that register.best_metric may name.
const (
	BestTestAccuracy  = "test_accuracy"
	BestAccuracyPerKJ = "accuracy_per_kj"
	BestEnergyJoules  = "energy_joules"
	BestWallSeconds   = "wall_seconds"
)

// BestMetrics are the values register.best_metric takes.
func BestMetrics() []string {
	return []string{BestTestAccuracy, BestAccuracyPerKJ, BestEnergyJoules, BestWallSeconds}
}

// HigherIsBetter reports whether a larger value of best metric m is better.
func HigherIsBetter(m string) bool { return m == BestTestAccuracy || m == BestAccuracyPerKJ }

// ArmTrain returns the job's training settings with a's overrides applied.
func (s *Spec) ArmTrain(a Arm) Train {
	t := s.Train
	o := a.Train
	if o == nil {
		return t
	}
	if o.Epochs != nil {
		t.Epochs = *o.Epochs
	}
	if o.BatchSize != nil {
		t.BatchSize = *o.BatchSize
	}
	if o.LR != nil {
		t.LR = *o.LR
	}
	if o.Momentum != nil {
		t.Momentum = *o.Momentum
	}
	if o.WeightDecay != nil {
		t.WeightDecay = *o.WeightDecay
	}
	return t
}

// SimulatedSites reports whether the job gave its sites by count alone
// (sites: {count: N}) and [Spec.ApplyDefaults] named them "site-1" …
// "site-N". Such sites are simulated: `cohort run` starts them. A
// deployment's sites are institutes that join under their certificates'
// names, so a coordinator refuses the job rather than wait for agents
// named site-1 … site-N.
func (s *Spec) SimulatedSites() bool { return s.namesGenerated }

// ApplyDefaults fills in every setting left at its zero value with its
// documented default. Settings that [Parse] found written in the file keep
// their value even when it is zero (test_fraction: 0 means no local test
// split), so calling it again on a parsed Spec changes nothing.
func (s *Spec) ApplyDefaults() {
	set := func(path string) bool {
		_, ok := s.lines[path]
		return ok
	}
	if s.Tracking.URI == "" && !set("tracking.uri") {
		s.Tracking.URI = DefaultTrackingURI
	}
	if s.Tracking.Experiment == "" && !set("tracking.experiment") {
		s.Tracking.Experiment = s.Name
	}

	d := &s.Data
	if d.Partition.Kind == "" && !set("data.partition.kind") {
		d.Partition.Kind = PartitionIID
	}
	if d.Partition.Kind == PartitionShards && d.Partition.ShardsPerSite == 0 && !set("data.partition.shards_per_site") {
		d.Partition.ShardsPerSite = DefaultShardsPerSite
	}
	if d.TestFraction == 0 && !set("data.test_fraction") {
		d.TestFraction = DefaultTestFraction
	}
	if d.Dataset == DatasetSynthetic {
		if d.Synthetic.Dim == 0 && !set("data.synthetic.dim") {
			d.Synthetic.Dim = DefaultSyntheticDim
		}
		if d.Synthetic.Classes == 0 && !set("data.synthetic.classes") {
			d.Synthetic.Classes = DefaultSyntheticClasses
		}
	}

	m := &s.Model
	if m.Kind == ModelMLP && len(m.Hidden) == 0 && !set("model.hidden") {
		m.Hidden = []int{defaultMLPHidden}
	}
	if m.Kind == ModelCNN && len(m.Conv) == 0 && !set("model.conv") {
		m.Conv = []int{32, 64}
	}
	if m.Kind == ModelExec && m.Exec.Mode == "" && !set("model.exec.mode") {
		m.Exec.Mode = ExecPerTask
	}

	st := &s.Sites
	if st.Virtual != 0 || set("sites.virtual") {
		if st.Workers == 0 && !set("sites.workers") {
			st.Workers = 1
		}
		if st.MinPerRound == 0 && !set("sites.min_per_round") {
			st.MinPerRound = st.Workers
		}
		if st.Count == 0 && len(st.Names) == 0 && st.Workers > 0 && st.Workers <= MaxSites {
			st.Count = st.Workers
			st.Names = make([]string, st.Workers)
			for i := range st.Names {
				st.Names[i] = WorkerName(i + 1)
			}
			s.namesGenerated = true
		}
	}
	if st.Count == 0 && !set("sites.count") {
		st.Count = len(st.Names)
	}
	if len(st.Names) == 0 && !set("sites.names") && st.Count > 0 && st.Count <= MaxSites {
		st.Names = make([]string, st.Count)
		for i := range st.Names {
			st.Names[i] = fmt.Sprintf("site-%d", i+1)
		}
		s.namesGenerated = true
	}
	if st.Fraction == 0 && !set("sites.fraction") {
		st.Fraction = 1
	}
	if st.MinPerRound == 0 && !set("sites.min_per_round") {
		st.MinPerRound = st.PerRound()
	}

	t := &s.Train
	if t.Epochs == 0 && !set("train.epochs") {
		t.Epochs = DefaultEpochs
	}
	if t.BatchSize == 0 && !set("train.batch_size") {
		t.BatchSize = DefaultBatchSize
	}
	if t.LRDecay == 0 && !set("train.lr_decay") {
		t.LRDecay = 1
	}
	if t.LR == 0 && !set("train.lr") {
		t.LR = DefaultLR
	}

	for i := range s.Arms {
		a := &s.Arms[i]
		p := fmt.Sprintf("arms.%d", i)
		if a.Name == "" && !set(p+".name") {
			switch {
			case a.Centralized != nil && a.Strategy == nil:
				a.Name = "centralized"
			case a.Strategy != nil && a.Centralized == nil:
				a.Name = a.Strategy.Name
			}
		}
		if a.Strategy != nil && a.Strategy.ServerLR == 0 && !set(p+".strategy.server_lr") {
			a.Strategy.ServerLR = DefaultServerLR
		}
		if st := a.Strategy; st != nil && st.Name == StrategyTrimmedMean && st.Beta == 0 && !set(p+".strategy.beta") {
			st.Beta = DefaultBeta
		}
		if st := a.Strategy; st != nil && (st.Name == StrategyKrum || st.Name == StrategyMultiKrum) && st.F == 0 && !set(p+".strategy.f") {
			st.F = DefaultF
		}
		if st := a.Strategy; st != nil {
			s.strategyDefaults(p+".strategy", st, set)
		}
		if c := a.Centralized; c != nil && c.Epochs == 0 && !set(p+".centralized.epochs") {
			if e := s.ArmTrain(*a).Epochs; s.Rounds > 0 && s.Rounds <= MaxRounds && e > 0 && e <= MaxRounds {
				c.Epochs = s.Rounds * e
			}
		}
	}

	if s.Eval.Every == 0 && !set("eval.every") {
		s.Eval.Every = DefaultEvalEvery
	}
	if s.Deadline.Round == 0 && !set("deadline.round") {
		s.Deadline.Round = DefaultRoundDeadline
	}
	if r := s.Register; r != nil && r.BestMetric == "" && !set("register.best_metric") {
		r.BestMetric = BestTestAccuracy
	}
	e := &s.Energy
	if e.Interval == 0 && !set("energy.interval") {
		e.Interval = DefaultEnergyInterval
	}
	if e.CarbonGPerKWh == 0 && !set("energy.carbon_g_per_kwh") {
		e.CarbonGPerKWh = DefaultCarbonGPerKWh
	}
	if e.PUE == 0 && !set("energy.pue") {
		e.PUE = DefaultPUE
	}
	if e.CPUWattsPerCore == 0 && !set("energy.cpu_watts_per_core") {
		e.CPUWattsPerCore = DefaultCPUWattsPerCore
	}
}

// strategyDefaults fills in the bounded-influence, screening, server
// optimizer and DP defaults of the strategy at path sp.
func (s *Spec) strategyDefaults(sp string, st *Strategy, set func(string) bool) {
	if st.MaxWeightFraction == 0 && !set(sp+".max_weight_fraction") {
		// With one or two sites a cap of one half would only stop the
		// round from weighting by samples at all.
		st.MaxWeightFraction = 1
		if s.Sites.Count >= 3 {
			st.MaxWeightFraction = DefaultMaxWeightFraction
		}
	}
	if st.Clip.Mode == "" && !set(sp+".clip.mode") {
		st.Clip.Mode = ClipReject
	}
	if st.Clip.AdaptiveFactor == 0 && !set(sp+".clip.adaptive_factor") {
		st.Clip.AdaptiveFactor = DefaultAdaptiveFactor
	}
	o := &st.ServerOpt
	if o.Eta == 0 && !set(sp+".eta") {
		switch st.Name {
		case StrategyFedAdam, StrategyFedYogi:
			o.Eta = DefaultAdaptiveEta
		case StrategyFedAdagrad:
			o.Eta = DefaultAdagradEta
		}
	}
	if st.Name == StrategyFedAdam || st.Name == StrategyFedYogi {
		if o.Beta1 == 0 && !set(sp+".beta1") {
			o.Beta1 = DefaultBeta1
		}
		if o.Beta2 == 0 && !set(sp+".beta2") {
			o.Beta2 = DefaultBeta2
		}
	}
	if adaptive(st.Name) && o.Tau == 0 && !set(sp+".tau") {
		o.Tau = DefaultTau
	}
	if st.Name == StrategyFedAvgM && o.Momentum == 0 && !set(sp+".momentum") {
		o.Momentum = DefaultServerMomentum
	}
	if st.DP != nil && st.DP.Delta == 0 && !set(sp+".dp.delta") {
		st.DP.Delta = DefaultDPDelta
	}
}

// adaptive reports whether strategy name is one of Reddi et al.'s adaptive
// server optimizers, which take eta and tau.
func adaptive(name string) bool {
	return name == StrategyFedAdam || name == StrategyFedYogi || name == StrategyFedAdagrad
}
