"""Weights as a piecewise-linear function of consumed tokens.

`points: [[tokens, {stream: w}], ...]` with strictly increasing token counts, every point naming the
same streams. Each point's weights are normalised; between two points the shares are interpolated
linearly in consumed tokens, before the first point they are the first point's, after the last the
last's. If the points name every stream of the run the result is the whole mixture; if they name a
subset, the scheduled shares divide that subset's current total (the other streams keep theirs).
Exhausted streams get 0 and the others of the schedule are renormalised.

The controller acts at train start (so a resumed run is put back on the schedule) and in
`on_step_end` every `every_steps` steps, and returns an update only when some share differs from the
one in force by more than `tolerance` -- each update is a blender weight change, so a schedule
sampled at every step would otherwise fill the blender history with tiny moves.
"""
from __future__ import annotations

import bisect
from typing import Any, Mapping, Optional, Sequence

from cpt.mixture.base import MixtureController
from cpt.train.hooks import HookContext, MixtureUpdate


class ScheduleMixture(MixtureController):
    """Shares interpolated between `points` as training consumes tokens."""

    kind = "schedule"

    def __init__(self, *, points: Sequence[Sequence[Any]], every_steps: int = 1, tolerance: float = 1e-4,
                 name: Optional[str] = None) -> None:
        super().__init__(name)
        self.every_steps = self._count("every_steps", every_steps)
        self.tolerance = self._number("tolerance", tolerance, low=0.0, high=1.0)
        self.tokens, self.shares = self._parse_points(points)
        self.streams = tuple(self.shares[0])
        self.updates = 0

    def _parse_points(self, points: Any) -> tuple[list[int], list[dict[str, float]]]:
        if isinstance(points, (str, Mapping)) or not isinstance(points, (list, tuple)) or not points:
            raise self._err("points", f"must be a non-empty list of [tokens, {{stream: weight}}], got {points!r}")
        tokens, shares = [], []
        for i, point in enumerate(points):
            where = f"points[{i}]"
            if not isinstance(point, (list, tuple)) or len(point) != 2 or not isinstance(point[1], Mapping):
                raise self._err(where, f"must be [tokens, {{stream: weight}}], got {point!r}")
            t = point[0]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or t < 0 or t != int(t):
                raise self._err(f"{where}[0]", f"must be a whole number of tokens >= 0, got {t!r}")
            if tokens and int(t) <= tokens[-1]:
                raise self._err(f"{where}[0]", f"{int(t)} must exceed the previous point's {tokens[-1]}")
            w = {str(k): self._number(f"{where}[1].{k}", v, low=0.0) for k, v in point[1].items()}
            if not w or not sum(w.values()) > 0:
                raise self._err(f"{where}[1]", "must give some stream a weight > 0")
            if shares and set(w) != set(shares[0]):
                raise self._err(f"{where}[1]", f"names {sorted(w)} but points[0] names {sorted(shares[0])}")
            total = sum(w.values())
            tokens.append(int(t))
            shares.append({s: w[s] / total for s in (shares[0] if shares else w)})
        return tokens, shares

    def at(self, consumed_tokens: int) -> dict[str, float]:
        """The scheduled shares (summing to 1 over the scheduled streams) at `consumed_tokens`."""
        k = bisect.bisect_right(self.tokens, consumed_tokens)
        if k == 0:
            return dict(self.shares[0])
        if k == len(self.tokens):
            return dict(self.shares[-1])
        t0, t1 = self.tokens[k - 1], self.tokens[k]
        u = (consumed_tokens - t0) / (t1 - t0)
        a, b = self.shares[k - 1], self.shares[k]
        return {s: (1.0 - u) * a[s] + u * b[s] for s in self.streams}

    def _apply(self, ctx: HookContext, why: str) -> Optional[MixtureUpdate]:
        before = ctx.weights()
        exhausted = ctx.exhausted()
        target = self.at(ctx.consumed_tokens)
        live = {s: (0.0 if s in exhausted else w) for s, w in target.items()}
        live_total = sum(live.values())
        if not live_total > 0:
            return None  # every scheduled stream with a share ran dry: nothing left to schedule
        whole = set(self.streams) >= set(ctx.stream_names)
        total = 1.0 if whole else sum(before[s] for s in self.streams)
        shares = {s: total * w / live_total for s, w in live.items()}
        if max(abs(shares[s] - before[s]) for s in shares) <= self.tolerance:
            return None
        self.updates += 1
        figures = {"update": self.updates, "schedule": target, "exhausted": sorted(set(self.streams) & exhausted),
                   "scheduled_total": total}
        return self._finish(ctx, before, shares, figures, why, tolerance=0.0)

    def on_train_start(self, ctx: HookContext) -> Optional[MixtureUpdate]:
        self._check_known(ctx, self.streams, "points")
        return self._apply(ctx, f"schedule at {ctx.consumed_tokens} tokens (train start)")

    def on_step_end(self, ctx: HookContext, step: int, metrics: Mapping[str, Any]) -> Optional[MixtureUpdate]:
        if step % self.every_steps:
            return None
        return self._apply(ctx, f"schedule at {ctx.consumed_tokens} tokens")

    def state_dict(self) -> dict[str, Any]:
        return self._state(self.streams, updates=self.updates)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, self.streams, ("updates",))
        self.updates = int(state["updates"])
