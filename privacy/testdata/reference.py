"""Independent reference values for privacy.Epsilon (rdp_test.go).

The Go code follows TF Privacy's series for log A_alpha. This script does
not: it integrates A_alpha numerically with mpmath at 50 digits, as TF
Privacy's own rdp_accountant_test checks its series,

    A_alpha = integral of mu0(z) * ((1 - q) + q * exp((2z - 1) / (2 sigma^2)))^alpha dz,
    mu0 = N(0, sigma^2),

then RDP = steps * log(A_alpha) / (alpha - 1), and converts to (eps, delta)
with the bound of Canonne, Kamath and Steinke (2020) that TF Privacy's
compute_eps uses, minimised over the same orders; q = 1 uses the closed
form alpha / (2 sigma^2). It also prints the classic conversion
eps = rdp - log(delta) / (alpha - 1) (Mironov 2017) for comparison.

Run with Debian's interpreter (mpmath is installed there):

    /usr/bin/python3 privacy/testdata/reference.py
"""
import math

import mpmath as mp

mp.mp.dps = 50

ORDERS = [1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5] + list(range(5, 64)) + [128, 256, 512]


def log_a(q, sigma, alpha):
    q, sigma, alpha = mp.mpf(q), mp.mpf(sigma), mp.mpf(alpha)

    def f(z):
        return mp.npdf(z, 0, sigma) * ((1 - q) + q * mp.exp((2 * z - 1) / (2 * sigma**2))) ** alpha

    z0 = sigma**2 * mp.log(1 / q - 1) + mp.mpf(0.5)
    # The integrand peaks near z = alpha for large alpha: split there too.
    points = sorted({mp.mpf(0), z0, alpha, alpha / 2})
    return float(mp.log(mp.quad(f, [-mp.inf] + points + [mp.inf], maxdegree=10)))


def rdp(q, sigma, steps, alpha):
    if q == 1:
        return steps * alpha / (2 * sigma**2)
    return steps * log_a(q, sigma, alpha) / (alpha - 1)


def eps_cks(orders, rdps, delta):
    best = (math.inf, None)
    for a, r in zip(orders, rdps):
        if delta**2 + math.expm1(-r) >= 0:
            e = 0.0
        elif a > 1.01:
            e = r + math.log1p(-1 / a) - math.log(delta * a) / (a - 1)
        else:
            e = math.inf
        if e < best[0]:
            best = (e, a)
    return max(0.0, best[0]), best[1]


def eps_classic(orders, rdps, delta):
    return min((r - math.log(delta) / (a - 1), a) for a, r in zip(orders, rdps))


CASES = [
    # (name, q, sigma, steps, delta)
    ("mnist", 256 / 60000, 1.1, 14063, 1e-5),  # 60 epochs, ceil(60 * 60000 / 256)
    ("q 0.01", 0.01, 1.0, 1000, 1e-5),
    ("q 0.1", 0.1, 2.0, 100, 1e-6),
    ("q 0.05", 0.05, 0.8, 500, 1e-5),
    ("q 1", 1.0, 5.0, 10, 1e-5),
]

for name, q, sigma, steps, delta in CASES:
    rdps = [rdp(q, sigma, steps, a) for a in ORDERS]
    e, a = eps_cks(ORDERS, rdps, delta)
    ec, ac = eps_classic(ORDERS, rdps, delta)
    print(f"{name}: q={q!r} sigma={sigma} steps={steps} delta={delta}: eps={e:.10g} order={a} (classic conversion: eps={ec:.10g} order={ac})")
