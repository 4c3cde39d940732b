"""`cpt data build-cache RECIPE.yaml [key.path=value ...]`: build a recipe's index cache ahead of a job.

Builds (or finds) every stream's cache entry, train and valid splits, in `data.cache_dir` (default
`<training.output_dir>/data_cache`) exactly as `cpt train` would, e.g. on a CPU node before the
GPU job starts; the job's ranks then only memory-map it. Prints one line per stream and a JSON
summary, also written to `<cache_dir>/build-cache.summary.json`.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser("build-cache", help="build the on-disk index cache of a recipe's streams",
                       description="build the on-disk index cache of a recipe's streams (train and valid splits)")
    p.add_argument("recipe", help="recipe YAML file")
    p.add_argument("overrides", nargs="*", help="key.path=value overrides, applied in order")


def run(args: argparse.Namespace) -> int:
    from cpt.config import RecipeError, load_recipe

    try:
        recipe = load_recipe(args.recipe, args.overrides)
    except RecipeError as exc:
        print(f"recipe error: {exc}", file=sys.stderr)
        return 2
    if not recipe.data.streams:
        print("cpt data build-cache: the recipe has no data.streams (data.blend is cached by megatron itself)",
              file=sys.stderr)
        return 2
    try:
        summary = build_cache(recipe)
    except RecipeError as exc:  # e.g. a pass budget shorter than one step
        print(f"recipe error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:  # a missing shard, a stream with no documents
        print(f"data error: {exc}", file=sys.stderr)
        return 2
    for s in summary["streams"]:
        print(f"{s['split']:5s} {s['name']:24s} {'hit ' if s['hit'] else 'built'} {s['documents']:>12,d} documents "
              f"{s['tokens']:>16,d} tokens")
    print(json.dumps({k: v for k, v in summary.items() if k != "streams"}))
    return 0


def build_cache(recipe) -> dict:
    """Open (building where missing) the cache entries of every stream; the summary of what was done."""
    import cpt.io
    from cpt.train.budget import resolve_budget, train_samples
    from cpt.train.stream_data import build_streams

    start = time.perf_counter()
    tables: dict = {}
    recipe, budget = resolve_budget(recipe, tables)  # the run's own samples, also with a budget in passes
    t, d = recipe.training, recipe.data
    cache = d.cache_dir or str(Path(t.output_dir) / "data_cache")
    rows = []
    samples = train_samples(recipe)
    for split in ("train", "valid"):
        for stream in build_streams(d.streams, t.seq_length, split, d.valid_holdout, d.valid_holdout_seed,
                                    cache_dir=cache, tables=tables, samples=samples):
            rows.append({"split": split, "name": stream.name, "hit": bool(stream.cache_hit),
                         "documents": stream.num_documents, "tokens": stream.tokens_per_epoch,
                         "fingerprint": stream.fingerprint})
    summary = {"cache_dir": cache, "train_tokens": t.train_tokens, "train_samples": samples,
               "budget": budget.line() if budget else None, "streams_built": sum(not r["hit"] for r in rows),
               "streams_found": sum(r["hit"] for r in rows), "seconds": round(time.perf_counter() - start, 3),
               "streams": rows}
    cpt.io.write_json_atomic(Path(cache) / "build-cache.summary.json", summary)
    return summary
