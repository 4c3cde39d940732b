"""A stage's budget in passes over a stream: `training.train_passes: {STREAM: N}` -> train_tokens.

A budget in tokens depends on the tokenizer: the same Chinese documents are more than twice the
tokens under SmolLM2's vocabulary as under the CPU proxy's. "Read this sample of the Chinese documents
once" (the paper's curriculum pass) therefore cannot be written as a token count that holds for every
base model. A budget in passes can: the stage trains the whole steps in which the stream, at its
initial share of the mixture, gives N times the samples of one epoch of its training documents
(rounded down, so a pass never starts a second epoch; less than one step of it stays unread).

The count is the stream's own packing arithmetic (StreamConfig.samples_in over the tokens of its
training split, as Stream.capacity), the tokens read from the index cache when the stream's entry is
there. The share is exact arithmetic on the weights (no float rounding moves a step). A data hook
that moves the stream's share moves where the pass ends; the budget is fixed at the start. The
resolved recipe (train_tokens set, train_passes cleared) is what the run records in recipe.yaml and
its checkpoints; a resume resolves again from the same documents, so it gets the same budget.
`schedule.stable_tokens: null` goes with it (resolve_schedule): the decay then ends with the stage's
last step whatever the budget came to.
"""
from __future__ import annotations

import dataclasses
import math
from fractions import Fraction
from pathlib import Path
from typing import Optional

from cpt.config import Recipe, RecipeError


@dataclasses.dataclass(frozen=True, slots=True)
class PassBudget:
    """How a pass budget was resolved (for the run's log)."""

    stream: str
    passes: float
    epoch_samples: int
    share: float
    steps: int
    train_tokens: int

    def line(self) -> str:
        return (f"budget: {self.passes:g} pass(es) over stream {self.stream!r} ({self.epoch_samples:,} samples per "
                f"epoch at share {self.share:.4g}) = {self.steps:,} steps = {self.train_tokens:,} tokens")


def resolve_schedule(recipe: Recipe, stage_start_tokens: int, stage_tokens: int) -> Recipe:
    """`schedule.stable_tokens: null` -> the stable phase that makes the decay end with the stage's last step.

    The WSD schedule counts every token consumed since step 0 (a later stage carries on where the last
    one stopped), so "the rest of this stage" is known only once the stage knows where it starts:
    stable = stage start + the stage's tokens (whole steps) - warmup - decay. Raises RecipeError naming
    schedule.stable_tokens when warmup and decay do not fit."""
    s = recipe.schedule
    if s.stable_tokens is not None:
        return recipe
    stable = stage_start_tokens + stage_tokens - s.warmup_tokens - s.decay_tokens
    if stable < 0:
        raise RecipeError(f"schedule.stable_tokens: null (the rest of the stage) but warmup_tokens {s.warmup_tokens} "
                          f"+ decay_tokens {s.decay_tokens} end after the stage's last token "
                          f"({stage_start_tokens} + {stage_tokens})")
    return dataclasses.replace(recipe, schedule=dataclasses.replace(s, stable_tokens=stable))


def train_samples(recipe: Recipe) -> int:
    """Training samples of the stage: whole global batches covering training.train_tokens."""
    t = recipe.training
    if t.train_tokens is None:
        raise ValueError("training.train_passes: the budget is not resolved yet (cpt.train.budget.resolve_budget)")
    return -(-t.train_tokens // (t.global_batch_size * t.seq_length)) * t.global_batch_size


def resolve_budget(recipe: Recipe, tables: Optional[dict] = None) -> tuple[Recipe, Optional[PassBudget]]:
    """The recipe with its budget in tokens, and how a pass budget became one (None: it was in tokens).

    tables: DocumentTables shared with build_training_data (the shards are opened once). Raises
    RecipeError naming training.train_passes when the pass is shorter than one step."""
    from cpt.train.stream_data import epoch_samples

    t, d = recipe.training, recipe.data
    if not t.train_passes:
        return recipe, None
    ((stream, passes),) = t.train_passes.items()
    cache = d.cache_dir or str(Path(t.output_dir) / "data_cache")
    samples = epoch_samples(d.streams, stream, t.seq_length, d.valid_holdout, d.valid_holdout_seed,
                            cache_dir=cache, tables=tables)
    weights = {s.name: Fraction(s.weight) for s in d.streams}
    share = weights[stream] / sum(weights.values())
    steps = math.floor(Fraction(passes) * samples / share) // t.global_batch_size
    if steps < 1:
        raise RecipeError(f"training.train_passes.{stream}: {passes:g} pass(es) of {samples} samples at share "
                          f"{float(share):.4g} is less than one step of training.global_batch_size="
                          f"{t.global_batch_size}")
    budget = PassBudget(stream, float(passes), samples, float(share), steps, steps * t.global_batch_size * t.seq_length)
    training = dataclasses.replace(t, train_tokens=budget.train_tokens, train_passes={})
    return dataclasses.replace(recipe, training=training), budget


__all__ = ["PassBudget", "resolve_budget", "resolve_schedule", "train_samples"]
