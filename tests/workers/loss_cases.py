"""Worker for tests/test_loss.py: the chunked cross entropy over a vocabulary split across TP ranks
(gloo, run under torchrun) equals the single-process loss over the whole vocabulary; writes the
rank's loss and logits-gradient shard to OUT/rank{r}.pt."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.distributed as dist

from megatron_ext import loss as loss_mod


def main(out: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    loss_mod.CHUNK_ELEMENTS = 64  # many chunks
    gen = torch.Generator().manual_seed(0)
    rows, padded, real = 37, 24, 21  # the last rank's shard holds 3 padding columns
    logits = torch.randn(rows, padded, generator=gen) * 3
    target = torch.randint(0, real, (rows,), generator=gen)
    weights = torch.rand(rows, generator=gen)
    shard = logits.chunk(world, dim=1)[rank].clone().requires_grad_(True)
    loss = loss_mod.cross_entropy(shard, target, real, dist.group.WORLD)
    (loss * weights).sum().backward()
    torch.save({"loss": loss.detach(), "grad": shard.grad}, out / f"rank{rank}.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
