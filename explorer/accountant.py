"""The privacy accountant of DP-SGD: Rényi DP of the sampled Gaussian mechanism, composed, then (ε, δ).

One DP-SGD step is the *sampled Gaussian mechanism*: each example joins the batch independently
with probability ``q`` (Poisson sampling), the clipped gradients (sensitivity C) are summed and
Gaussian noise of standard deviation ``σ·C`` is added. Its Rényi differential privacy at order α
(Mironov 2017, "Rényi Differential Privacy") is computed exactly as in Mironov, Talwar & Zhang
2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism":

    integer α:     A_α = Σ_{k=0..α} C(α,k) (1-q)^(α-k) q^k exp((k²-k) / (2σ²))
    fractional α:  the two-sided series of their Section 3.3 (with erfc terms around z₀)
    RDP(α) = log(A_α) / (α - 1)

RDP composes by addition, so ``steps`` steps cost ``steps · RDP(α)`` at every order. The
conversion to (ε, δ) is the improved one of Balle et al. 2020, "Hypothesis Testing
Interpretations and Rényi Differential Privacy" (Theorem 21), the one Opacus's ``RDPAccountant``
and Google's ``dp_accounting`` use:

    ε = min_α  RDP(α) + log((α-1)/α) - (log δ + log α) / (α - 1)

(the classic conversion of Mironov 2017 is ``RDP(α) + log(1/δ)/(α-1)``, a little looser; it is
``classic_epsilon`` here for comparison). Orders are Opacus's default grid. Everything is in log
space in pure Python (no SciPy): ``log_erfc`` switches to the asymptotic series where ``erfc``
would underflow.

The guarantee is about Poisson sampling. A loop that draws fixed-size batches without
replacement is *not* covered by this analysis (it would need the sampling-without-replacement
bound of Wang, Balle & Kasiviswanathan 2019); ``explorer.privacy`` therefore samples by Poisson.
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

ORDERS = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))  # Opacus's default α grid


class AccountantError(ValueError):
    """Settings the accountant cannot account for; the message says which and why."""


def _log_add(a: float, b: float) -> float:
    """log(exp(a) + exp(b))."""
    lo, hi = min(a, b), max(a, b)
    if lo == -math.inf:
        return hi
    return hi + math.log1p(math.exp(lo - hi))


def _log_sub(a: float, b: float) -> float:
    """log(exp(a) - exp(b)), a >= b."""
    if b == -math.inf:
        return a
    if a == b:
        return -math.inf
    if a < b:
        raise AccountantError("log of a negative number in the RDP series (numerical trouble)")
    return a + math.log(-math.expm1(b - a))


def log_erfc(x: float) -> float:
    """log(erfc(x)), accurate where erfc(x) itself underflows (x beyond ~26)."""
    if x < 25.0:
        return math.log(math.erfc(x))
    # erfc(x) = exp(-x²)/(x√π) · (1 - 1/(2x²) + 3/(4x⁴) - 15/(8x⁶) + 105/(16x⁸))
    r = 1.0 / (x * x)
    series = 1 - r / 2 + 3 * r * r / 4 - 15 * r ** 3 / 8 + 105 * r ** 4 / 16
    return -x * x - math.log(x) - 0.5 * math.log(math.pi) + math.log(series)


def _log_a_int(q: float, sigma: float, alpha: int) -> float:
    log_a = -math.inf
    for k in range(alpha + 1):
        log_coef = math.lgamma(alpha + 1) - math.lgamma(k + 1) - math.lgamma(alpha - k + 1)
        term = log_coef + k * math.log(q) + (alpha - k) * math.log1p(-q) + (k * k - k) / (2 * sigma ** 2)
        log_a = _log_add(log_a, term)
    return log_a


def _log_a_frac(q: float, sigma: float, alpha: float) -> float:
    log_a0, log_a1 = -math.inf, -math.inf
    z0 = sigma ** 2 * math.log(1 / q - 1) + 0.5
    coef = 1.0  # the generalised binomial C(α, i), built term by term (it changes sign for i > α)
    i = 0
    while True:
        if i > 0:
            coef *= (alpha - i + 1) / i
        if coef == 0:
            break
        log_coef = math.log(abs(coef))
        j = alpha - i
        log_t0 = log_coef + i * math.log(q) + j * math.log1p(-q)
        log_t1 = log_coef + j * math.log(q) + i * math.log1p(-q)
        log_e0 = math.log(0.5) + log_erfc((i - z0) / (math.sqrt(2) * sigma))
        log_e1 = math.log(0.5) + log_erfc((z0 - j) / (math.sqrt(2) * sigma))
        log_s0 = log_t0 + (i * i - i) / (2 * sigma ** 2) + log_e0
        log_s1 = log_t1 + (j * j - j) / (2 * sigma ** 2) + log_e1
        if coef > 0:
            log_a0, log_a1 = _log_add(log_a0, log_s0), _log_add(log_a1, log_s1)
        else:
            log_a0, log_a1 = _log_sub(log_a0, log_s0), _log_sub(log_a1, log_s1)
        i += 1
        if max(log_s0, log_s1) < -30:
            break
    return _log_add(log_a0, log_a1)


def rdp_sampled_gaussian(q: float, sigma: float, alpha: float) -> float:
    """RDP at order ``alpha`` of one step of the sampled Gaussian mechanism (sampling rate ``q``,
    noise multiplier ``sigma``)."""
    _check(q, sigma)
    if q == 0:
        return 0.0
    if q == 1.0:
        return alpha / (2 * sigma ** 2)  # the plain Gaussian mechanism
    if float(alpha).is_integer():
        return _log_a_int(q, sigma, int(alpha)) / (alpha - 1)
    return _log_a_frac(q, sigma, alpha) / (alpha - 1)


def compute_rdp(q: float, sigma: float, steps: int, orders: Sequence[float] = ORDERS) -> list[float]:
    """RDP of ``steps`` composed steps at each order (composition adds RDP)."""
    if not isinstance(steps, int) or steps < 0:
        raise AccountantError(f"steps = {steps!r}: the number of steps must be a whole number, 0 or more")
    return [steps * rdp_sampled_gaussian(q, sigma, a) for a in orders]


def rdp_to_epsilon(orders: Iterable[float], rdp: Iterable[float], delta: float) -> tuple[float, float]:
    """(ε, best α) from RDP values, by Balle et al. 2020's conversion (as Opacus / dp_accounting)."""
    _check_delta(delta)
    best = (math.inf, math.nan)
    for a, r in zip(orders, rdp):
        eps = r + math.log((a - 1) / a) - (math.log(delta) + math.log(a)) / (a - 1)
        if eps < best[0]:
            best = (eps, a)
    return max(best[0], 0.0), best[1]


def classic_epsilon(orders: Iterable[float], rdp: Iterable[float], delta: float) -> float:
    """(ε) by Mironov 2017's original conversion, ``min_α RDP(α) + log(1/δ)/(α-1)`` (looser)."""
    _check_delta(delta)
    return min(r + math.log(1 / delta) / (a - 1) for a, r in zip(orders, rdp))


def epsilon(q: float, sigma: float, steps: int, delta: float, orders: Sequence[float] = ORDERS) -> float:
    """ε of DP-SGD after ``steps`` steps at Poisson sampling rate ``q`` and noise multiplier ``sigma``."""
    if sigma == 0:
        return math.inf
    return rdp_to_epsilon(orders, compute_rdp(q, sigma, steps, orders), delta)[0]


def _check(q: float, sigma: float) -> None:
    if not 0 <= q <= 1:
        raise AccountantError(f"sampling rate q = {q}: a probability, from 0 to 1 (batch size / examples)")
    if not sigma > 0:
        raise AccountantError(f"noise multiplier σ = {sigma}: must be above 0 (σ = 0 gives no privacy at all)")


def _check_delta(delta: float) -> None:
    if not 0 < delta < 1:
        raise AccountantError(f"δ = {delta}: must lie strictly between 0 and 1 (usually below 1 / examples)")
