"""The engine interface the training loop drives.

The loop (cpt.train.loop) knows steps, tokens, schedules, logging and checkpoints; an engine knows
how to build a model and optimizer and run one step on some parallel layout. `megatron_ext.engine`
implements this with megatron-core; a second engine could be added beside it without touching the
loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol

import numpy as np


@dataclass(frozen=True, slots=True)
class Layout:
    """Where this process sits: the loop uses it to pick its data slice and decide who logs."""

    rank: int
    world_size: int
    dp_rank: int
    dp_size: int
    is_logging_rank: bool


@dataclass(frozen=True, slots=True)
class StepResult:
    """Global (all-rank) figures of one optimizer step."""

    loss: float
    grad_norm: float
    tokens: int
    skipped: bool


Batch = Mapping[str, np.ndarray]
"""One micro-batch: `tokens`, `labels`, `loss_mask` [b, s]; optional `position_ids`, and `document_ids`
(int32, with data.reset_attention_mask: document masking as ids, never a dense mask)."""


class Engine(Protocol):
    layout: Layout
    num_parameters: int
    start_info: Mapping[str, Any]
    """What the run executes on: `line` (the run's first log line: device, dtype, kernels, attention
    backend) and the same as fields (`device`, `dtype`, `spec`, `attention`, `fusions`, ...)."""

    def train_step(self, micro_batches: Iterator[Batch], num_micro_batches: int, lr: float) -> StepResult:
        """Forward/backward over this rank's micro-batches, then one optimizer step at `lr`.

        A non-finite loss or gradient norm leaves the parameters untouched and returns skipped=True.
        """

    def evaluate(self, micro_batches: Iterator[Batch], num_micro_batches: int) -> tuple[float, int]:
        """Token-summed loss and token count over this step's validation micro-batches, all ranks."""

    def parameters_finite(self) -> bool:
        """True when every parameter on every rank is finite (checked before saving)."""

    def save(self, directory: Path, trainer_state: dict[str, Any],
             on_written: Optional[Callable[[], None]] = None) -> None:
        """Write a complete checkpoint into `directory` (the loop handles temp names and `latest`),
        then call `on_written()` on every rank: at once, or from `finish_saves` for an engine that
        writes in the background."""

    def finish_saves(self, blocking: bool = True) -> int:
        """Run `on_written` of background saves that are done (with `blocking`: wait for all).
        Called on every rank at the same points; returns how many finished."""

    def load(self, directory: Path) -> dict[str, Any]:
        """Restore model and optimizer from `directory`; return the trainer state saved with them."""

    def layout_key(self) -> dict[str, int]:
        """The parallel layout recorded in checkpoints (RNG state is restored only on a match)."""

    def barrier(self) -> None: ...

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (for decisions that must agree)."""

    def close(self) -> None: ...
