// Package aggregators holds the [Strategy] interface the coordinator
// aggregates a round's updates through, and the strategies: FedAvg
// (McMahan et al., 2017), weighted by sample count, and FedProx (Li et al.,
// 2020), whose server side is FedAvg's and whose proximal coefficient μ the
// coordinator forwards to the sites. Aggregation streams: each update is
// folded into an accumulator as it arrives, so memory is O(params)
// whatever the number of sites. The accumulator is float32 with weights
// relative to the first update's sample count (so magnitudes stay near 1),
// folded with gonum's SIMD axpy; the average is taken in float64.
package aggregators
