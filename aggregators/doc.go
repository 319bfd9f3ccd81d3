// Package aggregators holds the [Strategy] interface through which the
// coordinator folds a round's site updates into the next global model, and
// the strategies: [FedAvg] (McMahan et al., 2017), the average of the
// sites' weights weighted by their sample counts, optionally applied with a
// server learning rate, and [FedProx] (Li et al., 2020), whose server side
// is FedAvg's and whose proximal coefficient μ the coordinator forwards to
// the sites; and the robust rules, which one site cannot hijack:
// [Median] and [TrimmedMean] (Yin et al., 2018), coordinate-wise, and
// [Krum] and [MultiKrum] (Blanchard et al., 2017), which pick the updates
// closest to their neighbours. [New] builds one by its job-file name.
//
// What a strategy has the sites train with lives here too, in one place:
// [ClientSettings] (FedProx's μ today), their values under a strategy
// ([ClientParams], which a strategy declares by implementing [ClientSide])
// and their parameter names ([ClientParamNames]). The coordinator writes
// them into each train task, and a site reads them back with
// [ReadClientSettings].
//
// Over FedAvg's aggregate sit the server optimizers of [FedOpt] (Reddi et
// al., 2021: fedadam, fedyogi, fedadagrad; and fedavgm), whose moments
// are server state the coordinator replicates through [Stateful]. The
// FedAvg family takes two options: a cap on any one site's share of the
// weight ([FedAvg.MaxFraction], bounded influence against a site that
// claims 2^40 samples) and DP-FedAvg's clipping and Gaussian noise ([DP];
// package privacy accounts for its ε), whose noise a coordinator replays
// bit for bit through [Randomized].
//
// FedAvg and FedProx stream: each update is validated and folded into a running
// sum as it arrives, so memory is O(params) however many sites report;
// without a weight cap or DP a round also folds an update it reads as a
// stream ([StreamAdder]), never holding it whole. An Add allocates nothing that grows with the model. The sum is float32,
// folded with SIMD axpy on every core; each update is weighted by its
// sample count relative to the first update's, and the final division, by
// the sum of the weights applied, is float64, so a round of one site gives
// back its weights exactly, however many samples it claims. The choice was measured: a float64 sum moves 20
// bytes per parameter and update instead of 12 and ran 1.7× (AVX2 kernel)
// to 2× (plain Go, BenchmarkAccumulateFloat64) slower, while the float32
// sum stays within 0.6, 1.5 and 4.6 float32 ulps of the exact weighted mean
// on average over 10, 100 and 1,000 sites, and never further from it than
// 1e-6 of the largest weight's magnitude (TestAccuracy) — less than
// training can tell apart. An update whose values, times its sample count,
// could overflow the sum is refused.
//
// The robust rules cannot stream: a median needs every value of a
// coordinate at once. Their rounds hold a copy of each update, up to a
// memory budget (4 GiB by default), and ignore sample counts, which a
// hostile site could inflate.
package aggregators
