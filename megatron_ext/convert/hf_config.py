"""HF `config.json` ⇄ `cpt.config.ModelConfig`, per architecture.

Only architectures whose every feature megatron's Llama-family GPTModel reproduces exactly are
accepted (RMSNorm, SwiGLU, RoPE with optional Llama-3 scaling, GQA, optional q/k/v biases); anything
else is refused with the config key that rules it out, because a silently different model is worse
than no conversion. Both the transformers 4 (`rope_theta`/`rope_scaling`) and 5 (`rope_parameters`)
spellings of RoPE settings are read.
"""
from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import Any

from cpt.config import ModelConfig, RopeScalingConfig
from megatron_ext.convert.errors import ConversionError

# model_type -> (architecture class name, q/k/v biases)
ARCHITECTURES: dict[str, tuple[str, bool]] = {
    "llama": ("LlamaForCausalLM", False),
    "mistral": ("MistralForCausalLM", False),
    "qwen2": ("Qwen2ForCausalLM", True),
}
# megatron's RotaryEmbedding applies Llama-3 scaling with these fixed values; only `factor` is passed
MEGATRON_LLAMA3_ROPE = {"low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def read_hf_config(hf_dir: Path) -> dict[str, Any]:
    path = Path(hf_dir) / "config.json"
    if not path.is_file():
        raise ConversionError(f"{path}: not found (an HF model folder needs config.json)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ConversionError(f"{path}: not valid JSON ({exc})") from None


def _rope(cfg: dict[str, Any], where: str) -> tuple[float, RopeScalingConfig | None]:
    params = cfg.get("rope_parameters") or {}
    theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
    scaling = cfg.get("rope_scaling") or (params if params.get("rope_type", "default") != "default" else None)
    if not scaling:
        return float(theta), None
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind != "llama3":
        raise ConversionError(f"{where}: rope scaling type {kind!r} is not supported (only 'llama3')")
    rs = RopeScalingConfig(
        factor=float(scaling["factor"]),
        low_freq_factor=float(scaling.get("low_freq_factor", 1.0)),
        high_freq_factor=float(scaling.get("high_freq_factor", 4.0)),
        original_max_position_embeddings=int(scaling.get("original_max_position_embeddings", 8192)),
    )
    for key, value in MEGATRON_LLAMA3_ROPE.items():
        if float(getattr(rs, key)) != float(value):
            raise ConversionError(
                f"{where}: rope scaling {key}={getattr(rs, key)} is not supported "
                f"(megatron's Llama-3 RoPE uses {value})"
            )
    return float(theta), rs


def _refuse(cond: bool, where: str, key: str, why: str) -> None:
    if cond:
        raise ConversionError(f"{where}: {key} {why}")


def model_config_from_hf(cfg: dict[str, Any], where: str, make_vocab_size_divisible_by: int = 128) -> ModelConfig:
    """The ModelConfig of an HF Llama/Mistral/Qwen2 config; `where` (the file) prefixes errors."""
    model_type = cfg.get("model_type")
    if model_type not in ARCHITECTURES:
        arch = cfg.get("architectures")
        raise ConversionError(
            f"{where}: model_type {model_type!r} (architectures {arch}) is not supported; "
            f"supported: {sorted(ARCHITECTURES)}"
        )
    _refuse(cfg.get("hidden_act", "silu") != "silu", where, "hidden_act", f"is {cfg.get('hidden_act')!r}, only 'silu' (SwiGLU)")
    _refuse(bool(cfg.get("attention_bias", False)), where, "attention_bias", "is true: an o_proj bias is not supported")
    _refuse(bool(cfg.get("mlp_bias", False)), where, "mlp_bias", "is true: MLP biases are not supported")
    hidden, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    head_dim = cfg.get("head_dim") or hidden // heads
    _refuse(head_dim * heads != hidden, where, "head_dim", f"{head_dim} x {heads} heads != hidden_size {hidden}")
    if model_type == "qwen2" and cfg.get("use_sliding_window"):
        raise ConversionError(f"{where}: use_sliding_window is true: sliding-window attention is not supported")
    window = cfg.get("sliding_window")
    if model_type == "mistral" and window and window < int(cfg.get("max_position_embeddings", 0)):
        warnings.warn(f"{where}: sliding_window={window} is not reproduced: sequences longer than it attend to more "
                      f"tokens in megatron than in transformers", stacklevel=2)
    theta, scaling = _rope(cfg, where)
    return ModelConfig(
        num_layers=int(cfg["num_hidden_layers"]),
        hidden_size=hidden,
        ffn_hidden_size=int(cfg["intermediate_size"]),
        num_attention_heads=heads,
        num_query_groups=int(cfg.get("num_key_value_heads") or heads),
        vocab_size=int(cfg["vocab_size"]),
        max_position_embeddings=int(cfg.get("max_position_embeddings", 4096)),
        rotary_base=theta,
        rope_scaling=scaling,
        norm_epsilon=float(cfg.get("rms_norm_eps", 1e-5)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=ARCHITECTURES[model_type][1],
        make_vocab_size_divisible_by=make_vocab_size_divisible_by,
    )


def model_config_to_dict(cfg: ModelConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def model_config_from_dict(data: dict[str, Any]) -> ModelConfig:
    data = dict(data)
    if data.get("rope_scaling") is not None:
        data["rope_scaling"] = RopeScalingConfig(**data["rope_scaling"])
    return ModelConfig(**data)


def hf_config_from_model(cfg: ModelConfig, dtype: str, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """config.json for an export: the source's own config when known (keeps token ids, names, extra
    fields) with the structural fields checked against `cfg`, else one built by transformers."""
    if base is not None:
        again = model_config_from_hf(base, "reference config.json", cfg.make_vocab_size_divisible_by)
        mine = dataclasses.replace(again, init_method_std=cfg.init_method_std, attention_backend=cfg.attention_backend)
        if mine != cfg:
            diff = [f"{f.name}: {getattr(mine, f.name)!r} vs {getattr(cfg, f.name)!r}"
                    for f in dataclasses.fields(cfg) if getattr(mine, f.name) != getattr(cfg, f.name)]
            raise ConversionError(f"reference config.json describes another model than the checkpoint "
                                  f"(reference vs checkpoint: {'; '.join(diff)})")
        out = dict(base)
    else:
        out = _transformers_config(cfg)
    out["dtype"] = dtype
    out.pop("torch_dtype", None)
    return out


def _transformers_config(cfg: ModelConfig) -> dict[str, Any]:
    import transformers

    name = "Qwen2Config" if cfg.qkv_bias else "LlamaConfig"
    rope: dict[str, Any] = {"rope_type": "default", "rope_theta": cfg.rotary_base}
    if cfg.rope_scaling is not None:
        rope = {"rope_type": "llama3", "rope_theta": cfg.rotary_base, **dataclasses.asdict(cfg.rope_scaling)}
    kwargs = dict(
        num_hidden_layers=cfg.num_layers, hidden_size=cfg.hidden_size, intermediate_size=cfg.ffn_hidden_size,
        num_attention_heads=cfg.num_attention_heads, num_key_value_heads=cfg.query_groups,
        vocab_size=cfg.vocab_size, max_position_embeddings=cfg.max_position_embeddings,
        rms_norm_eps=cfg.norm_epsilon, tie_word_embeddings=cfg.tie_embeddings, rope_parameters=rope,
    )
    config = getattr(transformers, name)(**kwargs)
    data = config.to_dict()
    data["architectures"] = ["Qwen2ForCausalLM" if cfg.qkv_bias else "LlamaForCausalLM"]
    return data
