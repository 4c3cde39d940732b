"""Means, t-intervals and paired differences over seeds, with no dependency beyond the standard library.

A proxy arm is run with a few seeds (3 to 5), so the interval of its mean is Student's t interval
`mean ± t(1 - α/2, n - 1) · s / √n` with `s` the sample standard deviation (n - 1 in the
denominator). Two arms are compared on the SAME seeds: the seed fixes initialisation and data
order, so the per-seed difference removes the variation both arms share, and its t interval is
the paired test. A claim is made only when that interval excludes zero; its sign, read with the
metric's direction (lower perplexity is better), says better or worse.

The t quantile is the inverse of Student's CDF, computed from the regularized incomplete beta
function (Lentz's continued fraction) and inverted by bisection: exact to ~1e-10, enough for any
number of seeds, and free of scipy (not a dependency of cpt).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no significant difference"


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile of Student's t with `df` > 0 degrees of freedom (bisection on t_cdf)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ValueError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True, slots=True)
class Interval:
    """Mean of `n` values with its two-sided t interval; `low`/`high` are None when n < 2."""

    n: int
    mean: float
    sd: Optional[float]
    half_width: Optional[float]
    confidence: float

    @property
    def low(self) -> Optional[float]:
        return None if self.half_width is None else self.mean - self.half_width

    @property
    def high(self) -> Optional[float]:
        return None if self.half_width is None else self.mean + self.half_width

    def to_json(self) -> dict:
        return {"n": self.n, "mean": self.mean, "sd": self.sd, "low": self.low, "high": self.high,
                "half_width": self.half_width, "confidence": self.confidence}


def mean_interval(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean and t interval of `values` (a single value has no interval: n - 1 = 0 degrees of freedom)."""
    n = len(values)
    if n == 0:
        raise ValueError("mean_interval of no values")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(n, mean, None, None, confidence)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    return Interval(n, mean, sd, t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n), confidence)


def verdict(diff: Interval, lower_is_better: bool) -> str:
    """better / worse / no significant difference for an (arm - baseline) interval."""
    if diff.low is None or diff.high is None or diff.low <= 0.0 <= diff.high:
        return NO_DIFFERENCE
    improved = diff.high < 0.0 if lower_is_better else diff.low > 0.0
    return BETTER if improved else WORSE


def paired_difference(arm: dict[int, float], baseline: dict[int, float], confidence: float = 0.95,
                      ) -> tuple[Interval, list[int]]:
    """t interval of (arm - baseline) over the seeds both have; the seeds used, sorted."""
    seeds = sorted(set(arm) & set(baseline))
    if not seeds:
        raise ValueError("no seed in common with the baseline")
    return mean_interval([arm[s] - baseline[s] for s in seeds], confidence), seeds


__all__ = ["BETTER", "Interval", "NO_DIFFERENCE", "WORSE", "betainc", "mean_interval", "paired_difference",
           "t_cdf", "t_quantile", "verdict"]
