"""The command line every torchrun worker script of the tests shares: `--out`, the script's own
input options, and the names of the cases to run in this process, in order."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable


def run_cases(cases: dict[str, Callable[[str, argparse.Namespace], Any]], **options: dict[str, Any]) -> None:
    """Parse argv and call `cases[name](name, args)` for each case named; `options` maps an option's
    name (`train` for `--train`) to its argparse settings."""
    parser = argparse.ArgumentParser()
    for name, settings in options.items():
        parser.add_argument(f"--{name}", **settings)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("cases", nargs="+", choices=sorted(cases))
    args = parser.parse_args()
    for case in args.cases:
        cases[case](case, args)
