"""Tensor layouts: HF's separate q/k/v and gate/up projections ⇄ megatron's fused ones, and the
vocabulary padding megatron adds for TP divisibility.

megatron's fused `linear_qkv` is interleaved per query group: for each of the `ng` key/value groups,
its `np/ng` query heads, then its key head, then its value head (each `hn` rows). Splitting that on
dim 0 into TP pieces gives every rank whole groups, so the global tensor does not depend on TP.
`linear_fc1` is [gate; up] globally (megatron's SwiGLU sharded factory stores it that way).
All functions are exact (views, concatenations, slices): a round trip is bitwise.
"""
from __future__ import annotations

import torch

from cpt.config import ModelConfig


def head_dim(cfg: ModelConfig) -> int:
    return cfg.hidden_size // cfg.num_attention_heads


def fuse_qkv(cfg: ModelConfig, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [np*hn, ...], k/v [ng*hn, ...] → megatron's [ng*(np/ng+2)*hn, ...] (weights or biases)."""
    ng, hn = cfg.query_groups, head_dim(cfg)
    rest = q.shape[1:]
    qg = q.reshape(ng, (cfg.num_attention_heads // ng) * hn, *rest)
    kg = k.reshape(ng, hn, *rest)
    vg = v.reshape(ng, hn, *rest)
    return torch.cat([qg, kg, vg], dim=1).reshape(-1, *rest).contiguous()


def split_qkv(cfg: ModelConfig, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inverse of `fuse_qkv`."""
    ng, hn = cfg.query_groups, head_dim(cfg)
    per_group = cfg.num_attention_heads // ng
    rest = qkv.shape[1:]
    grouped = qkv.reshape(ng, (per_group + 2) * hn, *rest)
    q, k, v = torch.split(grouped, [per_group * hn, hn, hn], dim=1)
    return (q.reshape(-1, *rest).contiguous(), k.reshape(-1, *rest).contiguous(), v.reshape(-1, *rest).contiguous())


def fuse_gate_up(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return torch.cat([gate, up], dim=0)


def split_gate_up(fc1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gate, up = fc1.chunk(2, dim=0)
    return gate.contiguous(), up.contiguous()


def pad_vocab(weight: torch.Tensor, padded: int) -> torch.Tensor:
    """Append zero rows up to `padded` (their logits are 0; megatron never samples them)."""
    extra = padded - weight.shape[0]
    if extra == 0:
        return weight
    return torch.cat([weight, weight.new_zeros(extra, *weight.shape[1:])], dim=0)


def unpad_vocab(weight: torch.Tensor, vocab_size: int) -> torch.Tensor:
    return weight[:vocab_size].contiguous()
