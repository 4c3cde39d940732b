"""Data-parallel slicing: every rank draws the same global batch and keeps its own slice.

The blender is deterministic, so all ranks compute the same global sample ids without talking to
each other; each then takes the positions megatron's MegatronPretrainingSampler gives it: the
global batch is cut into micro-batch rounds of micro_batch_size * dp_size samples, and in each
round rank r takes [r * micro_batch_size, (r + 1) * micro_batch_size). The union over ranks of one
step is exactly the global batch, so a DP=2 run trains on the same samples per step as DP=1.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cpt.sampling.blender import SampleIds


@dataclass(frozen=True, kw_only=True, slots=True)
class DataParallelLayout:
    """How one global batch is spread over data-parallel ranks and micro-batches."""

    global_batch_size: int
    """Samples per optimizer step, over all ranks."""
    micro_batch_size: int
    """Samples per forward/backward pass on one rank."""
    dp_size: int
    """Number of data-parallel ranks."""

    def __post_init__(self) -> None:
        for name in ("global_batch_size", "micro_batch_size", "dp_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.global_batch_size % (self.micro_batch_size * self.dp_size):
            raise ValueError(
                f"global_batch_size={self.global_batch_size} must be a multiple of micro_batch_size="
                f"{self.micro_batch_size} x dp_size={self.dp_size}"
            )

    @property
    def num_micro_batches(self) -> int:
        return self.global_batch_size // (self.micro_batch_size * self.dp_size)

    def positions(self, dp_rank: int) -> np.ndarray:
        """Positions within a global batch that `dp_rank` trains on, micro-batch after micro-batch."""
        if not 0 <= dp_rank < self.dp_size:
            raise ValueError(f"dp_rank must be in [0, {self.dp_size}), got {dp_rank}")
        rounds = np.arange(self.num_micro_batches)[:, None] * (self.micro_batch_size * self.dp_size)
        return (rounds + dp_rank * self.micro_batch_size + np.arange(self.micro_batch_size)[None, :]).ravel()

    def step_range(self, step: int) -> tuple[int, int]:
        """Global sample range [start, stop) of optimizer step `step` (0-based)."""
        return step * self.global_batch_size, (step + 1) * self.global_batch_size

    def rank_slice(self, batch: SampleIds, dp_rank: int) -> SampleIds:
        """This rank's samples of a global batch, as micro_batch_size-sized rows, in order.

        The returned `start` is the global batch's start; use `global_indices` for each sample's index.
        """
        if len(batch.stream) != self.global_batch_size:
            raise ValueError(f"rank_slice needs one global batch of {self.global_batch_size} samples, got {len(batch.stream)}")
        pos = self.positions(dp_rank)
        return SampleIds(batch.start, batch.stream[pos], batch.index[pos])

    def global_indices(self, batch_start: int, dp_rank: int) -> np.ndarray:
        """Global sample indices of this rank's samples in the global batch starting at batch_start."""
        return batch_start + self.positions(dp_rank)
