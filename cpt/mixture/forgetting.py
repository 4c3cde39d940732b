"""A forgetting guard: raise the share of original-capability data when its validation PPL rises.

Continual pre-training on new data (Chinese, synthetic QA) erodes what the base model could do; the
validation PPL of the `watch` streams (e.g. the English ones) measures that. At each eval the guard
computes their token-weighted PPL,

    ppl = exp( sum_i tokens_i * loss_i / sum_i tokens_i )      over the watched streams,

the PPL of their held-out documents taken together. The first eval the guard sees is the baseline;
it is kept in the hook's state, so a resumed run compares against the start of the run, not of the
resume. When ppl > baseline * (1 + tolerance), the guard multiplies the combined share B of the
`boost` streams (default: the watched ones) by `factor`, capped at `max_share` (a cap on B, the
boost streams' combined share of the whole mixture); the boost streams keep their proportions among
themselves and every other live stream gives up share in proportion to its own. It triggers again
at every eval that is still above the limit, so `max_share` is what bounds it. Exhausted streams
stay at 0. Every eval is logged as one "mixture" record (ppl, baseline, limit, triggered).
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from cpt.mixture.base import MixtureController, stream_metric
from cpt.train.hooks import EvalMetrics, HookContext, MixtureUpdate


class ForgettingGuard(MixtureController):
    """Boosts `boost` when the token-weighted validation PPL of `watch` exceeds its start by `tolerance`."""

    kind = "forgetting_guard"

    def __init__(
        self,
        *,
        watch: Sequence[str],
        boost: Optional[Sequence[str]] = None,
        tolerance: float = 0.03,
        factor: float = 1.1,
        max_share: float = 0.9,
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name)
        self.watch = self._names("watch", watch)
        self.boost = self.watch if boost is None else self._names("boost", boost)
        self.tolerance = self._number("tolerance", tolerance, low=0.0)
        self.factor = self._number("factor", factor, low=1.0, low_open=True)
        self.max_share = self._number("max_share", max_share, low=0.0, high=1.0, low_open=True)
        self.streams = tuple(dict.fromkeys(self.watch + self.boost))
        # state
        self.baseline_ppl: Optional[float] = None
        self.evals = 0
        self.triggers = 0

    def on_train_start(self, ctx: HookContext) -> Optional[MixtureUpdate]:
        self._check_known(ctx, self.watch, "watch")
        self._check_known(ctx, self.boost, "boost")
        if set(self.boost) >= set(ctx.stream_names):
            raise self._err("boost", "names every stream of the run: there is nothing to take share from")
        return None

    def watched_ppl(self, eval_metrics: EvalMetrics) -> float:
        """Token-weighted PPL of the watched streams' held-out documents taken together."""
        who = f"hook {self.name!r}"
        tokens = {s: stream_metric(eval_metrics, s, "tokens", who) for s in self.watch}
        if not sum(tokens.values()) > 0:
            raise ValueError(f"{who}: the watched streams {list(self.watch)} have no validation tokens "
                             f"at step {eval_metrics.step}")
        loss = {}
        for s in self.watch:
            figures = eval_metrics.streams[s]
            loss[s] = stream_metric(eval_metrics, s, "loss", who) if "loss" in figures else math.log(
                stream_metric(eval_metrics, s, "ppl", who))
        return math.exp(sum(tokens[s] * loss[s] for s in self.watch) / sum(tokens.values()))

    def on_eval(self, ctx: HookContext, step: int, eval_metrics: EvalMetrics) -> Optional[MixtureUpdate]:
        ppl = self.watched_ppl(eval_metrics)
        self.evals += 1
        before = ctx.weights()
        if self.baseline_ppl is None:
            self.baseline_ppl = ppl
            return self._finish(ctx, before, None, {"eval": self.evals, "ppl": ppl, "baseline_ppl": ppl},
                                "baseline PPL recorded")
        limit = self.baseline_ppl * (1.0 + self.tolerance)
        figures: dict[str, Any] = {"eval": self.evals, "ppl": ppl, "baseline_ppl": self.baseline_ppl, "limit": limit,
                                   "rise": ppl / self.baseline_ppl - 1.0, "triggered": ppl > limit,
                                   "triggers": self.triggers}
        if ppl <= limit:
            return self._finish(ctx, before, None, figures, "watched PPL within tolerance")
        exhausted = ctx.exhausted()
        boost = [s for s in self.boost if s not in exhausted]
        others = [s for s in ctx.stream_names if s not in self.boost and s not in exhausted]
        b, o = sum(before[s] for s in boost), sum(before[s] for s in others)
        new_b = min(self.max_share, b * self.factor, b + o)
        figures.update(boost_share_before=b, boost_share_after=new_b)
        if b <= 0 or o <= 0 or new_b <= b:
            why = ("the boost streams have share 0" if b <= 0 else "no other stream has share left" if o <= 0
                   else f"the boost streams are at max_share={self.max_share}")
            return self._finish(ctx, before, None, figures, f"watched PPL above limit but {why}")
        self.triggers += 1
        figures["triggers"] = self.triggers
        shares = {s: before[s] * new_b / b for s in boost}
        shares.update({s: before[s] * (b + o - new_b) / o for s in others})
        shares.update({s: 0.0 for s in self.streams if s in exhausted})
        return self._finish(ctx, before, shares, figures,
                            f"watched PPL {ppl:.4g} > {limit:.4g} (baseline {self.baseline_ppl:.4g})")

    def state_dict(self) -> dict[str, Any]:
        return self._state(self.streams, baseline_ppl=self.baseline_ppl, evals=self.evals, triggers=self.triggers)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, self.streams, ("baseline_ppl", "evals", "triggers"))
        base = state["baseline_ppl"]
        if base is not None and not (isinstance(base, (int, float)) and math.isfinite(base) and base > 0):
            raise ValueError(f"{type(self).__name__} {self.name!r}: refusing state: baseline_ppl must be "
                             f"a PPL > 0, got {base!r}")
        self.baseline_ppl = None if base is None else float(base)
        self.evals, self.triggers = int(state["evals"]), int(state["triggers"])
