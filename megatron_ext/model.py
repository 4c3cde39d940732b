"""Llama-family GPTModel provider: `cpt.config.ModelConfig` → megatron-core `TransformerConfig` and
layer spec → `GPTModel`.

The choice of layers is data (a `ModuleSpec`), made here and nowhere else:
- TransformerEngine installed and `attention_backend` auto/te → megatron's TE spec (fused kernels,
  flash attention through TE when flash-attn is present);
- otherwise megatron's local spec with these substitutions: `SDPAttention` (torch's
  scaled_dot_product_attention, which dispatches to flash/memory-efficient kernels and is much faster
  than the local baddbmm+softmax path on CPU), `RMSNorm` that marks its weight `sequence_parallel`
  (megatron's torch-norm fallback refuses sequence parallelism), `SwiGLUMLP` (no no-op offset pass)
  and the cached RoPE path of `install_cached_rope` (the same arithmetic as megatron's unfused RoPE
  without recomputing cos/sin and copying every q/k once more per layer).
Weights are initialised layout-independently (`init_weights`): every parameter's full tensor is drawn
from a generator seeded by (seed, global parameter name) and each rank keeps its shard, so TP, PP
and DP runs start from exactly the single-process weights.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from typing import Optional

import torch
import torch.nn.functional as F
from megatron.core.models.gpt import GPTModel
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
from megatron.core.transformer import TransformerConfig
from megatron.core.transformer.enums import AttnMaskType
from megatron.core.transformer.mlp import MLP
from megatron.core.transformer.module import MegatronModule
from megatron.core.transformer.spec_utils import ModuleSpec
from megatron.core.transformer.transformer_block import TransformerBlock, TransformerBlockSubmodules

from cpt.config import ModelConfig, ParallelConfig
from megatron_ext import features
from megatron_ext.loss import cross_entropy


def padded_vocab_size(cfg: ModelConfig, tp: int) -> int:
    """megatron's make-vocab-size-divisible-by rule: pad to a multiple of (divisor × TP)."""
    multiple = cfg.make_vocab_size_divisible_by * tp
    return int(math.ceil(cfg.vocab_size / multiple) * multiple)


def on_gpu() -> bool:
    """The model runs on a GPU: CUDA visible and the CPU layer not forced (training.device=cpu)."""
    from megatron_ext import cpu

    return torch.cuda.is_available() and not cpu.active()


def use_transformer_engine(cfg: ModelConfig) -> bool:
    """TE layer spec: `attention_backend` te, or auto with TransformerEngine installed."""
    if cfg.attention_backend == "te" and not features.has_transformer_engine():
        raise RuntimeError("model.attention_backend=te but transformer-engine is not installed")
    return cfg.attention_backend == "te" or (cfg.attention_backend == "auto" and features.has_transformer_engine())


def fusion_settings(use_te: bool, gpu: bool) -> dict[str, object]:
    """megatron's kernel-fusion switches: each on exactly when its kernel exists here.

    - gradient_accumulation_fusion: the weight-gradient GEMM accumulates straight into the fp32
      main_grad buffer (TE linear layers do it natively; the local spec needs Apex's
      fused_weight_gradient_mlp_cuda);
    - apply_rope_fusion: TE's fused RoPE kernel;
    - bias_activation_fusion / bias_dropout_fusion: megatron's jit-fused SwiGLU and bias-dropout-add;
    - attention_backend: auto lets TE pick flash (flash-attn or TE's own) or cuDNN fused attention
      per shape; the local spec uses torch SDPA (its own flash / memory-efficient kernels).
    On the CPU every switch is off: the fused kernels are CUDA kernels."""
    from megatron.core.transformer.enums import AttnBackend

    te_rope = False
    if gpu and use_te:
        from megatron.core.models.common.embeddings import rope_utils

        te_rope = getattr(rope_utils, "fused_apply_rotary_pos_emb", None) is not None
    return {
        "gradient_accumulation_fusion": gpu and (use_te or features.has_apex_wgrad_fusion()),
        "apply_rope_fusion": te_rope,
        "bias_activation_fusion": gpu,
        "bias_dropout_fusion": gpu,
        "masked_softmax_fusion": False,  # only megatron's local DotProductAttention uses it; we use SDPA or TE
        "attention_backend": AttnBackend.auto,
    }


def transformer_config(
    cfg: ModelConfig, par: ParallelConfig, params_dtype: torch.dtype, pg_sizes: Optional[dict] = None,
    deterministic: bool = False,
) -> TransformerConfig:
    """The one translation from our model/parallel config to megatron's TransformerConfig
    (`deterministic`: megatron's deterministic_mode, see megatron_ext.determinism)."""
    bf16 = params_dtype == torch.bfloat16
    recompute = {
        "none": {},
        "full": {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1},
        "selective": {"recompute_granularity": "selective"},
    }[par.recompute]
    return TransformerConfig(
        num_layers=cfg.num_layers,
        hidden_size=cfg.hidden_size,
        ffn_hidden_size=cfg.ffn_hidden_size,
        num_attention_heads=cfg.num_attention_heads,
        num_query_groups=cfg.query_groups,
        kv_channels=cfg.hidden_size // cfg.num_attention_heads,
        normalization="RMSNorm",
        layernorm_epsilon=cfg.norm_epsilon,
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=cfg.qkv_bias,
        hidden_dropout=0.0,
        attention_dropout=0.0,
        init_method_std=cfg.init_method_std,
        tensor_model_parallel_size=par.tensor_model_parallel_size,
        pipeline_model_parallel_size=par.pipeline_model_parallel_size,
        sequence_parallel=par.sequence_parallel,
        params_dtype=params_dtype,
        bf16=bf16,
        pipeline_dtype=params_dtype,
        autocast_dtype=params_dtype,
        use_cpu_initialization=True,
        perform_initialization=False,  # init_weights() does it, layout-independently
        calculate_per_token_loss=True,  # loss = token mean over the whole global batch, any layout
        persist_layer_norm=False,
        **fusion_settings(use_transformer_engine(cfg), on_gpu()),
        deallocate_pipeline_outputs=True,
        deterministic_mode=deterministic,
        **recompute,
    )


class RMSNorm(torch.nn.Module):
    """RMSNorm for the local (no-TE) spec; with sequence parallelism its weight gradient is
    all-reduced across TP by megatron's finalize_model_grads, which looks for `sequence_parallel`."""

    def __init__(self, config: TransformerConfig, hidden_size: int, eps: float = 1e-5, **_: object) -> None:
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, dtype=config.params_dtype))
        self.weight.sequence_parallel = config.sequence_parallel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, (x.shape[-1],), self.weight, self.eps)


class SDPAttention(MegatronModule):
    """Core attention with torch's scaled_dot_product_attention, drop-in for megatron's
    DotProductAttention: takes q [sq, b, np, hn], k/v [sk, b, ng, hn], returns [sq, b, np*hn]."""

    def __init__(
        self,
        config: TransformerConfig,
        layer_number: int,
        attn_mask_type: AttnMaskType,
        attention_type: str = "self",
        attention_dropout: Optional[float] = None,
        softmax_scale: Optional[float] = None,
        **_: object,
    ) -> None:
        super().__init__(config=config)
        if config.context_parallel_size != 1:
            raise ValueError("SDPAttention does not support context parallelism; use the TE spec")
        self.attn_mask_type = attn_mask_type
        self.softmax_scale = softmax_scale
        self.dropout = config.attention_dropout if attention_dropout is None else attention_dropout

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        attention_mask: Optional[torch.Tensor],
        attn_mask_type: Optional[AttnMaskType] = None,
        attention_bias: Optional[torch.Tensor] = None,
        packed_seq_params: object = None,
    ) -> torch.Tensor:
        if packed_seq_params is not None:  # document masking: causal within each packed sequence
            from megatron_ext.attention_mask import block_diagonal_attention

            return block_diagonal_attention(query, key, value, packed_seq_params, self.softmax_scale,
                                            self.dropout if self.training else 0.0)
        sq, b, heads, dim = query.shape
        q = query.permute(1, 2, 0, 3)  # [b, np, sq, hn]
        k = key.permute(1, 2, 0, 3)
        v = value.permute(1, 2, 0, 3)
        mask_type = attn_mask_type or self.attn_mask_type
        causal = attention_mask is None and mask_type == AttnMaskType.causal
        mask = None
        if attention_mask is not None:  # megatron masks are True where attention is NOT allowed
            mask = ~attention_mask
        out = F.scaled_dot_product_attention(
            q, k, v,
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
            is_causal=causal,
            scale=self.softmax_scale,
            enable_gqa=k.shape[1] != heads,
        )
        return out.permute(2, 0, 1, 3).reshape(sq, b, heads * dim)


class SwiGLUMLP(MLP):
    """megatron's MLP for the local spec with the SwiGLU written as `silu(gate) * up`.

    megatron's unfused gated path computes `silu(gate) * (up + glu_linear_offset)`: with the offset
    0.0 (Llama) that sum is a full extra pass over the [s, b, ffn] activations, forward and
    backward, for the same values. Anything else (an offset, clamping, fused or TE activations,
    per-token scales) goes through megatron's own forward."""

    def forward(self, hidden_states: torch.Tensor, per_token_scale: Optional[torch.Tensor] = None, **kwargs):
        c = self.config
        plain_swiglu = (
            per_token_scale is None
            and c.gated_linear_unit
            and not c.bias_activation_fusion
            and not getattr(c, "use_te_activation_func", False)
            and getattr(c, "activation_func_clamp_value", None) is None
            and getattr(c, "glu_linear_offset", 0.0) == 0.0
        )
        if not plain_swiglu:
            return super().forward(hidden_states, per_token_scale=per_token_scale, **kwargs)
        x, bias = self.linear_fc1(hidden_states)
        if bias is not None:
            x = x + bias
        gate, up = torch.chunk(x, 2, dim=-1)  # fc1's weight is [gate; up] on every TP rank
        return self.linear_fc2(c.activation_func(gate) * up)


class _RopeCosSin:
    """cos/sin of the rotary frequencies, computed once per frequency tensor.

    Every layer's attention receives the very same `freqs` tensor (megatron's RotaryEmbedding even
    caches it across steps), while megatron's unfused RoPE recomputes cos and sin for q and for k
    in every layer."""

    def __init__(self) -> None:
        self._key: Optional[tuple] = None
        self._freqs: Optional[torch.Tensor] = None
        self._value: Optional[tuple[torch.Tensor, torch.Tensor]] = None

    def get(self, freqs: torch.Tensor, mscale: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        key = (freqs._version, mscale, dtype, torch.is_inference_mode_enabled())
        if self._freqs is not freqs or self._key != key:
            with torch.no_grad():
                self._value = ((torch.cos(freqs) * mscale).to(dtype), (torch.sin(freqs) * mscale).to(dtype))
            self._freqs, self._key = freqs, key
        return self._value


def install_cached_rope() -> bool:
    """Route megatron's attention through the cached RoPE path when it can take it.

    The path computes exactly what megatron's unfused `_apply_rotary_pos_emb_bshd` computes,
    `t * cos + rotate_half(t) * sin` with cos/sin = (cos/sin(freqs) * mscale) in t's dtype, but takes
    cos/sin from `_RopeCosSin` and skips the concatenation with the (empty) non-rotary part, a copy
    of q and k per layer. Anything else (fused TE RoPE, packed sequences, interleaved or partial
    rotary dimensions, multi-latent attention) is handed to megatron's own function. Installed only
    for the local (no-TE) spec; returns False when this megatron-core has no such hook."""
    import megatron.core.transformer.attention as attention
    from megatron.core.models.common.embeddings import rope_utils

    current = getattr(attention, "apply_rotary_pos_emb", None)
    if getattr(current, "_cpt_cached_rope", False):
        return True
    if current is None or current is not getattr(rope_utils, "apply_rotary_pos_emb", None):
        return False
    original = current
    cos_sin = _RopeCosSin()

    def apply_rotary_pos_emb(t, freqs, config, cu_seqlens=None, mscale=1.0, **kwargs):
        if (
            getattr(config, "apply_rope_fusion", False)
            or cu_seqlens is not None
            or getattr(config, "rotary_interleaved", False)
            or getattr(config, "multi_latent_attention", False)
            or freqs.shape[-1] != t.shape[-1]
        ):
            return original(t, freqs, config=config, cu_seqlens=cu_seqlens, mscale=mscale, **kwargs)
        cos, sin = cos_sin.get(freqs, mscale, t.dtype)
        x1, x2 = torch.chunk(t, 2, dim=-1)
        return (t * cos) + (torch.cat((-x2, x1), dim=-1) * sin)

    apply_rotary_pos_emb._cpt_cached_rope = True
    attention.apply_rotary_pos_emb = apply_rotary_pos_emb
    return True


class LlamaGPTModel(GPTModel):
    """megatron's GPTModel whose loss is `megatron_ext.loss.cross_entropy`: at any TP, on the logits
    in their own dtype (no fp32 copy of the [s, b, V] tensor), with the padded vocabulary rows left
    out of the softmax (`real_vocab_size` is the tokenizer's vocabulary, before padding)."""

    def __init__(self, *args, real_vocab_size: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.real_vocab_size = real_vocab_size

    def compute_language_model_loss(self, labels: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        s, b, v = logits.shape
        group = _tp_group(self)
        loss = cross_entropy(logits.reshape(s * b, v), labels.transpose(0, 1).reshape(s * b),
                             self.real_vocab_size, group)
        return loss.view(s, b).transpose(0, 1).contiguous()  # [b, s], as megatron returns it


def _tp_group(model: GPTModel):
    pgs = getattr(model, "pg_collection", None)
    if pgs is not None and getattr(pgs, "tp", None) is not None:
        return pgs.tp
    from megatron.core import parallel_state

    return parallel_state.get_tensor_model_parallel_group()


FUSIONS = ("gradient_accumulation_fusion", "apply_rope_fusion", "bias_activation_fusion", "bias_dropout_fusion",
           "masked_softmax_fusion")


def kernel_summary(cfg: ModelConfig, config: TransformerConfig) -> dict[str, object]:
    """Which layer spec, attention kernels and fusions this model runs with (the run's first line)."""
    have = features.summary()
    if use_transformer_engine(cfg):
        spec = "transformer_engine"
        flash = f"flash-attn {have['flash_attn']}" if have["flash_attn"] else "TE's own flash"
        attention = f"TE DotProductAttention (backend {config.attention_backend.name}: {flash} or cuDNN fused)"
    else:
        spec = "local"
        attention = "torch SDPA" if cfg.attention_backend in ("auto", "sdpa") else "megatron local (unfused)"
    return {
        "spec": spec,
        "attention": attention,
        "fusions": {name: bool(getattr(config, name)) for name in FUSIONS},
        "loss": "chunked vocab-parallel cross entropy on the logits' dtype, padded rows masked",
        "transformer_engine": have["transformer_engine"],
        "flash_attn": have["flash_attn"],
        "apex": have["apex"],
    }


def layer_spec(cfg: ModelConfig) -> tuple[ModuleSpec, type]:
    """The transformer layer spec and the final-norm class for this machine."""
    if use_transformer_engine(cfg):
        from megatron.core.extensions.transformer_engine import TENorm
        from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

        return get_gpt_layer_with_transformer_engine_spec(), TENorm
    spec = get_gpt_layer_local_spec(normalization="RMSNorm")
    spec = dataclasses.replace(spec)
    sub = spec.submodules
    sub.input_layernorm = RMSNorm
    sub.pre_mlp_layernorm = RMSNorm
    install_cached_rope()
    if cfg.attention_backend in ("auto", "sdpa"):
        sub.self_attention.submodules.core_attention = SDPAttention
    return spec, RMSNorm


def build_model(
    cfg: ModelConfig, par: ParallelConfig, params_dtype: torch.dtype, seq_length: int,
    pre_process: bool, post_process: bool, vp_stage: Optional[int] = None, deterministic: bool = False,
) -> GPTModel:
    """One pipeline stage of the GPT model (parallel state must be initialised)."""
    from megatron.core.transformer.transformer_block import get_num_layers_to_build

    tconf = transformer_config(cfg, par, params_dtype, deterministic=deterministic)
    spec, norm = layer_spec(cfg)
    n_local = get_num_layers_to_build(tconf, vp_stage=vp_stage)
    block = ModuleSpec(
        module=TransformerBlock,
        submodules=TransformerBlockSubmodules(layer_specs=[spec] * n_local, layer_norm=norm),
    )
    rope = {}
    if cfg.rope_scaling is not None:
        rope = {"rope_scaling": True, "rope_scaling_factor": cfg.rope_scaling.factor}
    model = LlamaGPTModel(
        config=tconf,
        transformer_layer_spec=block,
        vocab_size=padded_vocab_size(cfg, par.tensor_model_parallel_size),
        max_sequence_length=max(seq_length, cfg.max_position_embeddings),
        pre_process=pre_process,
        post_process=post_process,
        share_embeddings_and_output_weights=cfg.tie_embeddings,
        position_embedding_type="rope",
        real_vocab_size=cfg.vocab_size,
        rotary_base=int(cfg.rotary_base) if float(cfg.rotary_base).is_integer() else cfg.rotary_base,
        **rope,
    )
    if norm is RMSNorm:  # the local spec
        use_swiglu_mlp(model)
    mark_tensor_parallel(model)
    return model


def use_swiglu_mlp(model: torch.nn.Module) -> None:
    """Turn every megatron `MLP` of the model into a `SwiGLUMLP` (same parameters and state, only
    the forward differs). Done on the built modules rather than in the layer spec because
    megatron's TransformerLayer hands the TP group only to a spec whose module is exactly `MLP`."""
    for module in model.modules():
        if type(module) is MLP:
            module.__class__ = SwiGLUMLP


# Tensor-parallel split dimension of each parameter kind (suffix of its name); everything else is
# replicated across TP ranks. The same table drives init and HF conversion.
TP_SPLIT_DIM = {
    "word_embeddings.weight": 0,
    "output_layer.weight": 0,
    "linear_qkv.weight": 0,
    "linear_qkv.bias": 0,
    "linear_fc1.weight": 0,
    "linear_proj.weight": 1,
    "linear_fc2.weight": 1,
}


def tp_split_dim(name: str) -> int | None:
    for suffix, dim in TP_SPLIT_DIM.items():
        if name.endswith(suffix):
            return dim
    return None


def mark_tensor_parallel(model: torch.nn.Module) -> None:
    """Set megatron's tensor-parallel attributes on every parameter.

    megatron sets them only when it initialises weights itself (perform_initialization); without
    them its gradient-norm code would count TP-sharded weights as duplicates."""
    for name, param in model.named_parameters():
        dim = tp_split_dim(name)
        if dim is not None:
            param.tensor_model_parallel = True
            param.partition_dim = dim
            param.partition_stride = 1


# ------------------------------------------------------------------ layout-independent init


def _global_name(model: torch.nn.Module, name: str, layer_offset: int) -> str:
    parts = name.split(".")
    if len(parts) > 2 and parts[0] == "decoder" and parts[1] == "layers":
        parts[2] = str(int(parts[2]) + layer_offset)
    return ".".join(parts)


def _seed_for(seed: int, name: str) -> int:
    digest = hashlib.sha256(f"{seed}:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def _full_init(name: str, shape: tuple[int, ...], cfg: ModelConfig, seed: int) -> torch.Tensor:
    if name.endswith("layernorm.weight") or name.endswith("norm.weight") or name.endswith("layer_norm_weight"):
        return torch.ones(shape)
    if name.endswith("bias"):
        return torch.zeros(shape)
    std = cfg.init_method_std
    if name.endswith("linear_proj.weight") or name.endswith("linear_fc2.weight"):
        std = std / math.sqrt(2.0 * cfg.num_layers)
    gen = torch.Generator().manual_seed(_seed_for(seed, name))
    return torch.randn(shape, generator=gen) * std


def init_weights(model: GPTModel, cfg: ModelConfig, tp_rank: int, tp_size: int, seed: int) -> None:
    """Initialise every parameter from its global name, keeping this rank's TP shard.

    Column-parallel weights are split along dim 0, row-parallel along dim 1; the SwiGLU fc1 weight
    is [gate; up] and each rank holds [gate_r; up_r]. The vocabulary dimension is the padded one.
    """
    layer_offset = _layer_offset(model)
    with torch.no_grad():
        for name, param in model.named_parameters():
            gname = _global_name(model, name, layer_offset)
            if cfg.tie_embeddings and gname == "output_layer.weight":
                gname = "embedding.word_embeddings.weight"  # last stage's copy of the tied weight
            shape = list(param.shape)
            dim = tp_split_dim(gname)
            if dim is not None:
                shape[dim] *= tp_size
            full = _full_init(gname, tuple(shape), cfg, seed)
            if dim is not None and tp_size > 1:
                if gname.endswith("linear_fc1.weight"):
                    gate, up = full.chunk(2, dim=0)
                    local = torch.cat([gate.chunk(tp_size, 0)[tp_rank], up.chunk(tp_size, 0)[tp_rank]], 0)
                else:
                    local = full.chunk(tp_size, dim=dim)[tp_rank]
            else:
                local = full
            param.copy_(local.to(param.dtype))


def _layer_offset(model: GPTModel) -> int:
    layers = getattr(model.decoder, "layers", None)
    if layers:
        return layers[0].layer_number - 1  # layer_number is global and 1-based
    return 0
