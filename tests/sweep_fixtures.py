"""A tiny real sweep for the tests: the ~0.2M-parameter Llama of train_fixtures on two language streams
(real English and Chinese documents of a cpt shard), two training steps per run, per-stream held-out
validation at the end; arms differ in the peak learning rate."""
from __future__ import annotations

from pathlib import Path

import yaml

from train_fixtures import stream_recipe, write_lang_shards, write_recipe


def write_base(folder: Path, steps: int = 2, **training) -> Path:
    prefix = write_lang_shards(folder / "shards")
    recipe = stream_recipe(prefix, folder / "unused", training={
        "train_tokens": 64 * 8 * steps, "eval_every": 0, "eval_batches_per_stream": 1, "tensorboard": False,
        **training})
    recipe["model"].update(num_layers=2, hidden_size=32, ffn_hidden_size=64, num_attention_heads=2,
                           num_query_groups=1)
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
