"""A torch.distributed world of one process: megatron's dist_checkpointing save/load need a process
group even when one process reads or writes every shard."""
from __future__ import annotations

import torch.distributed as dist


def ensure_world() -> None:
    from megatron_ext import cpu

    cpu.enable()  # dist_checkpointing's save verification makes a device="cuda" tensor
    if dist.is_initialized():
        return
    from megatron_ext.engine import init_distributed

    init_distributed()
