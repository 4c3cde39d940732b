"""Wires a recipe to the megatron engine and its datasets, then runs the loop.

This is the composition root for training (with cpt.cli it is where `cpt` meets `megatron_ext`).
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from cpt.config import Recipe, RecipeError
from cpt.train.loop import Trainer, TrainingStopped


@dataclass
class TrainingData:
    """What the trainer reads: training samples, optional blend validation, per-stream validation."""

    train: Any
    valid: Optional[Any] = None
    valid_streams: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for source in (self.train, self.valid, *self.valid_streams.values()):
            if hasattr(source, "close"):
                source.close()


def build_training_data(recipe: Recipe, tables: Optional[dict] = None) -> TrainingData:
    """Training data from `data.blend` (megatron GPTDataset) or `data.streams` (the Blender), and
    validation from `data.valid_blend` and each stream's held-out documents (data.valid_holdout, or
    the stream's own valid_holdout; split off by doc_id hash before the training streams are built:
    disjoint). The recipe's budget must be in tokens (cpt.train.budget.resolve_budget); `tables`: the
    DocumentTables that resolution opened, reused here."""
    from cpt.train.budget import train_samples

    t, d = recipe.training, recipe.data
    if not d.blend and not d.streams:
        raise ValueError("data.blend: no training data given (data.blend or data.streams)")
    cache = d.cache_dir or str(Path(t.output_dir) / "data_cache")
    samples = train_samples(recipe)
    out = TrainingData(train=None)
    if d.streams:
        from cpt.train.stream_data import BlendedSamples, build_streams

        tables = {} if tables is None else tables  # one DocumentTable per shard set, shared by both splits
        out.train = BlendedSamples(
            build_streams(d.streams, t.seq_length, "train", d.valid_holdout, d.valid_holdout_seed,
                          cache_dir=cache, tables=tables, samples=samples),
            {s.name: s.weight for s in d.streams}, t.seq_length, d,
        )
        # only the streams with a held-out share (data.valid_holdout or their own) come back
        for stream in build_streams(d.streams, t.seq_length, "valid", d.valid_holdout, d.valid_holdout_seed,
                                    cache_dir=cache, tables=tables):
            out.valid_streams[stream.name] = BlendedSamples([stream], [1.0], t.seq_length, d, num_workers=0)
    else:
        from megatron_ext.datasets import build_dataset

        out.train = build_dataset(d.blend, d, samples, t.seq_length, t.seed, cache,
                                  recipe.model.vocab_size)
    if d.valid_blend:
        from megatron_ext.datasets import build_dataset

        out.valid = build_dataset(d.valid_blend, d, t.eval_batches * t.global_batch_size, t.seq_length, t.seed,
                                  cache, recipe.model.vocab_size)
    return out


def train_recipe(recipe: Recipe) -> int:
    from cpt.train.budget import resolve_budget
    from megatron_ext.engine import MegatronEngine

    tables: dict = {}
    try:
        recipe, budget = resolve_budget(recipe, tables)  # a budget in passes becomes tokens, before the engine
    except RecipeError as exc:
        print(f"recipe error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"data error: {exc}", file=sys.stderr)
        return 2
    engine = MegatronEngine(recipe)
    try:
        try:
            data = build_training_data(recipe, tables)
        except (FileNotFoundError, ValueError) as exc:
            print(f"data error: {exc}", file=sys.stderr)
            return 2
        try:
            trainer = Trainer(recipe, engine, data.train, data.valid, valid_streams=data.valid_streams)
        except ValueError as exc:
            print(f"recipe error: {exc}", file=sys.stderr)
            return 2
        if budget is not None:
            trainer.logger.event(trainer.state.step, budget.line(), budget=dataclasses.asdict(budget))
        try:
            trainer.resume()
        except (FileNotFoundError, ValueError) as exc:
            print(f"checkpoint error: {exc}", file=sys.stderr)
            return 2
        try:
            trainer.train()
        except RecipeError as exc:  # raised before the first step
            print(f"recipe error: {exc}", file=sys.stderr)
            return 2
        except TrainingStopped as exc:
            print(f"training stopped: {exc}", file=sys.stderr)
            return 3
        finally:
            engine.finish_saves(blocking=True)  # a background save commits while the run log is open
            trainer.logger.close()
            data.close()
        return 0
    finally:
        engine.close()
