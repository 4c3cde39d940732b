"""Which megatron checkpoint tensor is made of which HF tensors, and their shapes.

One table (`tensor_specs`) drives both directions, so import and export cannot drift apart. Keys are
megatron's *checkpoint* keys (`ShardedTensor.key`): per-layer tensors are stacked along a leading
layer axis (`decoder.layers.<...>`, global shape [num_layers, ...]), and norms carry the TE names
(`linear_qkv.layer_norm_weight`) on both the local (CPU) and TE (GPU) specs, since megatron's local
spec maps its `input_layernorm` to that key. `ALTERNATE_KEYS` lists older spellings export accepts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from cpt.config import ModelConfig
from megatron_ext.convert import layout


@dataclass(frozen=True)
class TensorSpec:
    """One megatron checkpoint tensor (one layer's slice when `per_layer`) and its HF sources."""

    key: str  # megatron checkpoint key
    hf_names: tuple[str, ...]  # HF tensor names, `{i}` = layer index
    hf_shapes: tuple[tuple[int, ...], ...]  # their shapes (unpadded)
    per_layer: bool
    fuse: Callable[..., torch.Tensor]  # HF tensors → megatron tensor
    split: Callable[[torch.Tensor], tuple[torch.Tensor, ...]]  # megatron tensor → HF tensors

    def names(self, layer: int | None) -> tuple[str, ...]:
        return tuple(n.format(i=layer) for n in self.hf_names)


# checkpoint keys of the per-layer `_extra_state` objects megatron's linear layers save (None on the
# local spec; TE's fp8 metadata on GPU): a load asks for them, so an import writes them (empty).
EXTRA_STATE_KEYS = tuple(
    f"decoder.layers.{m}._extra_state"
    for m in ("self_attention.linear_qkv", "self_attention.linear_proj", "mlp.linear_fc1", "mlp.linear_fc2")
)

# non-layer modules whose TE version may carry extra state (TE's RMSNorm); written as an empty
# object of megatron's non-layer shape (1,) so a TE-spec load finds it, and ignored by the local spec
EXTRA_STATE_SINGLE_KEYS = ("decoder.final_layernorm._extra_state",)

ALTERNATE_KEYS = {
    "decoder.layers.self_attention.linear_qkv.layer_norm_weight": "decoder.layers.input_layernorm.weight",
    "decoder.layers.mlp.linear_fc1.layer_norm_weight": "decoder.layers.pre_mlp_layernorm.weight",
}


def _one(t: torch.Tensor) -> torch.Tensor:
    return t


def _single(t: torch.Tensor) -> tuple[torch.Tensor]:
    return (t,)


def tensor_specs(cfg: ModelConfig, padded_vocab: int) -> list[TensorSpec]:
    """Every megatron model tensor of `cfg`, in HF file order (embeddings, layers, norm, head)."""
    h, f, hn = cfg.hidden_size, cfg.ffn_hidden_size, layout.head_dim(cfg)
    nq, nkv, v = cfg.num_attention_heads * hn, cfg.query_groups * hn, cfg.vocab_size
    pad = lambda t: layout.pad_vocab(t, padded_vocab)  # noqa: E731
    unpad = lambda t: (layout.unpad_vocab(t, v),)  # noqa: E731
    p = "model.layers.{i}."
    specs = [TensorSpec("embedding.word_embeddings.weight", ("model.embed_tokens.weight",), ((v, h),), False, pad, unpad)]
    specs += [
        TensorSpec("decoder.layers.self_attention.linear_qkv.layer_norm_weight", (p + "input_layernorm.weight",),
                   ((h,),), True, _one, _single),
        TensorSpec("decoder.layers.self_attention.linear_qkv.weight",
                   tuple(p + f"self_attn.{x}_proj.weight" for x in "qkv"), ((nq, h), (nkv, h), (nkv, h)), True,
                   lambda q, k, vv: layout.fuse_qkv(cfg, q, k, vv), lambda t: layout.split_qkv(cfg, t)),
    ]
    if cfg.qkv_bias:
        specs.append(TensorSpec("decoder.layers.self_attention.linear_qkv.bias",
                                tuple(p + f"self_attn.{x}_proj.bias" for x in "qkv"), ((nq,), (nkv,), (nkv,)), True,
                                lambda q, k, vv: layout.fuse_qkv(cfg, q, k, vv), lambda t: layout.split_qkv(cfg, t)))
    specs += [
        TensorSpec("decoder.layers.self_attention.linear_proj.weight", (p + "self_attn.o_proj.weight",), ((h, nq),),
                   True, _one, _single),
        TensorSpec("decoder.layers.mlp.linear_fc1.layer_norm_weight", (p + "post_attention_layernorm.weight",),
                   ((h,),), True, _one, _single),
        TensorSpec("decoder.layers.mlp.linear_fc1.weight", (p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"),
                   ((f, h), (f, h)), True, layout.fuse_gate_up, layout.split_gate_up),
        TensorSpec("decoder.layers.mlp.linear_fc2.weight", (p + "mlp.down_proj.weight",), ((h, f),), True, _one, _single),
        TensorSpec("decoder.final_layernorm.weight", ("model.norm.weight",), ((h,),), False, _one, _single),
    ]
    if not cfg.tie_embeddings:
        specs.append(TensorSpec("output_layer.weight", ("lm_head.weight",), ((v, h),), False, pad, unpad))
    return specs


def megatron_shape(spec: TensorSpec, cfg: ModelConfig, padded_vocab: int) -> tuple[int, ...]:
    """Shape of one layer's (or the non-layer) megatron tensor, for checking a checkpoint."""
    shapes = spec.hf_shapes
    if spec.key in ("embedding.word_embeddings.weight", "output_layer.weight"):
        return (padded_vocab, cfg.hidden_size)
    if len(shapes) == 1:
        return shapes[0]
    return (sum(s[0] for s in shapes), *shapes[0][1:])
