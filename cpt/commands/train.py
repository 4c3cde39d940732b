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


def run(args: argparse.Namespace) -> int:
    from cpt.config import RecipeError, describe, load_recipe

    if args.describe:
        print("\n".join(describe()))
        return 0
    if not args.recipe:
        print("cpt train: a recipe file is required", file=sys.stderr)
        return 2
    try:
        recipe = load_recipe(args.recipe, args.overrides)
        import os

        recipe.check_world_size(int(os.environ.get("WORLD_SIZE", "1")))
    except RecipeError as exc:
        print(f"recipe error: {exc}", file=sys.stderr)
        return 2
    if args.check:
        print("recipe ok")
        return 0
    from cpt.train.run import train_recipe

    return train_recipe(recipe)
