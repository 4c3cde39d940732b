"""Cross entropy over a (possibly tensor-parallel) vocabulary without a full-precision logits copy.

megatron's `vocab_parallel_cross_entropy` (and a plain `F.cross_entropy(logits.float())`) first
converts the whole [s·b, V] logits tensor to fp32 and keeps a softmax of that size for the
backward: at Llama-3's 128,256-token vocabulary that is several times the bf16 logits themselves.
Here the logits stay in their own dtype and are read in row chunks:

- forward: per row the maximum, the sum of exp(x - max) (each chunk upcast to fp32 on its own) and
  the target logit; across TP ranks one all-reduce of the maxima and one of (sum, target logit),
  as megatron's version does; loss = log(sum) + max - target logit, in fp32;
- backward: the gradient `g · (softmax - onehot)` is written chunk by chunk into one tensor of the
  logits' dtype (the only tensor of the logits' size this loss allocates).

Padded vocabulary rows (megatron pads V to a multiple of `make_vocab_size_divisible_by × TP`) are
left out of the softmax and get a zero gradient, so the loss equals the loss over the real
vocabulary (as transformers computes it). The padding sits at the end of the vocabulary, so on
every TP rank the real entries are a prefix of its shard.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

# fp32 elements of one chunk's temporaries: small against the logits, large enough that a chunk
# is a few big kernels rather than many small ones.
CHUNK_ELEMENTS = 1 << 22


def _row_chunks(rows: int, width: int) -> list[slice]:
    step = max(1, CHUNK_ELEMENTS // max(width, 1))
    return [slice(i, min(i + step, rows)) for i in range(0, rows, step)]


def _all_reduce(t: torch.Tensor, op: dist.ReduceOp, group: Optional[dist.ProcessGroup]) -> None:
    if group is not None and dist.get_world_size(group) > 1:
        dist.all_reduce(t, op=op, group=group)


class _ChunkedCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits: torch.Tensor, target: torch.Tensor, vocab_start: int, valid: int,
                group: Optional[dist.ProcessGroup]) -> torch.Tensor:
        rows = logits.shape[0]
        x = logits[:, :valid]
        chunks = _row_chunks(rows, valid)
        row_max = torch.full((rows,), float("-inf"), dtype=torch.float32, device=logits.device)
        if valid > 0:
            for c in chunks:
                row_max[c] = x[c].amax(dim=1).float()
        _all_reduce(row_max, dist.ReduceOp.MAX, group)
        local = target - vocab_start
        mine = (local >= 0) & (local < valid)
        local = torch.where(mine, local, torch.zeros_like(local))
        sums = torch.zeros((2, rows), dtype=torch.float32, device=logits.device)  # [sum exp, target logit]
        if valid > 0:
            for c in chunks:
                sums[0, c] = (x[c].float() - row_max[c, None]).exp_().sum(dim=1)
            picked = x.gather(1, local[:, None]).squeeze(1).float()
            sums[1] = torch.where(mine, picked, torch.zeros_like(picked))
        _all_reduce(sums, dist.ReduceOp.SUM, group)
        lse = sums[0].log() + row_max
        ctx.save_for_backward(logits, local, mine, lse)
        ctx.valid = valid
        return lse - sums[1]

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        logits, local, mine, lse = ctx.saved_tensors
        valid = ctx.valid
        grad = torch.empty_like(logits)
        grad[:, valid:] = 0
        g = grad_loss.float()
        x = logits[:, :valid]
        for c in _row_chunks(logits.shape[0], valid) if valid > 0 else []:
            p = (x[c].float() - lse[c, None]).exp_().mul_(g[c, None])  # g · softmax
            own = torch.nonzero(mine[c]).squeeze(1)  # rows whose target is in this shard
            p[own, local[c][own]] -= g[c][own]  # - g · onehot
            grad[c, :valid] = p
        return grad, None, None, None, None


def cross_entropy(logits: torch.Tensor, target: torch.Tensor, vocab_size: int,
                  group: Optional[dist.ProcessGroup] = None) -> torch.Tensor:
    """Per-row cross entropy (fp32) of `logits` [rows, V_local] against `target` [rows] (global
    token ids < vocab_size). `logits` is this rank's vocabulary shard (all of it without TP);
    columns of global index >= `vocab_size` are padding and take no part."""
    if logits.dim() != 2 or target.shape != logits.shape[:1]:
        raise ValueError(f"cross_entropy: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    tp_rank = dist.get_rank(group) if group is not None and dist.get_world_size(group) > 1 else 0
    width = logits.shape[1]
    vocab_start = tp_rank * width
    valid = max(0, min(width, vocab_size - vocab_start))
    return _ChunkedCrossEntropy.apply(logits, target, vocab_start, valid, group)
