"""`cpt tag | score ... --executor E --num-shards N`: every slice as a task, then `--merge`.

Each slice task is the command itself with `--shard-index i --num-shards N` (a part file per input,
resumable through its checkpoint, committed by its summary; a part already committed with the same
settings is not redone), and the merge task is the command with `--merge`. So the launched run's
sidecars / tables are those of the `--shard-index` runs merged by hand, which equal a one-process
run bit for bit (`cpt.annotate.scaleout`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable

from cpt.annotate.inputs import shard_prefix
from cpt.annotate.scaleout import Slice, doc_range
from cpt.launch import LaunchSpec, Task, launch
from cpt.launch.argv import argv_of
from cpt.launch.spec import EXECUTOR_DESTS

_NOT_PASSED_ON = (*EXECUTOR_DESTS, "shard_index", "num_shards", "merge", "no_progress", "_module", "command")


def _slice_docs(prefixes: list[Path], chunk_size: int, part: Slice) -> int:
    """Documents of slice `part` over all shard inputs (for the ETA); 0 for raw inputs."""
    import cpt.shards as shards

    total = 0
    for prefix in prefixes:
        sizes = shards.open(prefix).metadata(["n_tokens"]).column("n_tokens").to_pylist()
        start, stop = doc_range(sizes, chunk_size, part)
        total += stop - start
    return total


def run_launched(command: str, add_arguments: Callable[[argparse.ArgumentParser], None], args: argparse.Namespace,
                 what: str, spec: LaunchSpec) -> int:
    """Run `cpt COMMAND` over all `args.num_shards` slices on `spec.executor`, then merge; print summaries."""
    from cpt.annotate.pipeline import format_summary
    from cpt.annotate.store import ResultStore

    if args.merge or args.shard_index:
        raise ValueError("--executor runs every slice and the merge: give --num-shards N without "
                         "--shard-index / --merge")
    parser = argparse.ArgumentParser(prog=f"cpt {command}")
    add_arguments(parser)
    base = argv_of(parser, args, drop=_NOT_PASSED_ON)
    n = args.num_shards
    prefixes = [shard_prefix(p) for p in args.inputs]
    shards_in = all(p is not None for p in prefixes)
    tasks = [Task(name=f"slice-{i:05d}-of-{n:05d}", fn="cpt.cli:task",
                  kwargs={"argv": [command, "--shard-index", str(i), "--num-shards", str(n), *base]},
                  units=_slice_docs(prefixes, args.chunk_size, Slice(i, n)) if shards_in else 0)
             for i in range(n)]
    merge = Task(name="merge", fn="cpt.cli:task", kwargs={"argv": [command, "--merge", "--no-progress", *base]})
    first = Path(f"{prefixes[0]}.{what}") if shards_in else Path(args.out)
    launch(tasks, merge, spec, first.with_name(first.name + ".launch"), command)
    outs = [Path(f"{p}.{what}") for p in prefixes] if shards_in else [Path(args.out)]
    for out in outs:
        summary_file = ResultStore(out, {}).summary_path
        print(format_summary(json.loads(summary_file.read_text(encoding="utf-8"))))
    return 0


def maybe_launch(command: str, add_arguments, args: argparse.Namespace, what: str) -> int | None:
    """With `--executor`, run the launch and return its status; else None (run here, as before)."""
    if not getattr(args, "executor", None):
        return None
    from cpt.launch import spec_from_args

    return run_launched(command, add_arguments, args, what, spec_from_args(args, progress=not args.no_progress))


__all__ = ["maybe_launch", "run_launched"]
