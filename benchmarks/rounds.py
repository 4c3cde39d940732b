"""Alternating rounds, which every benchmark comparing modes in one run shares: on a shared machine the
load drifts over seconds to minutes, so mode A always running first would hand it (or B) the quieter
half. Modes run forward on even rounds and backward on odd ones, and each mode's best round counts."""
from __future__ import annotations

import argparse
from typing import Sequence


def add_rounds_option(parser: argparse.ArgumentParser, default: int = 1) -> None:
    parser.add_argument("--rounds", type=int, default=default,
                        help=f"runs of each mode, alternating order (default {default})")


def alternating(modes: Sequence[str], rounds: int) -> list[tuple[int, str]]:
    """(round, mode) in the order to run them."""
    return [(r, m) for r in range(rounds) for m in (modes if r % 2 == 0 else list(modes)[::-1])]
