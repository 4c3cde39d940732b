"""Micro-batches on the ranks that need them: read once per tensor-parallel group, then broadcast.

As megatron's `get_batch_on_this_tp_rank`: the tensor-parallel ranks of a stage compute on the same
tokens, so only TP rank 0 pulls a micro-batch from the data source (cpt's SampleSource: Blender ids,
token reads, masks) and broadcasts it to its TP group; the others never call the source. A stage
gets only what it uses: the first stage `tokens` and `position_ids`, the last `labels` and
`loss_mask`, and with document masking (`data.reset_attention_mask`) every stage `document_ids`
(attention needs the boundaries everywhere). A middle stage without document masking reads
nothing. Shapes are fixed by the recipe ([micro_batch_size, seq_length]), so receivers allocate
before the broadcast, and dtypes are fixed per key.

On CUDA the reader's host arrays go through pinned (page-locked) memory, so the host-to-device
copy is asynchronous; on the CPU (gloo) they stay pageable: there is no device copy to overlap.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist

DTYPES: Mapping[str, torch.dtype] = {
    "tokens": torch.int64, "position_ids": torch.int64, "labels": torch.int64, "loss_mask": torch.float32,
    "document_ids": torch.int32,
}
_HOST = {"tokens": np.int64, "position_ids": np.int64, "labels": np.int64, "loss_mask": np.float32,
         "document_ids": np.int32}


@dataclass(frozen=True)
class BatchPlan:
    """What this rank's stage needs of a micro-batch and whether this rank reads it."""

    keys: tuple[str, ...]
    """Fields the stage uses (empty: the stage needs nothing, e.g. a middle stage without document masking)."""
    reads: bool
    """This rank pulls micro-batches from the data source (TP rank 0 of a stage that needs any field)."""
    shape: tuple[int, int]
    """[micro_batch_size, seq_length] of every field."""

    @classmethod
    def for_stage(cls, *, first_stage: bool, last_stage: bool, tp_rank: int, document_masking: bool,
                  micro_batch_size: int, seq_length: int) -> "BatchPlan":
        keys = (("tokens", "position_ids") if first_stage else ()) + (("labels", "loss_mask") if last_stage else ())
        if document_masking:
            keys += ("document_ids",)
        return cls(keys, bool(keys) and tp_rank == 0, (micro_batch_size, seq_length))

    def describe(self, tp_size: int, pinned: bool) -> str:
        """One phrase for the run's first log line."""
        memory = "pinned host memory" if pinned else "pageable host memory (no CUDA)"
        if tp_size == 1:
            return f"batches: read by each stage that needs them, {memory}"
        return (f"batches: read by TP rank 0 of each stage that needs them, broadcast to its {tp_size} TP ranks, "
                f"{memory}")


class TensorParallelBatches:
    """`next(data_iterator)` for megatron's forward step, on every rank of a TP group."""

    def __init__(self, plan: BatchPlan, device: torch.device, tp_group: Any, tp_src: int, tp_size: int) -> None:
        """tp_src: the global rank of TP rank 0 of this rank's group (the reader)."""
        self.plan, self.device = plan, device
        self.group, self.src, self.tp_size = tp_group, tp_src, tp_size
        self.pinned = device.type == "cuda"

    def next(self, data_iterator: Optional[Iterator[Mapping[str, np.ndarray]]]) -> dict[str, torch.Tensor]:
        """This stage's fields of the next micro-batch (the reader pulls it; the others receive it)."""
        if not self.plan.keys:
            return {}
        if self.plan.reads:
            batch = self._load(next(data_iterator))
        else:
            batch = {k: torch.empty(self.plan.shape, dtype=DTYPES[k], device=self.device) for k in self.plan.keys}
        if self.tp_size > 1:
            for key in self.plan.keys:  # one broadcast per field, in the same order on every rank
                dist.broadcast(batch[key], src=self.src, group=self.group)
        return batch

    def _load(self, batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
        unknown = sorted(set(batch) - set(DTYPES))
        if unknown:
            raise ValueError(f"micro-batch fields {unknown} are not sent to the model (known: {sorted(DTYPES)}); "
                             "a dense attention_mask is never used: document masking travels as document_ids")
        out = {}
        for key in self.plan.keys:
            if key == "position_ids" and key not in batch:
                value = np.broadcast_to(np.arange(self.plan.shape[1], dtype=np.int64), batch["tokens"].shape)
            elif key not in batch:
                raise ValueError(f"the micro-batch has no {key!r} (fields: {sorted(batch)})")
            else:
                value = batch[key]
            if tuple(value.shape) != self.plan.shape:
                raise ValueError(f"micro-batch field {key!r} has shape {tuple(value.shape)}, expected "
                                 f"{self.plan.shape} (training.micro_batch_size, training.seq_length)")
            host = torch.from_numpy(np.ascontiguousarray(value, dtype=_HOST[key]))
            if self.pinned:
                host = host.pin_memory()
            out[key] = host.to(self.device, non_blocking=self.pinned)
        return out

