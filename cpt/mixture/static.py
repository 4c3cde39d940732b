"""Fixed weights for a stage.

`weights: {stream: w}` names every stream of the run (a stream to leave out gets 0, written out, so a
forgotten stream is an error rather than a silent zero); they are normalised to sum 1, exhausted
streams get 0 and the rest are renormalised. At train start -- also after a resume or when a stage
starts from another stage's checkpoint, whose blender carries the old stage's weights -- the
controller returns these weights if they differ from the ones in force, and never changes them later.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional

from cpt.mixture.base import MixtureController
from cpt.train.hooks import HookContext, MixtureUpdate


class StaticMixture(MixtureController):
    """Sets `weights` once at train start."""

    kind = "static"

    def __init__(self, *, weights: Mapping[str, float], name: Optional[str] = None) -> None:
        super().__init__(name)
        if not isinstance(weights, Mapping) or not weights:
            raise self._err("weights", f"must be a non-empty mapping {{stream: weight}}, got {weights!r}")
        self.weights = {str(k): self._number(f"weights.{k}", v, low=0.0) for k, v in weights.items()}
        if not sum(self.weights.values()) > 0:
            raise self._err("weights", "are all 0")

    def on_train_start(self, ctx: HookContext) -> Optional[MixtureUpdate]:
        self._check_known(ctx, self.weights, "weights")
        missing = sorted(set(ctx.stream_names) - set(self.weights))
        if missing:
            raise self._err("weights", f"must name every stream of the run; missing {missing} "
                                       "(write 0 to leave one out)")
        exhausted = ctx.exhausted()
        live = {s: (0.0 if s in exhausted else w) for s, w in self.weights.items()}
        total = sum(live.values())
        before = ctx.weights()
        if not total > 0:
            raise self._err("weights", f"give weight only to exhausted streams {sorted(exhausted)}")
        shares = {s: w / total for s, w in live.items()}
        return self._finish(ctx, before, shares, {"target": shares, "exhausted": sorted(exhausted)},
                            "static weights for the stage")

    def state_dict(self) -> dict[str, Any]:
        return self._state(sorted(self.weights))

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._check_state(state, sorted(self.weights), ())
