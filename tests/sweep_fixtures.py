"""A tiny real sweep for the tests: the ~0.2M-parameter Llama of train_fixtures on two language streams
(real English and Chinese documents of a cpt shard), two training steps per run, per-stream held-out
validation at the end; arms differ in the peak learning rate. `write_imported_base` is the same on a
tiny HF Llama with SmolLM2's tokenizer imported first (as `cpt sweep prepare` imports the proxy), so
its checkpoints export to HF folders that `cpt eval` reads."""
from __future__ import annotations

from pathlib import Path

import yaml

from train_fixtures import stream_recipe, write_lang_shards, write_recipe

IMPORT = "models/base_mcore"
"""Where `write_imported_base` puts the import, relative to its folder (the sweep's workdir and model_from)."""


def write_base(folder: Path, steps: int = 2, **training) -> Path:
    prefix = write_lang_shards(folder / "shards")
    recipe = stream_recipe(prefix, folder / "unused", training={
        "train_tokens": 64 * 8 * steps, "eval_every": 0, "eval_batches_per_stream": 1, "tensorboard": False,
        **training})
    recipe["model"].update(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=2,
                           num_query_groups=1)
    recipe["data"]["valid_holdout"] = 0.2
    return write_recipe(folder / "base.yaml", recipe)


def write_imported_base(folder: Path, steps: int = 2) -> Path:
    """base.yaml in `folder` (the workdir): every run starts from a tiny random HF Llama with SmolLM2's
    tokenizer imported to IMPORT, on the two language streams tokenized with that tokenizer."""
    from transformers import AutoTokenizer

    from cpt.assets import smollm2_hf_dir
    from cpt.cli import main
    from cpt.demo.tiny_model import build_tiny_llama

    hf = folder / "tiny_hf"
    build_tiny_llama(hf, smollm2_hf_dir(), seed=0)
    if main(["convert", "hf-to-mcore", str(hf), str(folder / IMPORT)]) != 0:
        raise RuntimeError("importing the tiny HF Llama failed")
    prefix = write_lang_shards(folder / "shards", tokenizer=str(hf))
    recipe = stream_recipe(prefix, folder / "unused", training={
        "train_tokens": 64 * 8 * steps, "eval_every": 0, "eval_batches_per_stream": 1, "tensorboard": False,
        "load": IMPORT})
    recipe["data"]["eod_token_id"] = AutoTokenizer.from_pretrained(hf).eos_token_id
    recipe["data"]["valid_holdout"] = 0.2
    return write_recipe(folder / "base.yaml", recipe)


def write_sweep(folder: Path, recipe: Path, seeds=(1, 2), arms=None, **extra) -> Path:
    sweep = {
        "name": "tiny", "base": [{"stage": "s1", "recipe": str(recipe)}],
        "axes": {"lr": arms or {"lo": {"schedule.lr_max": 1e-3}, "hi": {"schedule.lr_max": 5e-3}}},
        "seeds": list(seeds), "seed_keys": ["training.seed", "data.streams.*.seed"],
        "report": {"baseline": "lo"}, **extra,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path
