"""`cpt train RECIPE.yaml [key.path=value ...]`: train a recipe, alone or under torchrun.

A recipe error exits with status 2 and one line naming the key, before anything heavy is built.
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", nargs="?", help="recipe YAML file")
    parser.add_argument("overrides", nargs="*", help="key.path=value overrides, applied in order")
    parser.add_argument("--describe", action="store_true", help="list every recipe key with its default and doc")
    parser.add_argument("--check", action="store_true", help="validate the recipe (and world size) and exit")
    parser.add_argument("--world-size", type=int, default=None, metavar="N",
                        help="with --check: validate the parallel layout for N processes (default: $WORLD_SIZE, else 1)")


def run(args: argparse.Namespace) -> int:
    from cpt.config import RecipeError, describe, load_recipe

    if args.describe:
        print("\n".join(describe()))
        return 0
    if not args.recipe:
        print("cpt train: a recipe file is required", file=sys.stderr)
        return 2
    if args.world_size is not None and not args.check:
        print("cpt train: --world-size goes with --check (a run's world size is the launcher's WORLD_SIZE)",
              file=sys.stderr)
        return 2
    if args.world_size is not None and args.world_size < 1:
        print(f"cpt train: --world-size must be >= 1, got {args.world_size}", file=sys.stderr)
        return 2
    import os

    world = args.world_size if args.world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        dp = recipe.check_world_size(world)
    except RecipeError as exc:
        print(f"recipe error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        par = recipe.parallel
        print(f"recipe ok for world size {world}: TP={par.tensor_model_parallel_size} "
              f"PP={par.pipeline_model_parallel_size} DP={dp}")
        for stream, passes in recipe.training.train_passes.items():
            print(f"budget: {passes:g} pass(es) over stream {stream!r}, counted from its documents when the run "
                  "starts (`cpt data build-cache RECIPE` counts it now)")
        return 0
    from cpt.train.run import train_recipe

    return train_recipe(recipe)
