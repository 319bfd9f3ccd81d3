package privacy

import (
	"errors"
	"fmt"
	"math"
)

// ErrBadParams is returned by [Epsilon] and [RDP] for a parameter out of
// range.
var ErrBadParams = errors.New("bad privacy parameters")

// DefaultOrders are the Rényi orders α over which [Epsilon] minimises,
// TF Privacy's compute_dp_sgd_privacy list: 1.25 to 4.5 in quarter and
// half steps, every whole number from 5 to 63, then 128, 256 and 512.
var DefaultOrders = func() []float64 {
	o := []float64{1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5}
	for a := 5; a < 64; a++ {
		o = append(o, float64(a))
	}
	return append(o, 128, 256, 512)
}()

// Epsilon returns the ε of the (ε, δ)-DP guarantee of steps rounds of the
// sampled Gaussian mechanism with sampling rate q and noise multiplier
// sigma (the noise's standard deviation over the L2 sensitivity), and the
// Rényi order α at which the bound is tightest, over [DefaultOrders]. The
// conversion from RDP is ε = rdp(α) + log((α−1)/α) − (log δ + log α)/(α−1)
// (Canonne, Kamath and Steinke, 2020), minimised over α; ε is 0 where
// δ² ≥ 1 − exp(−rdp), and +Inf for sigma 0 (no noise). steps 0 or q 0
// give 0. An error wrapping [ErrBadParams] names a q outside [0, 1], a
// negative or non-finite sigma, a δ outside (0, 1) or negative steps.
func Epsilon(q, sigma float64, steps int, delta float64) (eps, order float64, err error) {
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("%w: delta %v must be above 0 and below 1", ErrBadParams, delta)
	}
	rdp, err := RDP(q, sigma, steps, DefaultOrders)
	if err != nil {
		return 0, 0, err
	}
	eps, order = math.Inf(1), DefaultOrders[0]
	for i, a := range DefaultOrders {
		var e float64
		switch r := rdp[i]; {
		case delta*delta+math.Expm1(-r) >= 0:
			e = 0 // bounded through the KL divergence: δ ≤ √(1 − e^−r)
		case a > 1.01:
			e = r + math.Log1p(-1/a) - math.Log(delta*a)/(a-1)
		default:
			e = math.Inf(1) // the bound is unstable as α → 1
		}
		if e < eps {
			eps, order = e, a
		}
	}
	return max(0, eps), order, nil
}

// RDP returns the Rényi DP, at each of orders (each > 1), of steps rounds
// of the Poisson-subsampled Gaussian mechanism with sampling rate q and
// noise multiplier sigma: steps·log(A_α)/(α−1), with A_α computed in log
// space exactly for whole α and by the series of Mironov et al. for
// fractional α; α/(2σ²) per step for q = 1.
func RDP(q, sigma float64, steps int, orders []float64) ([]float64, error) {
	switch {
	case !(q >= 0 && q <= 1):
		return nil, fmt.Errorf("%w: sampling rate q %v must be from 0 to 1 (sites per round / sites)", ErrBadParams, q)
	case !(sigma >= 0) || math.IsInf(sigma, 0):
		return nil, fmt.Errorf("%w: noise multiplier sigma %v must be finite and ≥ 0", ErrBadParams, sigma)
	case steps < 0:
		return nil, fmt.Errorf("%w: steps %d must not be negative", ErrBadParams, steps)
	}
	out := make([]float64, len(orders))
	for i, a := range orders {
		if !(a > 1) {
			return nil, fmt.Errorf("%w: order %v must be above 1", ErrBadParams, a)
		}
		switch {
		case q == 0 || steps == 0:
			out[i] = 0
		case sigma == 0 || math.IsInf(a, 1):
			out[i] = math.Inf(1)
		case q == 1:
			out[i] = float64(steps) * a / (2 * sigma * sigma)
		case a == math.Trunc(a):
			out[i] = float64(steps) * logAInt(q, sigma, int(a)) / (a - 1)
		default:
			out[i] = float64(steps) * logAFrac(q, sigma, a) / (a - 1)
		}
	}
	return out, nil
}

// logAInt returns log A_α for whole α, 0 < q < 1: log Σ_i C(α, i)
// q^i (1−q)^(α−i) exp((i² − i)/(2σ²)).
func logAInt(q, sigma float64, alpha int) float64 {
	logA := math.Inf(-1)
	for i := 0; i <= alpha; i++ {
		fi, fa := float64(i), float64(alpha)
		s := logBinom(fa, fi) + fi*math.Log(q) + (fa-fi)*math.Log1p(-q) + (fi*fi-fi)/(2*sigma*sigma)
		logA = logAdd(logA, s)
	}
	return logA
}

// logAFrac returns log A_α for fractional α, 0 < q < 1: the two parts of
// the integral, over (−∞, z0] and [z0, ∞), as series summed until their
// terms fall below e^−30.
func logAFrac(q, sigma, alpha float64) float64 {
	logA0, logA1 := math.Inf(-1), math.Inf(-1)
	z0 := sigma*sigma*math.Log(1/q-1) + 0.5
	for i := 0.0; ; i++ {
		logCoef, positive := logAbsBinom(alpha, i)
		j := alpha - i
		logT0 := logCoef + i*math.Log(q) + j*math.Log1p(-q)
		logT1 := logCoef + j*math.Log(q) + i*math.Log1p(-q)
		logE0 := math.Log(0.5) + logErfc((i-z0)/(math.Sqrt2*sigma))
		logE1 := math.Log(0.5) + logErfc((z0-j)/(math.Sqrt2*sigma))
		logS0 := logT0 + (i*i-i)/(2*sigma*sigma) + logE0
		logS1 := logT1 + (j*j-j)/(2*sigma*sigma) + logE1
		if positive {
			logA0, logA1 = logAdd(logA0, logS0), logAdd(logA1, logS1)
		} else {
			logA0, logA1 = logSub(logA0, logS0), logSub(logA1, logS1)
		}
		if max(logS0, logS1) < -30 || i > 10000 {
			break
		}
	}
	return logAdd(logA0, logA1)
}

// logAdd returns log(e^x + e^y).
func logAdd(x, y float64) float64 {
	a, b := min(x, y), max(x, y)
	if math.IsInf(a, -1) {
		return b
	}
	return math.Log1p(math.Exp(a-b)) + b
}

// logSub returns log(e^x − e^y), x ≥ y; −Inf for x = y.
func logSub(x, y float64) float64 {
	switch {
	case math.IsInf(y, -1):
		return x
	case x <= y:
		return math.Inf(-1)
	}
	d := math.Expm1(x - y)
	if math.IsInf(d, 1) {
		return x
	}
	return math.Log(d) + y
}

// logBinom returns log C(n, k) for whole 0 ≤ k ≤ n.
func logBinom(n, k float64) float64 {
	a, _ := math.Lgamma(n + 1)
	b, _ := math.Lgamma(k + 1)
	c, _ := math.Lgamma(n - k + 1)
	return a - b - c
}

// logAbsBinom returns log |C(α, i)| of the generalised binomial
// coefficient Γ(α+1)/(Γ(i+1)·Γ(α−i+1)) for α > 0 not whole, and whether
// it is positive.
func logAbsBinom(alpha, i float64) (float64, bool) {
	a, _ := math.Lgamma(alpha + 1)
	b, _ := math.Lgamma(i + 1)
	c, sign := math.Lgamma(alpha - i + 1)
	return a - b - c, sign > 0
}

// logErfc returns log erfc(x), by its asymptotic series from x = 25 on:
// math.Erfc goes subnormal, and loses its precision, past x ≈ 26.5.
func logErfc(x float64) float64 {
	if x < 25 {
		return math.Log(math.Erfc(x))
	}
	// erfc(x) ~ exp(−x² − 1/(2x²) + 5/(8x⁴) …)/(x·√π) for large x.
	return -math.Log(math.Pi)/2 - math.Log(x) - x*x - 0.5/(x*x) + 0.625/math.Pow(x, 4) - 37.0/24/math.Pow(x, 6) + 353.0/64/math.Pow(x, 8)
}
