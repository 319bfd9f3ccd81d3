// Package job reads the YAML job file that describes one Cohort experiment:
// the data and how it is split across sites, the model, the rounds, the
// training settings, the arms to compare (a centralized baseline and
// federated strategies such as FedAvg, FedProx, the robust median and the
// adaptive server optimizers, each bounding one site's influence), the
// round deadline, the energy settings and where to log it all. [Parse] and
// [Load] decode the file strictly (unknown keys, wrong types and impossible
// values are errors that name the line, the key and the fix), fill in the
// documented defaults and validate the result; [Spec.Flatten] turns the
// spec into the dotted parameters logged on the job's tracking run.
//
// Every key, with its default ("required" where there is none):
//
//	name: my-job                     # required
//	seed: 0
//	tracking: {uri: "sqlite:cohort.db", experiment: <name>}   # or uri: https://mlflow:5000
//	data:
//	  dataset: fashion-mnist         # required: fashion-mnist | synthetic
//	  path: ""                       # "" = $COHORT_DATA, /usr/share/datasets/..., download; cohort run only
//	  partition: {kind: iid}         # iid | dirichlet (alpha) | labels (labels) | shards (shards_per_site: 2)
//	  test_fraction: 0.1             # each site's local test split
//	  synthetic: {alpha: 0, beta: 0, dim: 60, classes: 10, samples_per_site: 0}   # synthetic only
//	model: {kind: mlp, hidden: [200]}   # required: logreg | mlp (hidden) | cnn (conv: [32, 64]) | exec (command, env, init) | transfer (params)
//	  # transfer: {kind: transfer, params: 25000000} is params float32s that the sites send back at once, slightly
//	  #   perturbed, without training: it measures the orchestrator's own costs at any model size; no accuracy
//	  # exec only: init: {site: kit} (an init task there makes the initial weights) or
//	  # init: {weights: FILE.safetensors}; required by a deployed coordinator, which runs no job commands
//	sites: {count: 4, names: [site-1, ...], fraction: 1.0, min_per_round: <selected>, over_select: 0}   # count or names required
//	  # `cohort run` only (simulated sites; a coordinator refuses a submitted job with adversaries):
//	  # adversaries: [{site: site-4, attacks: [{kind: claim_samples, samples: 1099511627776}, {kind: scale, factor: -1}]}]
//	  #   kinds: scale (factor ≠ 0: factor·update; −1 sends the negated model), sign_flip (global − delta), noise (factor > 0:
//	  #   global + N(0, factor²)), claim_samples (samples ≥ 1), label_flip (trains on y → classes − 1 − y);
//	  #   shorthands: a bare kind (sign_flip) or {scale: -1}, {noise: 0.5}, {claim_samples: N}
//	rounds: 20                       # required
//	train: {epochs: 1, batch_size: 32, lr: 0.05, momentum: 0, weight_decay: 0, lr_decay: 1}   # lr × lr_decay^(round−1)
//	arms:                            # required, at least one
//	  - {name: centralized, centralized: {epochs: <rounds × epochs>, site: ""}}   # site: where it trains ("" = the pooled-data site)
//	  - {name: fedavg, strategy: {name: fedavg, server_lr: 1}}            # or strategy: fedavg
//	  - {name: fedprox, strategy: {name: fedprox, mu: 0.01}, train: {lr: 0.1}}   # per-arm train overrides
//	  # robust to hostile sites (unweighted: sample counts are not trusted; a round's updates are held in memory):
//	  - {name: median, strategy: {name: median, server_lr: 1}}            # coordinate-wise median
//	  - {name: trimmed, strategy: {name: trimmed_mean, beta: 0.1}}        # drop beta of the values at each end, 0 ≤ beta < 0.5
//	  - {name: krum, strategy: {name: krum, f: 1}}                        # f Byzantine sites; 2f+3 ≤ min_per_round
//	  - {name: mkrum, strategy: {name: multi_krum, f: 1, m: 0}}           # average the m best by Krum's score; 0 = n − f
//	  # adaptive server optimizers (Reddi et al., 2021) and server momentum:
//	  - {name: adam, strategy: {name: fedadam, eta: 0.01, beta1: 0.9, beta2: 0.99, tau: 0.001}}   # also fedyogi
//	  - {name: adagrad, strategy: {name: fedadagrad, eta: 0.1, tau: 0.001}}
//	  - {name: avgm, strategy: {name: fedavgm, momentum: 0.9, server_lr: 1}}
//	  # every strategy bounds one site's influence:
//	  #   max_weight_fraction: 0.5 (≥ 3 sites, else 1)    # cap on one update's share of a round's weight; 1 = no cap
//	  #   clip: {mode: reject, norm: 0, adaptive_factor: 10}   # screen deltas over norm (0: none) or factor × the
//	  #                                    # round's median norm (0 written: none); mode reject | clip | off (clip: off)
//	  - {name: dp, strategy: {name: fedavg, dp: {clip: 1.0, noise_multiplier: 1.1, delta: 1e-5}}}   # DP-FedAvg; fedavg only
//	eval: {every: 1, site: ""}       # site: it evaluates on its test set; "" = the coordinator's, else federated only
//	deadline: {round: 10m, retries: 0}   # retries: a round short of min_per_round runs again, this many times
//	energy: {interval: 100ms, carbon_g_per_kwh: 475, pue: 1.0, cpu_watts_per_core: 10}
//	register: {name: fmnist-classifier, alias_best: champion, best_metric: test_accuracy}
//	                                 # each arm's final model becomes a version of the registered
//	                                 # model; alias_best moves to the best arm's (default: off)
//
// Anchors, aliases and "<<" merge keys work; top-level keys starting with
// "x-" are ignored so that they can hold anchors.
package job
