"""The topic-based data mixture of Llama-3-SynE: shift share towards topics whose validation PPL rises.

At an update (an `on_eval` call; see `every`), for each controlled stream i that is not exhausted:

    p_i(t)     validation PPL of the stream's held-out documents (eval_metrics.streams[i]["ppl"])
    dp_i       p_i(t) - p_i(t-1), against the PPL recorded at the previous update; the first eval
               only records p_i. Option `delta: relative` uses (p_i(t) - p_i(t-1)) / p_i(t-1) instead:
               a change measured against the stream's own level, so a hard stream (high PPL, large
               absolute moves) does not dominate the normalisation below ("absolute", the paper's
               rule, is the default)
    d_i        dp normalised within the stream's group (option `normalize`):
                 "max_abs"  dp_i / max_j |dp_j|
                 "sum_abs"  dp_i / sum_j |dp_j|
                 "zscore"   (dp_i - mean dp) / std dp   (population std)
               all zero when the denominator is 0 (all dp equal)
    f_i        max(min_factor, 1 + alpha * d_i * w_i), w_i the stream's `priority` (default 1)
    r_i(t)     T_g * r_i(t-1) * f_i / sum_{j in g} r_j(t-1) * f_j

where r(t-1) are the shares in force (ctx.weights()) and T_g is the current total share of the live
streams of group g, so every group keeps its total: `groups: [[zh_*], [en_*]]` holds ZH:EN = 2:8
while the topics inside each language move. A topic whose PPL rises (dp > 0) gets f > 1, a larger
share; one whose PPL falls gets a smaller one.

Guards, applied after r_i(t) is proposed, all on shares of the whole mixture:

1. max_change: the move is limited to r_i(t-1) * (1 - max_change) ... r_i(t-1) * (1 + max_change);
2. min_share / max_share: that interval is clipped into [min_share_i, max_share_i], so the share
   bounds win where the two disagree (a stream below min_share jumps to it);
3. the group total is restored: the final shares are clip(lam * r_i(t), low_i, high_i) with the one
   lam that makes them sum to T_g -- the fixed point of "clip, then renormalise the unclipped
   shares within the group, repeat", found exactly (cpt.mixture.shares.fit_to_bounds). So every
   bound holds after renormalisation;
4. if those intervals cannot hold T_g (a stream's min_share needs more than the others' max_change
   lets them give), max_change is dropped for that update and group (logged under
   `max_change_relaxed_groups`) and step 3 is redone with [min_share_i, max_share_i] alone; if even
   those cannot hold T_g (e.g. n * min_share > T_g after streams ran dry), the bounds are scaled to
   the total and the group is logged under `infeasible_groups` -- a run is not stopped for it.

Recipe edits (cpt.train.recipe_edit): the controller follows a resumed recipe whose streams
changed. Without the `streams` option it controls every validated stream of the run, re-resolved
at each eval; with it, the option of the resumed recipe wins over the checkpoint's. A stream that
left keeps no state (its reference PPL is dropped); a stream that joined has the PPL of its first
eval as reference, so its dp is 0 at that update (its share moves only as its group is
renormalised) and it moves like the others from the next update on. The update that follows an
edit logs `streams_changed` ({dropped, added}).

Exhausted streams (ctx.exhausted()) get share 0 and are left out of every sum and normalisation.
With `every: k`, updates happen at evals 1 + k, 1 + 2k, ... and dp is measured over the k evals
since the previous update. Every quantity of every update is logged as one "mixture" record.
"""
from __future__ import annotations

import math
from typing import Any, Mapping, Optional, Sequence

from cpt.mixture.base import ValidatedStreamsController
from cpt.mixture.shares import fit_to_bounds
from cpt.train.hooks import EvalMetrics, HookContext, MixtureUpdate

NORMALIZATIONS = ("max_abs", "sum_abs", "zscore")
DELTAS = ("absolute", "relative")


def normalize_deltas(deltas: Sequence[float], how: str) -> list[float]:
    """d_i from dp_i: by max |dp|, by sum |dp|, or z-score; all zero when the denominator is 0."""
    n = len(deltas)
    if n == 0:
        return []
    if how == "max_abs":
        scale = max(abs(d) for d in deltas)
        return [d / scale if scale > 0 else 0.0 for d in deltas]
    if how == "sum_abs":
        scale = sum(abs(d) for d in deltas)
        return [d / scale if scale > 0 else 0.0 for d in deltas]
    if how == "zscore":
        mean = sum(deltas) / n
        std = math.sqrt(sum((d - mean) ** 2 for d in deltas) / n)
        # relative test: equal deltas can differ in the last bits after subtraction
        if std <= 1e-12 * max(1.0, max(abs(d) for d in deltas)):
            return [0.0] * n
        return [(d - mean) / std for d in deltas]
    raise ValueError(f"unknown normalisation {how!r}; choose one of {list(NORMALIZATIONS)}")


class TopicPPLMixture(ValidatedStreamsController):
    """The paper's controller (module docstring): options are the recipe's `hooks[i].options`."""

    kind = "topic_ppl"

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        normalize: str = "max_abs",
        priority: Optional[Mapping[str, float]] = None,
        streams: Optional[Sequence[str]] = None,
        groups: Optional[Sequence[Sequence[str]]] = None,
        min_share: float | Mapping[str, float] = 0.0,
        max_share: float | Mapping[str, float] = 1.0,
        max_change: Optional[float] = None,
        min_factor: float = 0.01,
        every: int = 1,
        delta: str = "absolute",
        name: Optional[str] = None,
    ) -> None:
        super().__init__(name)
        self.alpha = self._number("alpha", alpha, low=0.0)
        self.normalize = self._choice("normalize", normalize, NORMALIZATIONS)
        self.delta = self._choice("delta", delta, DELTAS)
        self.min_factor = self._number("min_factor", min_factor, low=0.0, high=1.0, low_open=True)
        self.max_change = None if max_change is None else self._number("max_change", max_change, low=0.0, low_open=True)
        self.every = self._count("every", every)
        self.min_share, self._min_per = self._per_stream("min_share", min_share, 0.0, low=0.0, high=1.0)
        self.max_share, self._max_per = self._per_stream("max_share", max_share, 1.0, low=0.0, high=1.0)
        if priority is not None and not isinstance(priority, Mapping):
            raise self._err("priority", f"must be a mapping {{stream: weight}}, got {priority!r}")
        self.priority = {k: self._number(f"priority.{k}", v, low=0.0) for k, v in (priority or {}).items()}
        self._streams_option = None if streams is None else self._names("streams", streams)
        self._groups_option = self._parse_groups(groups)
        if self._streams_option is None and self._groups_option is not None:
            self._streams_option = tuple(s for g in self._groups_option for s in g)
        if self._streams_option is not None:
            self._check_named(self._streams_option)
        # state
        self.streams: Optional[tuple[str, ...]] = self._streams_option
        self.evals = 0
        self.updates = 0
        self.reference_ppl: dict[str, float] = {}
        self._changed: Optional[dict[str, list[str]]] = None  # streams a recipe edit dropped/added, to log

    # ---- options ---------------------------------------------------------------------------------

    def _parse_groups(self, groups: Any) -> Optional[tuple[tuple[str, ...], ...]]:
        if groups is None:
            return None
        if isinstance(groups, str) or not isinstance(groups, (list, tuple)) or not groups:
            raise self._err("groups", f"must be a non-empty list of lists of stream names, got {groups!r}")
        parsed = tuple(self._names(f"groups[{i}]", g) for i, g in enumerate(groups))
        flat = [s for g in parsed for s in g]
        twice = sorted({s for s in flat if flat.count(s) > 1})
        if twice:
            raise self._err("groups", f"streams {twice} are in more than one group")
        if self._streams_option is not None and set(flat) != set(self._streams_option):
            raise self._err(
                "groups",
                f"must split option 'streams' exactly: missing {sorted(set(self._streams_option) - set(flat))}, "
                f"extra {sorted(set(flat) - set(self._streams_option))}",
            )
        return parsed

    def _check_validated(self, streams: Sequence[str]) -> None:
        self._check_named(streams)

    def _check_named(self, streams: Sequence[str]) -> None:
        """priority / min_share / max_share may only name controlled streams; bounds must be ordered."""
        for option, names in (("priority", self.priority), ("min_share", self._min_per), ("max_share", self._max_per)):
            extra = sorted(set(names) - set(streams))
            if extra:
                raise self._err(option, f"names {extra}, which this controller does not control "
                                        f"(streams: {list(streams)})")
        for s in streams:
            if self._bound(s, self._min_per, self.min_share) > self._bound(s, self._max_per, self.max_share):
                raise self._err("min_share", f"for stream {s!r} exceeds its max_share")

    @staticmethod
    def _bound(stream: str, per: Mapping[str, float], default: float) -> float:
        return per.get(stream, default)

    def _groups(self) -> tuple[tuple[str, ...], ...]:
        return self._groups_option if self._groups_option is not None else (tuple(self.streams or ()),)

    # ---- hook ------------------------------------------------------------------------------------

    def on_eval(self, ctx: HookContext, step: int, eval_metrics: EvalMetrics) -> Optional[MixtureUpdate]:
        streams, live, ppl = self._live_metric(ctx, eval_metrics, "ppl")
        who = f"hook {self.name!r}"
        if any(p <= 0 for p in ppl.values()):
            raise ValueError(f"{who}: validation PPL must be > 0 at step {step}, got {ppl}")
        self.evals += 1
        before = ctx.weights()
        if self.evals == 1:
            self.reference_ppl = dict(ppl)
            return self._finish(ctx, before, None, {"eval": self.evals, "ppl": ppl}, "first eval: PPL recorded")
        if (self.evals - 1) % self.every:
            return None  # not an update eval; dp will span the evals since the last update
        new, figures = self._update(before, ppl, live, streams)
        self.reference_ppl.update(ppl)
        self.updates += 1
        figures = {"eval": self.evals, "update": self.updates, **figures}
        if self._changed:  # the first update after a recipe edit says what the controller followed
            figures["streams_changed"], self._changed = self._changed, None
        return self._finish(ctx, before, new, figures, f"update {self.updates} at eval {self.evals}")

    def _update(self, before: Mapping[str, float], ppl: Mapping[str, float], live: Sequence[str],
                streams: Sequence[str]) -> tuple[dict[str, float], dict[str, Any]]:
        """New shares of the controlled streams and every quantity that produced them."""
        live_set = set(live)
        new = {s: 0.0 for s in streams if s not in live_set}  # exhausted streams stay at 0
        prev = {s: self.reference_ppl.get(s, ppl[s]) for s in live}
        delta_ppl = {s: ppl[s] - prev[s] for s in live}
        if self.delta == "relative":
            delta_ppl = {s: delta_ppl[s] / prev[s] for s in live}  # PPLs are > 0 (checked in on_eval)
        delta, factor, proposed, low, high = {}, {}, {}, {}, {}
        group_totals, relaxed, infeasible = [], [], []
        for gi, group in enumerate(self._groups()):
            members = [s for s in group if s in live_set]
            total = sum(before[s] for s in members)
            group_totals.append(total)
            if not members:
                continue
            d = normalize_deltas([delta_ppl[s] for s in members], self.normalize)
            for s, di in zip(members, d):
                delta[s] = di
                factor[s] = max(self.min_factor, 1.0 + self.alpha * di * self.priority.get(s, 1.0))
            mass = sum(before[s] * factor[s] for s in members)
            for s in members:
                proposed[s] = total * before[s] * factor[s] / mass if mass > 0 else before[s]
                low[s], high[s] = self._interval(s, before[s])
            raw = [proposed[s] for s in members]
            shares, ok = fit_to_bounds(raw, [low[s] for s in members], [high[s] for s in members], total)
            if not ok and self.max_change is not None:  # the share bounds need more room than max_change allows
                relaxed.append(gi)
                for s in members:
                    low[s], high[s] = self._interval(s, before[s], with_max_change=False)
                shares, ok = fit_to_bounds(raw, [low[s] for s in members], [high[s] for s in members], total)
            if not ok:
                infeasible.append(gi)
            new.update(zip(members, shares))
        figures = {
            "normalize": self.normalize, "alpha": self.alpha, "delta_kind": self.delta,
            "ppl": dict(ppl), "ppl_prev": prev, "delta_ppl": delta_ppl, "delta": delta,
            "priority": {s: self.priority.get(s, 1.0) for s in live}, "factor": factor,
            "proposed": proposed, "share_low": low, "share_high": high,
            "at_bound": sorted(s for s in live if new[s] != proposed[s] and (new[s] in (low[s], high[s]))),
            "group_totals": group_totals, "max_change_relaxed_groups": relaxed, "infeasible_groups": infeasible,
            "exhausted": sorted(set(streams) - live_set),
        }
        return new, figures

    def _interval(self, stream: str, old: float, with_max_change: bool = True) -> tuple[float, float]:
        """[low, high] for one share: the max_change interval clipped into [min_share, max_share]."""
        lo_share = self._bound(stream, self._min_per, self.min_share)
        hi_share = self._bound(stream, self._max_per, self.max_share)
        if self.max_change is None or not with_max_change:
            return lo_share, hi_share
        a, b = old * max(0.0, 1.0 - self.max_change), old * (1.0 + self.max_change)
        return min(max(a, lo_share), hi_share), min(max(b, lo_share), hi_share)

    # ---- state -----------------------------------------------------------------------------------

    def _follow(self, old: Sequence[str], new: Sequence[str]) -> None:
        """Carry the state over to the streams of an edited recipe (see the module docstring)."""
        self.reference_ppl = {s: p for s, p in self.reference_ppl.items() if s in new}
        self._changed = {"dropped": [s for s in old if s not in new], "added": [s for s in new if s not in old]}

    def state_dict(self) -> dict[str, Any]:
        return self._state(self.streams, evals=self.evals, updates=self.updates,
                           reference_ppl=dict(self.reference_ppl))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, None, ("evals", "updates", "reference_ppl"))
        streams = None if state["streams"] is None else tuple(state["streams"])
        ref = {str(k): float(v) for k, v in dict(state["reference_ppl"]).items()}
        if streams is not None and not set(ref) <= set(streams):
            raise ValueError(f"{type(self).__name__} {self.name!r}: refusing state: reference_ppl names "
                             f"{sorted(set(ref) - set(streams))} outside its streams")
        self.streams, self.reference_ppl = streams, ref
        self.evals, self.updates = int(state["evals"]), int(state["updates"])
        option = self._streams_option
        if option is not None and streams is not None and set(option) != set(streams):
            self._follow(streams, option)  # the resumed recipe's option wins
        if option is not None:
            self.streams = option
