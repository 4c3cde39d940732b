"""Runs the recipe's data hooks for the trainer and turns their answers into one weight change.

The trainer calls `train_start`, `step_end` and `eval` on every rank at the same points. Each asks
the hooks that implement that method, in recipe order; every hook sees the shares left by the
updates before it (`ctx.weights()`). The merged result is taken from rank 0 (one broadcast, only at
points where some hook was asked), so all ranks schedule the identical change. The caller applies
it from the first sample of the next step.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Mapping, Optional, Sequence

from cpt.train.hooks import DataHook, EvalMetrics, HookContext, MixtureUpdate, build_hook, merge_update

HOOKS_STATE_VERSION = 1


def _implements(hook: Any, method: str) -> bool:
    """True when `hook` has its own `method` (DataHook's no-op defaults do not count)."""
    impl = getattr(type(hook), method, None)
    return callable(impl) and impl is not getattr(DataHook, method)


class HookRunner:
    def __init__(
        self,
        hooks: Sequence[tuple[str, Any]],
        ctx: HookContext,
        broadcast: Callable[[Any], Any],
    ) -> None:
        self.hooks = list(hooks)
        self.ctx = ctx
        self._broadcast = broadcast
        self._pending: Optional[dict[str, float]] = None
        ctx.show_pending(lambda: self._pending)
        self.seconds = 0.0  # time spent inside hooks (the overhead the benchmark reports)
        self.updates = 0

    @classmethod
    def from_specs(cls, specs: Sequence[Any], ctx: HookContext, broadcast: Callable[[Any], Any]) -> "HookRunner":
        hooks = []
        for i, spec in enumerate(specs):
            name = spec.name or spec.use
            hooks.append((name, build_hook(spec.use, dict(spec.options), f"hooks[{i}] ({name})", spec.name)))
        return cls(hooks, ctx, broadcast)

    def __bool__(self) -> bool:
        return bool(self.hooks)

    # ---------------------------------------------------------------- the three call points

    def train_start(self) -> Optional[dict[str, float]]:
        return self._call("on_train_start", lambda h: h.on_train_start(self.ctx))

    def step_end(self, step: int, metrics: Mapping[str, Any]) -> Optional[dict[str, float]]:
        return self._call("on_step_end", lambda h: h.on_step_end(self.ctx, step, metrics))

    def eval(self, step: int, eval_metrics: EvalMetrics) -> Optional[dict[str, float]]:
        return self._call("on_eval", lambda h: h.on_eval(self.ctx, step, eval_metrics))

    def _call(self, method: str, call: Callable[[Any], Optional[MixtureUpdate]]) -> Optional[dict[str, float]]:
        asked = [(name, hook) for name, hook in self.hooks if _implements(hook, method)]
        if not asked:
            return None
        started = time.perf_counter()
        before = self.ctx.weights()
        weights = None
        for name, hook in asked:
            update = call(hook)
            if update is None:
                continue
            if not isinstance(update, MixtureUpdate):
                raise TypeError(f"hook {name}.{method} returned {type(update).__name__}, expected MixtureUpdate or None")
            weights = merge_update(self.ctx.weights(), update, f"hook {name}.{method}")
            self._pending = weights
            self.ctx.log("event", {"message": f"hook {name}: mixture update ({update.reason or method})"}, None)
        self._pending = None
        weights = self._broadcast(weights)
        self.seconds += time.perf_counter() - started
        if weights is None or all(abs(weights[k] - before[k]) < 1e-15 for k in weights):
            return None
        self.updates += 1
        return weights

    # ---------------------------------------------------------------- state

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": HOOKS_STATE_VERSION,
            "hooks": {name: hook.state_dict() if hasattr(hook, "state_dict") else {} for name, hook in self.hooks},
        }

    def load_state_dict(self, state: Mapping[str, Any], where: str) -> None:
        if state.get("version") != HOOKS_STATE_VERSION:
            raise ValueError(f"{where}: hooks state version {state.get('version')!r}, this cpt reads {HOOKS_STATE_VERSION}")
        saved = state["hooks"]
        names = [name for name, _ in self.hooks]
        if sorted(saved) != sorted(names):
            raise ValueError(
                f"{where}: the checkpoint holds state for hooks {sorted(saved)}, the recipe names {sorted(names)}; "
                "resume a stage with the hooks it started with"
            )
        for name, hook in self.hooks:
            if hasattr(hook, "load_state_dict"):
                hook.load_state_dict(saved[name])
