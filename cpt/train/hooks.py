"""Data hooks: plugins that watch training and may change the stream mixture at a step boundary.

A hook implements any of

    on_train_start(ctx)                     -> MixtureUpdate | None
    on_step_end(ctx, step, metrics)         -> MixtureUpdate | None
    on_eval(ctx, step, eval_metrics)        -> MixtureUpdate | None
    state_dict() / load_state_dict(state)

(subclass `DataHook` to get no-op defaults). An update returned after step t takes effect from the
first sample of step t+1, on every rank alike: the trainer takes rank 0's updates (broadcast), merges
them in hook order and hands the result to the Blender with `effective_at = consumed samples`. The
hooks' state is saved in every checkpoint and restored on resume, so a resumed run makes the same
decisions as an uninterrupted one.

Hooks are named in the recipe (`hooks: [{use: ..., options: {...}}]`) by import path
(`package.module:Class`) or by the name of an entry point in the group `cpt.data_hooks`, so other
packages can ship hooks without touching cpt. `options` become the constructor's keyword arguments.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Callable, Mapping, Optional, Protocol, Sequence, runtime_checkable

ENTRY_POINT_GROUP = "cpt.data_hooks"
SHIPPED_HOOKS: dict[str, str] = {
    "topic_ppl": "cpt.mixture.topic_ppl:TopicPPLMixture",
    "static": "cpt.mixture.static:StaticMixture",
    "schedule": "cpt.mixture.schedule:ScheduleMixture",
    "exp3": "cpt.mixture.exp3:EXP3Mixture",
    "forgetting_guard": "cpt.mixture.forgetting:ForgettingGuard",
}
"""The hooks cpt ships, by name. They resolve without installed package metadata, so a source
checkout on PYTHONPATH (how clusters often run a trainer) names them as an installed cpt does;
pyproject.toml registers the same names as entry points (a test keeps the two equal)."""
HOOK_METHODS = ("on_train_start", "on_step_end", "on_eval")


@dataclass(frozen=True)
class MixtureUpdate:
    """New mixture shares for some or all streams.

    Named streams get these shares; the others keep their current share; the vector is then
    normalised to sum 1. A controller that wants to keep a group's total (e.g. the Chinese share)
    returns shares that sum to that group's current total. `details` are logged with the update.
    """

    weights: Mapping[str, float]
    reason: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalMetrics:
    """What one validation run measured, the same on every rank.

    `loss`/`ppl` are over all validation tokens (None when there is no validation data);
    `streams` maps a training stream's name to {"loss", "ppl", "tokens"} on its held-out documents.
    """

    step: int
    consumed_tokens: int
    loss: Optional[float]
    ppl: Optional[float]
    streams: Mapping[str, Mapping[str, float]]


class HookContext:
    """What a hook may read about the run, and a way to log. Hooks never touch the data directly:
    they return a MixtureUpdate."""

    def __init__(
        self,
        stream_names: Sequence[str],
        weights: Callable[[], dict[str, float]],
        samples: Callable[[], dict[str, int]],
        exhausted: Callable[[], frozenset[str]],
        progress: Callable[[], tuple[int, int]],
        log: Callable[[str, dict[str, Any], Optional[str]], None],
        total_steps: int,
        tokens_per_step: int,
        is_logging_rank: bool,
    ) -> None:
        self.stream_names = tuple(stream_names)
        self._weights, self._samples, self._exhausted, self._progress, self._log = (
            weights, samples, exhausted, progress, log
        )
        self.total_steps = total_steps
        self.tokens_per_step = tokens_per_step
        self.is_logging_rank = is_logging_rank
        self._pending: Callable[[], Optional[dict[str, float]]] = lambda: None

    def show_pending(self, pending: Callable[[], Optional[dict[str, float]]]) -> None:
        """Let `weights()` report shares decided earlier in this step (set by the hook runner)."""
        self._pending = pending

    def weights(self) -> dict[str, float]:
        """Shares in force from the next step (updates returned earlier in this step included)."""
        pending = self._pending()
        return dict(pending) if pending is not None else self._weights()

    def samples(self) -> dict[str, int]:
        """Samples drawn from each stream so far."""
        return self._samples()

    def exhausted(self) -> frozenset[str]:
        """Streams that ran out of documents (their weight is 0 from then on)."""
        return self._exhausted()

    @property
    def step(self) -> int:
        return self._progress()[0]

    @property
    def consumed_tokens(self) -> int:
        return self._progress()[1]

    def log(self, kind: str, figures: dict[str, Any], line: Optional[str] = None) -> None:
        """A metrics.jsonl record (and TensorBoard scalars) of this kind at the current step."""
        self._log(kind, figures, line)


@runtime_checkable
class Hook(Protocol):
    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> None: ...


class DataHook:
    """Base class with no-op defaults: implement only what you need."""

    def on_train_start(self, ctx: HookContext) -> Optional[MixtureUpdate]:
        return None

    def on_step_end(self, ctx: HookContext, step: int, metrics: Mapping[str, Any]) -> Optional[MixtureUpdate]:
        return None

    def on_eval(self, ctx: HookContext, step: int, eval_metrics: EvalMetrics) -> Optional[MixtureUpdate]:
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        return None


def merge_update(current: Mapping[str, float], update: MixtureUpdate, where: str) -> dict[str, float]:
    """`current` shares with `update` applied and normalised; bad values are refused naming the hook."""
    unknown = sorted(set(update.weights) - set(current))
    if unknown:
        raise ValueError(f"{where}: MixtureUpdate names unknown streams {unknown}; streams are {sorted(current)}")
    merged = dict(current)
    for name, value in update.weights.items():
        value = float(value)
        if not value >= 0.0 or value == float("inf"):
            raise ValueError(f"{where}: MixtureUpdate weight for {name!r} must be finite and >= 0, got {value}")
        merged[name] = value
    total = sum(merged.values())
    if not total > 0.0:
        raise ValueError(f"{where}: MixtureUpdate leaves every stream at weight 0")
    return {name: value / total for name, value in merged.items()}


def _resolve(use: str, where: str) -> Any:
    """The object named `package.module:Attr`, a hook cpt ships, or the entry point `use` in group
    cpt.data_hooks."""
    if ":" in use:
        module_name, _, attr = use.partition(":")
        try:
            obj: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise ValueError(f"{where}: cannot import {module_name!r} ({exc})") from None
        for part in attr.split("."):
            if not hasattr(obj, part):
                raise ValueError(f"{where}: {module_name!r} has no attribute {attr!r}")
            obj = getattr(obj, part)
        return obj
    if use in SHIPPED_HOOKS:
        return _resolve(SHIPPED_HOOKS[use], where)
    found = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == use]
    if not found:
        known = sorted({*SHIPPED_HOOKS, *(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))})
        raise ValueError(
            f"{where}: {use!r} is neither 'package.module:Class' nor a '{ENTRY_POINT_GROUP}' entry point "
            f"(installed: {known})"
        )
    return found[0].load()


def build_hook(use: str, options: Mapping[str, Any], where: str, name: Optional[str] = None) -> Any:
    """Instantiate one hook: `factory(**options)`; the hook needs at least one hook method.

    `name` (the recipe's hooks[i].name) is passed as the `name` keyword when the factory takes one
    and the options do not set it, so two hooks of one kind log under their own names."""
    factory = _resolve(use, where)
    if not callable(factory):
        raise ValueError(f"{where}: {use!r} is not a class or factory")
    options = dict(options)
    try:
        signature = inspect.signature(factory)
    except ValueError:  # builtins without a signature: let the call decide
        signature = None
    if signature is not None:
        if name is not None and "name" not in options and "name" in signature.parameters:
            options["name"] = name
        try:
            signature.bind(**options)
        except TypeError as exc:
            raise ValueError(f"{where}.options: {exc}") from None
    try:
        hook = factory(**options)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}.options: {exc}") from None
    if not any(callable(getattr(hook, m, None)) for m in HOOK_METHODS):
        raise ValueError(f"{where}: {use!r} implements none of {', '.join(HOOK_METHODS)}")
    return hook
