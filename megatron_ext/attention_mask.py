"""Document masking without a dense mask: packed-sequence parameters from document ids.

With `data.reset_attention_mask` a token attends only to earlier tokens of its own document
(megatron's `_get_ltor_masks_and_position_ids` rule: an end-of-document token closes its
document). The loader sends per-token `document_ids` [b, s] instead of a (b, 1, s, s) mask; here the
micro-batch is flattened to megatron's `thd` layout ([1, b*s] tokens) and the boundaries become
`PackedSeqParams.cu_seqlens` (one sequence per (row, document)), which TransformerEngine's fused
attention takes on GPU. On the local (no-TE) spec, `block_diagonal_attention` runs causal SDPA
on each document in turn: no s x s tensor is ever built outside SDPA itself.

Positions: `max_seqlen_q/kv` are set to the packed length, so megatron's thd RoPE maps every token
to its offset in the flattened micro-batch (its "exact mapping" case): row r's positions are
shifted by r*s, which changes no attention score (RoPE scores depend on q - k offsets, and
attention never crosses rows), so the result equals the dense-mask path with row positions.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.packed_seq_params import PackedSeqParams

_FLATTENED = ("tokens", "labels", "loss_mask", "position_ids")


def cu_seqlens(document_ids: torch.Tensor) -> torch.Tensor:
    """int32 start offsets of every (row, document) run in the flattened [b*s] ids, plus the end."""
    b, s = document_ids.shape
    flat = document_ids.reshape(-1)
    new = torch.ones(b * s, dtype=torch.bool, device=flat.device)
    new[1:] = flat[1:] != flat[:-1]
    new[::s] = True  # every row starts a sequence
    starts = torch.nonzero(new).flatten()
    end = torch.tensor([b * s], device=flat.device, dtype=starts.dtype)
    return torch.cat([starts, end]).to(torch.int32)


def pack_documents(batch: dict[str, torch.Tensor], pipeline_parallel: int = 1
                   ) -> tuple[dict[str, torch.Tensor], Optional[PackedSeqParams]]:
    """(batch, None) when it has no `document_ids`; else the batch flattened to [1, b*s] and its
    PackedSeqParams. Pipeline stages exchange [s, b, h] activations, which only equal [b*s, 1, h]
    for one sample per micro-batch, so pipeline parallelism needs micro_batch_size 1."""
    ids = batch.get("document_ids")
    if ids is None:
        return batch, None
    b, s = ids.shape
    if pipeline_parallel > 1 and b > 1:
        raise ValueError("data.reset_attention_mask with pipeline parallelism needs training.micro_batch_size 1 "
                         f"(got {b}): stages exchange [s, b, h] activations, packed documents are [b*s, 1, h]")
    out = {k: (v.reshape(1, b * s) if k in _FLATTENED else v) for k, v in batch.items() if k != "document_ids"}
    cu = cu_seqlens(ids)
    params = PackedSeqParams(qkv_format="thd", cu_seqlens_q=cu, cu_seqlens_kv=cu, max_seqlen_q=b * s,
                             max_seqlen_kv=b * s)
    return out, params


def block_diagonal_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             params: PackedSeqParams, scale: Optional[float], dropout_p: float) -> torch.Tensor:
    """Causal attention within each packed sequence: q [t, np, hn], k/v [t, ng, hn] -> [t, np*hn]."""
    t, heads, dim = query.shape
    bounds = params.cu_seqlens_q.tolist()
    if params.cu_seqlens_kv is not params.cu_seqlens_q and params.cu_seqlens_kv.tolist() != bounds:
        raise ValueError("block_diagonal_attention needs the same sequences for queries and keys")
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        q = query[lo:hi].permute(1, 0, 2).unsqueeze(0)  # [1, np, L, hn]
        k = key[lo:hi].permute(1, 0, 2).unsqueeze(0)
        v = value[lo:hi].permute(1, 0, 2).unsqueeze(0)
        o = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True, scale=scale,
                                           enable_gqa=k.shape[1] != heads)
        out.append(o.squeeze(0).permute(1, 0, 2).reshape(hi - lo, heads * dim))
    return torch.cat(out, dim=0)
