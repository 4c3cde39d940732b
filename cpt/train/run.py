"""Wires a recipe to the megatron engine and its datasets, then runs the loop.

This is the composition root for training (with cpt.cli it is where `cpt` meets `megatron_ext`).
"""
from __future__ import annotations

import sys
from pathlib import Path

from cpt.config import Recipe
from cpt.train.loop import Trainer, TrainingStopped


def train_recipe(recipe: Recipe) -> int:
    from megatron_ext.datasets import build_dataset
    from megatron_ext.engine import MegatronEngine

    engine = MegatronEngine(recipe)
    t, d = recipe.training, recipe.data
    try:
        if not d.blend and not d.streams:
            print("recipe error: data.blend: no training data given (data.blend or data.streams)", file=sys.stderr)
            return 2
        cache = d.cache_dir or str(Path(t.output_dir) / "data_cache")
        tokens_per_step = t.global_batch_size * t.seq_length
        steps = -(-t.train_tokens // tokens_per_step)
        try:
            if d.streams:
                from cpt.train.stream_data import BlendedSamples, build_streams

                train = BlendedSamples(
                    build_streams(d.streams, t.seq_length), {s.name: s.weight for s in d.streams}, t.seq_length, d
                )
            else:
                train = build_dataset(
                    d.blend, d, steps * t.global_batch_size, t.seq_length, t.seed, cache, recipe.model.vocab_size
                )
            valid = None
            if d.valid_blend:
                valid = build_dataset(
                    d.valid_blend, d, t.eval_batches * t.global_batch_size, t.seq_length, t.seed, cache,
                    recipe.model.vocab_size,
                )
        except FileNotFoundError as exc:
            print(f"data error: {exc}", file=sys.stderr)
            return 2
        trainer = Trainer(recipe, engine, train, valid)
        try:
            trainer.resume()
        except (FileNotFoundError, ValueError) as exc:
            print(f"checkpoint error: {exc}", file=sys.stderr)
            return 2
        try:
            trainer.train()
        except TrainingStopped as exc:
            print(f"training stopped: {exc}", file=sys.stderr)
            return 3
        finally:
            trainer.logger.close()
        return 0
    finally:
        engine.close()
