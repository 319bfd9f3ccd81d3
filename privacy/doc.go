// Package privacy accounts for the differential privacy of DP-FedAvg
// (McMahan et al., 2018; the aggregators package's DP option): [Epsilon]
// turns a noise multiplier σ, a sampling rate q and a number of rounds
// into an (ε, δ) guarantee, with the Rényi DP of the Poisson-subsampled
// Gaussian mechanism (Mironov, Talwar and Zhang, "Rényi Differential
// Privacy of the Sampled Gaussian Mechanism", 2019) computed as TensorFlow
// Privacy's rdp_accountant does, and the conversion to (ε, δ) of Canonne,
// Kamath and Steinke (2020) / Balle et al. (2020) that TF Privacy's
// compute_eps uses.
//
// What it covers: central DP at site level. The coordinator is trusted —
// it sees each site's update in the clear, clips it, and adds the noise
// to the average — and the guarantee is about whether any one site (all
// of its data together) took part: q is the number of sites sampled per
// round divided by the number of sites, and each round a site's clipped
// delta counts once. It assumes sites are sampled independently each
// round (Poisson sampling) and that the number of updates averaged is
// fixed by the selection, not by which sites happen to answer.
//
// What it does not protect: anything from the coordinator itself, or from
// whoever can read its memory, logs or replicated state (the DP seed
// included: knowing it, one can subtract the noise); a site's own local
// model and the update it sends; server and site metrics that are logged
// (losses, sample counts, update norms, weight fractions, timing and
// energy), which are not noised; and examples within a site beyond the
// site-level guarantee. ε grows with every round released, including
// models released before the last.
package privacy
