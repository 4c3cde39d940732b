"""What every mixture controller shares: option checks, versioned state, one "mixture" log record.

A controller reads the shares in force from `ctx.weights()` at every decision instead of keeping its
own copy, so it composes with the other hooks of the run and a resumed run starts from exactly the
weights in the checkpoint (the blender's state). What it does keep -- reference PPLs, reward
estimates, counters -- is plain JSON-able Python in `state_dict()`, stamped with a version, its kind
and its streams, and refused on load when any of those differ (STYLE rule 5).
"""
from __future__ import annotations

import math
from typing import Any, ClassVar, Iterable, Mapping, Optional, Sequence

from cpt.train.hooks import DataHook, EvalMetrics, HookContext, MixtureUpdate, merge_update

STATE_VERSION = 1
# Shares closer than this are the same share: no update is returned for a smaller move.
SAME_SHARE = 1e-12


class MixtureController(DataHook):
    """Base of the controllers in cpt.mixture: names, state header checks and the mixture log record."""

    kind: ClassVar[str] = ""

    def __init__(self, name: Optional[str]) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"{type(self).__name__} option 'name': must be a non-empty string, got {name!r}")
        self.name = name or self.kind

    # ---- options ---------------------------------------------------------------------------------

    def _err(self, option: str, message: str) -> ValueError:
        return ValueError(f"{type(self).__name__} option {option!r}: {message}")

    def _number(self, option: str, value: Any, *, low: float = -math.inf, high: float = math.inf,
                low_open: bool = False) -> float:
        """A finite real in [low, high] (or (low, high] with low_open)."""
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self._err(option, f"must be a finite number, got {value!r}")
        value = float(value)
        if value < low or (low_open and value == low) or value > high:
            lo = "(" if low_open else "["
            raise self._err(option, f"must be in {lo}{low}, {high}], got {value}")
        return value

    def _count(self, option: str, value: Any, low: int = 1) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise self._err(option, f"must be an integer >= {low}, got {value!r}")
        return value

    def _names(self, option: str, value: Any) -> tuple[str, ...]:
        """A non-empty list of distinct stream names."""
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            raise self._err(option, f"must be a non-empty list of stream names, got {value!r}")
        if not all(isinstance(v, str) and v for v in value):
            raise self._err(option, f"stream names must be non-empty strings, got {list(value)}")
        dup = sorted({v for v in value if list(value).count(v) > 1})
        if dup:
            raise self._err(option, f"names {dup} more than once")
        return tuple(value)

    def _choice(self, option: str, value: Any, choices: Sequence[str]) -> str:
        if value not in choices:
            raise self._err(option, f"must be one of {list(choices)}, got {value!r}")
        return value

    def _per_stream(self, option: str, value: Any, default: float, *, low: float,
                    high: float) -> tuple[float, dict[str, float]]:
        """A number for every stream, or {stream: number} for some (the others get `default`)."""
        if isinstance(value, Mapping):
            per = {}
            for k, v in value.items():
                if not isinstance(k, str) or not k:
                    raise self._err(option, f"keys must be stream names, got {k!r}")
                per[k] = self._number(f"{option}.{k}", v, low=low, high=high)
            return default, per
        return self._number(option, value, low=low, high=high), {}

    # ---- streams ---------------------------------------------------------------------------------

    def _check_known(self, ctx: HookContext, names: Iterable[str], option: str) -> None:
        unknown = sorted(set(names) - set(ctx.stream_names))
        if unknown:
            raise self._err(option, f"names streams {unknown} that this run does not have "
                                    f"(streams: {list(ctx.stream_names)})")

    # ---- state -----------------------------------------------------------------------------------

    def _state(self, streams: Optional[Sequence[str]], **fields: Any) -> dict[str, Any]:
        return {"version": STATE_VERSION, "kind": self.kind,
                "streams": list(streams) if streams is not None else None, **fields}

    def _check_state(self, state: Mapping[str, Any], streams: Optional[Sequence[str]], fields: Sequence[str]) -> None:
        """Refuse a state of another version, kind or streams, or one missing `fields`."""
        who = f"{type(self).__name__} {self.name!r}"
        if not isinstance(state, Mapping):
            raise ValueError(f"{who}: refusing state: expected a mapping, got {type(state).__name__}")
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"{who}: refusing state: field 'version' is {state.get('version')!r}; "
                             f"this cpt reads version {STATE_VERSION}")
        if state.get("kind") != self.kind:
            raise ValueError(f"{who}: refusing state: field 'kind' is {state.get('kind')!r}, not {self.kind!r} "
                             "(a checkpoint of another hook under this name?)")
        missing = [f for f in ("streams", *fields) if f not in state]
        if missing:
            raise ValueError(f"{who}: refusing state: missing fields {missing}")
        theirs = state["streams"]
        if streams is not None and theirs is not None and list(theirs) != list(streams):
            raise ValueError(f"{who}: refusing state: field 'streams' is {list(theirs)} but this hook controls "
                             f"{list(streams)}; resume with the same streams")

    # ---- logging ---------------------------------------------------------------------------------

    def _finish(self, ctx: HookContext, before: Mapping[str, float], shares: Optional[Mapping[str, float]],
                figures: Mapping[str, Any], reason: str, tolerance: float = SAME_SHARE) -> Optional[MixtureUpdate]:
        """Log one "mixture" record and return the update (None when no share moves by > tolerance).

        `shares` are the new shares of the streams this controller sets (None: no decision). The
        record holds `hook`, `weights_before` and `weights_after` over all streams, then `figures`.
        """
        update = None
        after = dict(before)
        if shares is not None:
            candidate = MixtureUpdate(weights=dict(shares), reason=reason)
            merged = merge_update(before, candidate, f"hook {self.name!r}")
            if any(abs(merged[s] - before[s]) > tolerance for s in merged):
                after = merged
                update = MixtureUpdate(weights=dict(shares), reason=reason, details=dict(figures))
        record = {"hook": self.name, "controller": self.kind, "step": ctx.step, "consumed_tokens": ctx.consumed_tokens,
                  "updated": update is not None, "reason": reason,
                  "weights_before": dict(before), "weights_after": after, **figures}
        ctx.log("mixture", record, self._line(before, after, reason) if update is not None else None)
        return update

    def _line(self, before: Mapping[str, float], after: Mapping[str, float], reason: str) -> str:
        """One console line: the reason and the (at most 4) largest share moves."""
        moves = sorted(after, key=lambda s: -abs(after[s] - before[s]))[:4]
        shown = ", ".join(f"{s} {before[s]:.4f}->{after[s]:.4f}" for s in moves)
        more = "" if len(after) <= 4 else f" (+{len(after) - 4} more)"
        return f"mixture {self.name}: {reason}: {shown}{more}"


def stream_metric(eval_metrics: EvalMetrics, stream: str, key: str, who: str) -> float:
    """eval_metrics.streams[stream][key] as a finite float; a clear error if it is absent or not finite."""
    figures = eval_metrics.streams.get(stream)
    if figures is None or key not in figures:
        raise ValueError(
            f"{who}: no validation {key} for stream {stream!r} at step {eval_metrics.step} "
            f"(streams with validation: {sorted(eval_metrics.streams)}); give the stream held-out documents "
            "or leave it out of the hook's 'streams'"
        )
    value = float(figures[key])
    if not math.isfinite(value):
        raise ValueError(f"{who}: validation {key} of stream {stream!r} is {value} at step {eval_metrics.step}")
    return value


class ValidatedStreamsController(MixtureController):
    """A controller over streams that have per-stream validation: the `streams` option, else every
    validated stream, found at the first eval of each launch and then fixed (a resumed recipe may
    have added or dropped validated streams: see `_follow`)."""

    streams: Optional[tuple[str, ...]] = None
    _streams_option: Optional[tuple[str, ...]] = None
    _resolved = False  # the streams of this launch are known

    def _check_validated(self, streams: Sequence[str]) -> None:
        """Extra checks of the streams found at the first eval (subclasses: e.g. against groups)."""

    def on_train_start(self, ctx: HookContext) -> Optional[MixtureUpdate]:
        if self._streams_option is not None:  # without the option, this launch's first eval resolves them
            self._check_known(ctx, self.streams, "streams")
        self._resolved = False
        return None

    def _resolve_streams(self, ctx: HookContext, eval_metrics: EvalMetrics) -> tuple[str, ...]:
        """The controlled streams: the option, else every validated stream of the run."""
        if self._streams_option is None and not self._resolved:
            self._resolved = True
            validated = tuple(s for s in ctx.stream_names if s in eval_metrics.streams)
            if not validated:
                raise self._err("streams", "not set and no stream has per-stream validation "
                                           f"at step {eval_metrics.step}")
            if self.streams is not None and set(validated) != set(self.streams):
                self._follow(self.streams, validated)
            if validated != self.streams:
                self._check_validated(validated)
                self.streams = validated
        self._check_known(ctx, self.streams, "streams")
        return self.streams

    def _follow(self, old: Sequence[str], new: Sequence[str]) -> None:
        """The controlled streams changed (a recipe edit at a resume): carry the state over, or refuse."""
        raise ValueError(
            f"hook {self.name!r} ({self.kind}): its checkpoint controls streams {list(old)}, the resumed "
            f"recipe validates {list(new)}: {self.kind} does not follow a recipe edit of its streams; keep "
            "them (or name them in its `streams` option) while it runs")

    def _live_metric(self, ctx: HookContext, eval_metrics: EvalMetrics,
                     metric: str) -> tuple[tuple[str, ...], list[str], dict[str, float]]:
        """(controlled streams, those not exhausted, `metric` of each live stream at this eval)."""
        streams = self._resolve_streams(ctx, eval_metrics)
        exhausted = ctx.exhausted()
        live = [s for s in streams if s not in exhausted]
        return streams, live, {s: stream_metric(eval_metrics, s, metric, f"hook {self.name!r}") for s in live}
