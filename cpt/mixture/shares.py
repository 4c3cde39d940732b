"""Fitting proposed shares into per-stream bounds while keeping their total.

Clipping shares to [low, high] and renormalising the others can push those over a bound in turn;
repeating "clip, renormalise the unclipped" until nothing moves ends at shares of the form

    x_i = clip(lam * r_i, low_i, high_i)   with the one lam >= 0 for which  sum_i x_i = total.

`fit_to_bounds` finds that lam exactly instead of iterating: g(lam) = sum_i clip(lam * r_i, ...) is
continuous, non-decreasing and linear between the breakpoints low_i / r_i and high_i / r_i, so a
binary search over the sorted breakpoints and one linear solve give it in O(n log n).
"""
from __future__ import annotations

from typing import Sequence


def _clip(x: float, low: float, high: float) -> float:
    return low if x < low else high if x > high else x


def _g(lam: float, raw: Sequence[float], low: Sequence[float], high: Sequence[float]) -> float:
    return sum(_clip(lam * r, lo, hi) for r, lo, hi in zip(raw, low, high))


def fit_to_bounds(raw: Sequence[float], low: Sequence[float], high: Sequence[float],
                  total: float) -> tuple[list[float], bool]:
    """Shares proportional to `raw` where the bounds allow, each in [low_i, high_i], summing to `total`.

    Returns (shares, feasible). When the bounds cannot hold the total (sum(low) > total or
    sum(high) < total) the result is `low` (or `high`) scaled to the total and feasible is False:
    the caller logs it; a bound that cannot be met is broken by the smallest common factor rather
    than failing a run. Streams with raw share 0 (or below 1e-15 of the largest) stay at their lower
    bound unless the others cannot take the total, in which case they share the rest in proportion
    to their room (high - low).
    """
    n = len(raw)
    if not (len(low) == len(high) == n):
        raise ValueError(f"fit_to_bounds: {n} shares but {len(low)} lower and {len(high)} upper bounds")
    if any(lo > hi for lo, hi in zip(low, high)):
        raise ValueError(f"fit_to_bounds: a lower bound exceeds its upper bound: {list(low)} > {list(high)}")
    sum_low, sum_high = sum(low), sum(high)
    if n == 0:
        return [], total == 0.0
    if sum_low > total:
        return [total * (lo / sum_low) for lo in low], False  # lo/sum first: no denormal underflow
    if sum_high < total:
        return ([total * (hi / sum_high) for hi in high] if sum_high > 0 else [total / n] * n), False
    # Scale raw to max 1 and treat relative shares below 1e-15 as 0, so every breakpoint is finite.
    top = max(raw)
    raw = [r / top if top > 0 and r / top >= 1e-15 else 0.0 for r in raw]
    positive = [i for i in range(n) if raw[i] > 0]
    reach = sum(high[i] for i in positive) + sum(low[i] for i in range(n) if raw[i] <= 0)
    if reach < total:  # the positive streams all sit at their upper bound; the zero ones take the rest
        rest = total - reach
        room = sum(high[i] - low[i] for i in range(n) if raw[i] <= 0)
        return [high[i] if raw[i] > 0 else low[i] + rest * ((high[i] - low[i]) / room) for i in range(n)], True
    points = sorted({b / raw[i] for i in positive for b in (low[i], high[i])} | {0.0})
    lo_k, hi_k = 0, len(points) - 1  # g(points[-1]) = reach >= total
    while lo_k < hi_k:  # first breakpoint where g reaches the total
        mid = (lo_k + hi_k) // 2
        if _g(points[mid], raw, low, high) < total:
            lo_k = mid + 1
        else:
            hi_k = mid
    k = lo_k
    if k == 0:
        lam = points[0]
    else:
        a, b = points[k - 1], points[k]
        ga, gb = _g(a, raw, low, high), _g(b, raw, low, high)
        lam = b if gb == ga else a + (total - ga) * (b - a) / (gb - ga)
    return [_clip(lam * r, lo, hi) for r, lo, hi in zip(raw, low, high)], True
