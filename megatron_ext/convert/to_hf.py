"""megatron-core distributed checkpoint (an import, or any training checkpoint) → HF folder.

Streaming: the checkpoint's DCP metadata gives every tensor's global shape without reading data;
then each layer's tensors are read on their own (one slice of the stacked layer axis, see
`dcp_read`), split into HF tensors, and handed to a shard writer that keeps at most one
output shard in memory. The vocabulary padding is dropped. Optimizer state in a training
checkpoint is never read.

config.json, tokenizer files and generation_config.json come from a reference HF folder: the
import's `hf/` copy when the checkpoint is an import, else `--hf-reference` (an HF folder or an
import folder); without one, config.json is built by transformers from the model config and no
tokenizer is written (the summary says so).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch

from cpt.config import ModelConfig
from cpt.io import atomic_dir
from cpt.train.checkpoint import resolve_load_path
from megatron_ext.convert import files
from megatron_ext.convert.files import HF_SUBDIR, TRAINER_STATE_FILE
from megatron_ext.convert.dcp_read import CheckpointTensors
from megatron_ext.convert.errors import ConversionError
from megatron_ext.convert.hf_config import hf_config_from_model, model_config_from_dict, read_hf_config
from megatron_ext.convert.hf_io import ShardedSafetensorsWriter
from megatron_ext.convert.mapping import ALTERNATE_KEYS, TensorSpec, megatron_shape, tensor_specs

DEFAULT_MAX_SHARD_BYTES = 5 * 2**30


def checkpoint_model(ckpt: Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model config saved with a checkpoint: `model` (imports) or `recipe.model` (training)."""
    path = ckpt / TRAINER_STATE_FILE
    if not path.is_file():
        raise ConversionError(f"{path}: missing; not a cpt checkpoint folder")
    state = json.loads(path.read_text())
    model = state.get("model") or (state.get("recipe") or {}).get("model")
    if not model:
        raise ConversionError(f"{path}: holds no model config ('model' or 'recipe.model')")
    return model_config_from_dict(model), state


def _reference(ckpt: Path, hf_reference: Path | None) -> Path | None:
    for folder in ([hf_reference] if hf_reference else []) + [ckpt]:
        if (folder / HF_SUBDIR / "config.json").is_file():
            return folder / HF_SUBDIR
        if folder is hf_reference:
            if not (folder / "config.json").is_file():
                raise ConversionError(f"{folder}: --hf-reference has no config.json (nor {HF_SUBDIR}/config.json)")
            return folder
    return None


class _Reader:
    """Checks a checkpoint's model tensors against the model config and reads them per layer."""

    def __init__(self, ckpt: Path, cfg: ModelConfig) -> None:
        self.ckpt, self.cfg = ckpt, cfg
        self.tensors = CheckpointTensors(ckpt)
        emb = "embedding.word_embeddings.weight"
        if emb not in self.tensors:
            raise ConversionError(f"{ckpt}: tensor {emb!r} is missing from the checkpoint")
        self.padded_vocab = self.tensors.shape(emb)[0]
        if self.padded_vocab < cfg.vocab_size:
            raise ConversionError(f"{ckpt}: tensor {emb!r} has {self.padded_vocab} rows, "
                                  f"fewer than vocab_size={cfg.vocab_size}")
        self.dtype = self.tensors.dtype(emb)
        self.keys: dict[str, str] = {}

    def resolve(self, spec: TensorSpec) -> None:
        key = spec.key if spec.key in self.tensors else ALTERNATE_KEYS.get(spec.key)
        if key is None or key not in self.tensors:
            raise ConversionError(f"{self.ckpt}: tensor {spec.key!r} is missing from the checkpoint")
        want = megatron_shape(spec, self.cfg, self.padded_vocab)
        if spec.per_layer:
            want = (self.cfg.num_layers, *want)
        got = self.tensors.shape(key)
        if got != want:
            raise ConversionError(f"{self.ckpt}: tensor {key!r} has shape {got}, expected {want} from the model config")
        self.keys[spec.key] = key

    def load(self, specs: list[TensorSpec], layer: int | None) -> dict[str, torch.Tensor]:
        got = self.tensors.read([self.keys[s.key] for s in specs], layer)
        return {s.key: got[self.keys[s.key]] for s in specs}


def _emit(writer: ShardedSafetensorsWriter, spec: TensorSpec, tensor: torch.Tensor, layer: int | None) -> None:
    for name, part in zip(spec.names(layer), spec.split(tensor)):
        writer.add(name, part)


def mcore_to_hf(ckpt_dir: str | Path, out_dir: str | Path, hf_reference: str | Path | None = None,
                max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, overwrite: bool = False) -> dict[str, Any]:
    """Export; returns the summary written to `convert_summary.json`. The checkpoint is held while
    it is read (a training run's retention leaves it alone meanwhile)."""
    from cpt.train.checkpoint import reading

    ckpt = resolve_load_path(ckpt_dir)
    with reading(ckpt):
        return _export(ckpt, Path(out_dir), hf_reference, max_shard_bytes, overwrite)


def _export(ckpt: Path, out_dir: Path, hf_reference: str | Path | None, max_shard_bytes: int,
            overwrite: bool) -> dict[str, Any]:
    start = time.perf_counter()
    cfg, _ = checkpoint_model(ckpt)
    ref = _reference(ckpt, Path(hf_reference) if hf_reference else None)
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir}: already exists (pass --overwrite to replace it)")
    reader = _Reader(ckpt, cfg)
    specs = tensor_specs(cfg, reader.padded_vocab)
    for spec in specs:
        reader.resolve(spec)
    with atomic_dir(out_dir, "replace" if overwrite else "error") as tmp:
        writer = ShardedSafetensorsWriter(tmp, max_shard_bytes)
        head = [s for s in specs if not s.per_layer and s.key == "embedding.word_embeddings.weight"]
        layer_specs = [s for s in specs if s.per_layer]
        tail = [s for s in specs if not s.per_layer and s not in head]
        for spec in head:
            _emit(writer, spec, reader.load([spec], None)[spec.key], None)
        for layer in range(cfg.num_layers):
            loaded = reader.load(layer_specs, layer)
            for spec in layer_specs:
                _emit(writer, spec, loaded[spec.key], layer)
            del loaded
        for spec in tail:
            _emit(writer, spec, reader.load([spec], None)[spec.key], None)
        weight_files = writer.finish()
        dtype = str(reader.dtype).removeprefix("torch.")
        base = read_hf_config(ref) if ref is not None else None
        config = hf_config_from_model(cfg, dtype, base)
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        copied = files.copy_side_files(ref, tmp, skip=("config.json",)) if ref is not None else []
        summary = {
            "direction": "mcore-to-hf", "source": str(ckpt), "output": str(out_dir), "weight_files": weight_files,
            "bytes": writer.total_bytes, "dtype": dtype, "padded_vocab_size_removed": reader.padded_vocab - cfg.vocab_size,
            "reference": str(ref) if ref else None, "copied_files": copied,
            "warnings": [] if ref else ["no reference HF folder: no tokenizer files; pass --hf-reference"],
            "seconds": round(time.perf_counter() - start, 3),
        }
        (tmp / "convert_summary.json").write_text(json.dumps(summary, indent=1))
    return summary
