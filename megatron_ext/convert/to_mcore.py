"""HF Llama-family folder → megatron-core distributed checkpoint (weights only).

The checkpoint is written by megatron's own `dist_checkpointing.save` from ShardedTensors built here
one HF tensor group at a time, with exactly the keys, global shapes and layer offsets that
`GPTModel.sharded_state_dict()` produces, so the trainer loads it with any TP/PP (the format is
layout-independent; only the vocabulary padding depends on the target TP, and `--tp/--pp` are also
checked against the model's heads/groups/FFN/layers here, before anything is written). Each tensor
is written whole (replica 0) from this one process; megatron's loader reads every rank's slice of it.

Memory: every HF tensor's presence and shape is checked from the file headers first (`preflight`);
then each converted tensor is parked in a file-backed scratch map (`scratch.ScratchStore`), so the
anonymous memory held is about one tensor group, not the model (measured: +9 MB for SmolLM2's 513 MB).
The scratch files take the model's size on disk beside the output until the save returns.

The folder holds: the dist checkpoint, `trainer_state.json` (`weights_only`: a run started from it
begins at step 0 with a fresh optimizer), `model.yaml` (the recipe's `model:` section to train it),
`hf/` (the source's config, tokenizer and generation config, used again by an export),
`convert_summary.json`, and `COMPLETE`, written last after the folder is renamed into place.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from cpt.config import ModelConfig
from cpt.io import atomic_dir, write_text_atomic
from cpt.train.checkpoint import COMPLETE
from megatron_ext.convert import files
from megatron_ext.convert.errors import ConversionError
from megatron_ext.convert.hf_config import model_config_from_hf, model_config_to_dict, read_hf_config
from megatron_ext.convert.hf_io import HFWeights
from megatron_ext.convert.scratch import ScratchStore
from megatron_ext.convert.mapping import EXTRA_STATE_KEYS, EXTRA_STATE_SINGLE_KEYS, TensorSpec, tensor_specs

HF_SUBDIR, TRAINER_STATE_FILE = files.HF_SUBDIR, files.TRAINER_STATE_FILE


def _padded_vocab_size(cfg: ModelConfig, tp: int) -> int:
    from megatron_ext.model import padded_vocab_size  # imports megatron: only once the input is known good

    return padded_vocab_size(cfg, tp)


def check_layout(cfg: ModelConfig, tp: int, pp: int) -> None:
    """Refuse a TP/PP the model cannot be split into, naming both numbers."""
    if tp < 1 or pp < 1:
        raise ConversionError(f"--tp {tp} / --pp {pp}: must be >= 1")
    for name, value in (("num_attention_heads", cfg.num_attention_heads), ("num_key_value_heads", cfg.query_groups),
                        ("intermediate_size", cfg.ffn_hidden_size)):
        if value % tp:
            raise ConversionError(f"--tp {tp} does not divide the model's {name}={value}")
    if cfg.num_layers % pp:
        raise ConversionError(f"--pp {pp} does not divide the model's num_hidden_layers={cfg.num_layers}")


def _sharded(spec: TensorSpec, tensor: torch.Tensor, layer: int | None, num_layers: int):
    from megatron.core.dist_checkpointing import ShardedTensor

    if layer is None:
        return ShardedTensor.from_rank_offsets(spec.key, tensor, replica_id=0)
    return ShardedTensor.from_rank_offsets(spec.key, tensor, (0, layer, num_layers), replica_id=0, prepend_axis_num=1)


def _extra_states(layer: int, num_layers: int) -> dict[str, Any]:
    from megatron.core.dist_checkpointing import ShardedObject

    out = {f"{key}.{layer}": ShardedObject(key, None, (num_layers,), (layer,), replica_id=0)
           for key in EXTRA_STATE_KEYS}
    if layer == 0:
        out.update({key: ShardedObject(key, None, (1,), (0,), replica_id=0) for key in EXTRA_STATE_SINGLE_KEYS})
    return out


def preflight(weights: HFWeights, cfg: ModelConfig, padded_vocab: int) -> None:
    """Every HF tensor the model needs is present with its shape, and none is left over; read from
    the file headers, so bad input is refused before megatron is imported or anything is written."""
    used: set[str] = set()
    for spec in tensor_specs(cfg, padded_vocab):
        for layer in (range(cfg.num_layers) if spec.per_layer else [None]):
            for name, shape in zip(spec.names(layer), spec.hf_shapes):
                weights.check(name, shape)
                used.add(name)
    unused = sorted(weights.names() - used - _ignorable(cfg))
    if unused:
        raise ConversionError(f"{weights.folder}: tensors not understood by the converter: {unused[:5]}"
                              f"{' ...' if len(unused) > 5 else ''}")


def build_state(weights: HFWeights, cfg: ModelConfig, padded_vocab: int, dtype: torch.dtype | None,
                scratch: ScratchStore | None = None) -> dict[str, Any]:
    """megatron ShardedTensors of every model tensor, converted one group of HF tensors at a time
    (each moved to a file-backed `scratch` copy when given, so memory holds about one group)."""
    state: dict[str, Any] = {}
    for spec in tensor_specs(cfg, padded_vocab):
        layers = range(cfg.num_layers) if spec.per_layer else [None]
        for layer in layers:
            names = spec.names(layer)
            parts = [weights.get(n, s) for n, s in zip(names, spec.hf_shapes)]
            tensor = spec.fuse(*parts)
            if dtype is not None:
                tensor = tensor.to(dtype)
            if scratch is not None:
                tensor = scratch.put(tensor)
            state[spec.key if layer is None else f"{spec.key}.{layer}"] = _sharded(spec, tensor, layer, cfg.num_layers)
            del parts
    for layer in range(cfg.num_layers):
        state.update(_extra_states(layer, cfg.num_layers))
    return state


def _ignorable(cfg: ModelConfig) -> set[str]:
    """HF tensors that carry nothing megatron needs: a saved copy of a tied head, RoPE buffers."""
    extra = {"lm_head.weight"} if cfg.tie_embeddings else set()
    return extra | {f"model.layers.{i}.self_attn.rotary_emb.inv_freq" for i in range(cfg.num_layers)}


def hf_to_mcore(hf_dir: str | Path, out_dir: str | Path, tp: int = 1, pp: int = 1, dtype: torch.dtype | None = None,
                make_vocab_size_divisible_by: int = 128, overwrite: bool = False) -> dict[str, Any]:
    """Convert; returns the summary written to `convert_summary.json`."""
    start = time.perf_counter()
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    cfg = model_config_from_hf(read_hf_config(hf_dir), str(hf_dir / "config.json"), make_vocab_size_divisible_by)
    check_layout(cfg, tp, pp)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    weights = HFWeights(hf_dir)
    preflight(weights, cfg, cfg.vocab_size)  # HF shapes are unpadded
    padded = _padded_vocab_size(cfg, tp)
    with atomic_dir(out_dir, "replace" if overwrite else "error") as tmp:
        summary = _write(weights, cfg, padded, dtype, hf_dir, out_dir, tmp, tp, pp, start)
    write_text_atomic(out_dir / COMPLETE, "0\n")
    return summary


def _write(weights: HFWeights, cfg: ModelConfig, padded: int, dtype: torch.dtype | None, hf_dir: Path, out_dir: Path,
           tmp: Path, tp: int, pp: int, start: float) -> dict[str, Any]:
    from megatron.core import dist_checkpointing

    from megatron_ext.convert.world import ensure_world

    ensure_world()
    scratch = ScratchStore(tmp.parent / f".{out_dir.name}.scratch")
    try:
        state = build_state(weights, cfg, padded, dtype, scratch)
        weights.close()
        dist_checkpointing.save({"model": state}, str(tmp))
    finally:
        scratch.remove()
    first = next(v for v in state.values() if hasattr(v, "data") and isinstance(v.data, torch.Tensor))
    ckpt_dtype = str(first.data.dtype).removeprefix("torch.")
    n_params = sum(v.data.numel() for v in state.values() if isinstance(getattr(v, "data", None), torch.Tensor))
    del state
    copied = files.copy_side_files(hf_dir, tmp / HF_SUBDIR)
    model = model_config_to_dict(cfg)
    trainer_state = {
        "weights_only": True, "step": 0, "consumed_tokens": 0, "source": f"hf:{hf_dir.resolve()}",
        "model": model, "layout": {"tp": tp, "pp": pp, "dp": 1}, "dtype": ckpt_dtype,
    }
    (tmp / TRAINER_STATE_FILE).write_text(json.dumps(trainer_state, indent=1, sort_keys=True))
    (tmp / "model.yaml").write_text(yaml.safe_dump({"model": model}, sort_keys=False))
    summary = {
        "direction": "hf-to-mcore", "source": str(hf_dir), "output": str(out_dir), "tp": tp, "pp": pp,
        "parameters": n_params, "vocab_size": cfg.vocab_size, "padded_vocab_size": padded, "dtype": ckpt_dtype,
        "copied_files": copied, "seconds": round(time.perf_counter() - start, 3),
    }
    (tmp / "convert_summary.json").write_text(json.dumps(summary, indent=1))
    return summary
