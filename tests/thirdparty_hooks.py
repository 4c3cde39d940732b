"""A data hook from outside cpt, named in test recipes as `thirdparty_hooks:RecordingHook`: it
records every call it gets (one jsonl file per rank) and can move the mixture at one evaluation."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

from cpt.train.hooks import DataHook, EvalMetrics, HookContext, MixtureUpdate


class RecordingHook(DataHook):
    def __init__(self, record: str, shift_at: Optional[int] = None, weights: Optional[dict[str, float]] = None) -> None:
        self.path = Path(record).with_suffix(f".rank{os.environ.get('RANK', '0')}.jsonl")
        self.shift_at, self.weights = shift_at, weights
        self.calls = 0

    def _record(self, **entry: Any) -> None:
        self.calls += 1
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    def on_train_start(self, ctx: HookContext) -> None:
        self._record(call="on_train_start", step=ctx.step, weights=ctx.weights())

    def on_step_end(self, ctx: HookContext, step: int, metrics: Mapping[str, Any]) -> None:
        self._record(call="on_step_end", step=step, loss=metrics["loss"])

    def on_eval(self, ctx: HookContext, step: int, eval_metrics: EvalMetrics) -> Optional[MixtureUpdate]:
        self._record(call="on_eval", step=step, streams=dict(eval_metrics.streams))
        if step == self.shift_at:
            return MixtureUpdate(self.weights, reason="test shift")
        return None

    def state_dict(self) -> dict[str, Any]:
        return {"calls": self.calls}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.calls = int(state["calls"])
