"""`cpt tag | score ... --executor E --num-shards N`: every slice as a task, then `--merge`.

Each slice task is the command itself with `--shard-index i --num-shards N` (a part file per input,
resumable through its checkpoint, committed by its summary; a part already committed with the same
settings is not redone), and the merge task is the command with `--merge`. So the launched run's
sidecars / tables are those of the `--shard-index` runs merged by hand, which equal a one-process
run bit for bit (`cpt.annotate.scaleout`).

The model a slice loads (the classifier for tag, the causal LM for score) takes seconds, mostly
its imports. A worker loads it once, into its `cpt.annotate.model_cache`: a slice after another in
the same Ray worker takes it from there. And the executor starts with one warm-up per slot
(`warm_up_task`: local and Ray; `--no-warm-up` to skip), which parses slice 0's own argv and loads,
through the command's `annotator_factory`, the very annotator the slices will ask for - beside
what the driver still does before it submits them (counting each slice's documents for the ETA).
Each slice's result says what it found (`reused_model`, `prepare_seconds`). With `--workers > 1` a
slice's models load in its own pool processes, which no warm-up reaches, so there is none.
"""
from __future__ import annotations

import argparse
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from cpt.annotate.inputs import shard_prefix
from cpt.annotate.scaleout import Slice, doc_range
from cpt.launch import LaunchSpec, Task, launch
from cpt.launch.argv import argv_of
from cpt.launch.run import start_executor
from cpt.launch.spec import EXECUTOR_DESTS
from cpt.launch.timeline import Timeline

_NOT_PASSED_ON = (*EXECUTOR_DESTS, "shard_index", "num_shards", "merge", "no_progress", "_module", "command")


def _slice_docs(prefixes: list[Path], chunk_size: int, count: int) -> list[int]:
    """Documents of each of `count` slices over all shard inputs (for the ETA); each shard's sizes
    are read once."""
    import cpt.shards as shards

    totals = [0] * count
    for prefix in prefixes:
        sizes = shards.open(prefix).metadata(["n_tokens"]).column("n_tokens").to_pylist()
        for i in range(count):
            start, stop = doc_range(sizes, chunk_size, Slice(i, count))
            totals[i] += stop - start
    return totals


def slice_task(argv: list[str]) -> dict[str, Any]:
    """One slice: `cpt ARGV` in this process (`cpt.cli.task`); its result adds whether the model it
    took was loaded in this process already (a warm-up, an earlier slice) and the seconds it took."""
    from cpt.annotate import model_cache
    from cpt.cli import task

    with model_cache.recording() as loads:
        result = task(argv)
    return {**result, **model_cache.load_report(loads)}


def warm_up_task(argv: list[str]) -> dict[str, Any]:
    """Load into this process's model cache what a slice of `cpt ARGV` will load: the command's
    `annotator_factory` of the same parsed arguments, so the cache keys cannot drift apart."""
    import importlib

    from cpt.annotate import model_cache
    from cpt.cli import build_parser, command_of

    args = build_parser(command_of(argv)).parse_args(argv)
    factory = importlib.import_module(args._module).annotator_factory(args)
    with model_cache.recording() as loads:
        model_cache.load(factory)
    return model_cache.load_report(loads)


def run_launched(command: str, add_arguments: Callable[[argparse.ArgumentParser], None], args: argparse.Namespace,
                 what: str, spec: LaunchSpec) -> int:
    """Run `cpt COMMAND` over all `args.num_shards` slices on `spec.executor`, then merge; print summaries."""
    from cpt.annotate.pipeline import format_summary
    from cpt.annotate.store import ResultStore

    if args.merge or args.shard_index:
        raise ValueError("--executor runs every slice and the merge: give --num-shards N without "
                         "--shard-index / --merge")
    timeline = Timeline()
    timeline.mark("driver_ready")
    parser = argparse.ArgumentParser(prog=f"cpt {command}")
    add_arguments(parser)
    base = argv_of(parser, args, drop=_NOT_PASSED_ON)
    n = args.num_shards
    argvs = [[command, "--shard-index", str(i), "--num-shards", str(n), *base] for i in range(n)]
    prefixes = [shard_prefix(p) for p in args.inputs]
    shards_in = all(p is not None for p in prefixes)
    first = Path(f"{prefixes[0]}.{what}") if shards_in else Path(args.out)
    launch_dir = first.with_name(first.name + ".launch")
    warm_up = Task(name="warm-up", fn=f"{__name__}:warm_up_task", kwargs={"argv": argvs[0]}) \
        if args.workers == 1 else None
    with ThreadPoolExecutor(1) as pool:  # count each slice's documents while the executor starts
        counted = pool.submit(_slice_docs, prefixes, args.chunk_size, n) if shards_in else None
        if counted is not None:
            counted.add_done_callback(lambda _: timeline.mark("planned"))
        try:  # its workers start and load the model while the documents are counted
            executor = start_executor(spec, launch_dir, warm_up, n)
            timeline.mark("executor_started")
        except BaseException:
            if counted is not None:
                counted.result()
            raise
        try:
            units = counted.result() if counted is not None else [0] * n
        except BaseException:
            executor.stop()
            raise
    tasks = [Task(name=f"slice-{i:05d}-of-{n:05d}", fn=f"{__name__}:slice_task", kwargs={"argv": argvs[i]},
                  units=units[i])
             for i in range(n)]
    merge = Task(name="merge", fn="cpt.cli:task", kwargs={"argv": [command, "--merge", "--no-progress", *base]})
    launch(tasks, merge, spec, launch_dir, command, executor=executor, timeline=timeline)
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


__all__ = ["maybe_launch", "run_launched", "slice_task", "warm_up_task"]
