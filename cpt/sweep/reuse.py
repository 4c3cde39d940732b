"""Stages another sweep has already trained, taken instead of trained again (`cpt sweep --reuse-from`).

Proxy sweeps share arms: the shipped corrupt_rate sweep's `clean` arm trains exactly what
synthetic_share's `syn20` trains, and controllers' `topic_ppl` what curriculum_zh's `lh` does; at
SmolLM2 size each such run costs a quarter of an hour of CPU (or GPU time on a cluster). A stage is
the same training when its run's training command and workdir are equal and the recipe files of
that stage and of every stage before it are equal text once each run's own folder and its sweep's
folder are written as placeholders (`stage_keys`): the files are what `cpt train` reads, so equal
files train the same model (on the same kind of machine, as a sweep's own seeds assume). Evals are
not part of it: they run in the sweep that reuses the stage, on its own terms.

Only a run with nothing of its own started takes stages, and only from one source run, its done
stages from the first on (a later stage continues from that run's earlier ones). The stage folder
is copied as hard links (files are never rewritten in place: checkpoints commit by rename) into a
temporary folder, fsynced and renamed when complete (cpt.io.publish_dir); then the stage's done
marker is written with the source's training seconds and `reused_from`, which the run's result
carries on. A copy killed half-way leaves no stage (its temporary folder is removed at the next
attempt) or a stage without a marker, which the run's own training command then resumes and finds
finished.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from cpt.sweep.plan import RUN_FILE, Run, recipe_text
from cpt.sweep.runner import REUSED_FROM

_TMP = ".reuse-tmp-"


def stage_keys(texts: list[str], train_command: Any, workdir: Any, folder: Path) -> list[str]:
    """For each stage (recipe file texts in order) of the run in `folder` (SWEEP/runs/ARM/seed-S):
    the digest of what trains it and every stage before it, with the run's folder and its sweep's
    folder written as placeholders."""
    folder = folder.absolute()
    places = ((str(folder), "{run}"), (str(folder.parents[2]), "{sweep}"))  # the longer path first
    digest = hashlib.sha256(json.dumps([train_command, str(workdir)]).encode())
    keys = []
    for text in texts:
        for path, mark in places:
            text = text.replace(path, mark)
        digest.update(b"\0" + text.encode())
        keys.append(digest.copy().hexdigest()[:16])
    return keys


@dataclass(frozen=True)
class Source:
    """A run of another sweep: its folder, stages, their keys, and how many are done (from the first)."""

    folder: Path
    stages: list[str]
    keys: list[str]
    done: int


def _done_count(folder: Path, stages: list[str]) -> int:
    n = 0
    while n < len(stages) and (folder / f"{stages[n]}.done.json").is_file():
        n += 1
    return n


def read_sources(sweep_dirs: Iterable[Path]) -> list[Source]:
    """Every run of the given sweep folders with at least one done stage."""
    from cpt.sweep.driver import read_plan

    out = []
    for sweep_dir in sweep_dirs:
        for entry in read_plan(Path(sweep_dir))["runs"]:  # refuses a folder that is not a sweep's
            folder = Path(entry["folder"])
            try:
                plan = json.loads((folder / RUN_FILE).read_text())
                texts = [(folder / f"{stage}.yaml").read_text() for stage in plan["stages"]]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # never planned there (a sweep stopped before it)
            done = _done_count(folder, plan["stages"])
            if done:
                keys = stage_keys(texts, plan.get("train_command"), plan.get("workdir"), folder)
                out.append(Source(folder, list(plan["stages"]), keys, done))
    return out


def _untouched(run: Run) -> bool:
    return not any(run.stage_dir(s).exists() or (run.folder / f"{s}.done.json").exists() for s, _ in run.stages)


def match(runs: list[Run], train_command: list[str], workdir: Path,
          sources: list[Source]) -> dict[str, tuple[Source, int]]:
    """Run folder -> (source run, how many stages to take from it) for each run with nothing started
    that a source trains the same way for at least its first stage (the source with the most)."""
    out: dict[str, tuple[Source, int]] = {}
    for run in runs:
        if not _untouched(run):
            continue
        keys = stage_keys([recipe_text(r) for _, r in run.stages], train_command, workdir, run.folder)
        best: Optional[tuple[Source, int]] = None
        for src in sources:
            n = 0
            while n < min(src.done, len(keys)) and src.keys[n] == keys[n]:
                n += 1
            if n and (best is None or n > best[1]):
                best = (src, n)
        if best is not None:
            out[str(run.folder)] = best
    return out


def _link_tree(source: Path, target: Path) -> None:
    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links not allowed there: a copy
            shutil.copy2(src, dst)

    shutil.copytree(source, target, copy_function=link, symlinks=True)


def take(run: Run, source: Source, count: int) -> list[str]:
    """Copy the first `count` stages of `source` into `run` (planned, nothing started), each committed
    by its done marker; returns the stages taken."""
    from cpt.io import fsync_tree, publish_dir, write_json_atomic

    for stale in run.folder.glob(f"{_TMP}*"):
        shutil.rmtree(stale, ignore_errors=True)
    taken = []
    for stage in source.stages[:count]:
        tmp = run.folder / f"{_TMP}{stage}"
        _link_tree(source.folder / stage, tmp)
        fsync_tree(tmp)  # the links' folder entries, before the rename declares the stage there
        publish_dir(tmp, run.stage_dir(stage))
        marker = json.loads((source.folder / f"{stage}.done.json").read_text())
        write_json_atomic(run.folder / f"{stage}.done.json",
                          {"stage": stage, "seconds": marker["seconds"], REUSED_FROM: str(source.folder / stage)})
        taken.append(stage)
    return taken


def reuse_stages(runs: list[Run], train_command: list[str], workdir: Path, sweep_dirs: list[Path],
                 log: Callable[[str], None] = print) -> int:
    """Give the runs (planned, their files written) the stages the `sweep_dirs` trained the same
    way; returns how many stages were taken."""
    if not sweep_dirs:
        return 0
    found = match(runs, train_command, workdir, read_sources(sweep_dirs))
    taken = 0
    for run in runs:
        if str(run.folder) in found:
            source, count = found[str(run.folder)]
            stages = take(run, source, count)
            taken += len(stages)
            log(f"[sweep] {run.name}: reused {', '.join(stages)} of {source.folder}")
    return taken


__all__ = ["Source", "match", "read_sources", "reuse_stages", "stage_keys", "take"]
