"""Live progress of tasks: each task reports its counts to a file, the driver draws one line.

Files rather than a channel of one engine: a local process, a Ray worker and a Slurm job on another
node write the same way (the launch folder is on the file system every task shares anyway), so one
driver loop serves every executor. A task reports through `report()`, which does nothing outside a
launch; counts are written at most once a second (atomic, not fsynced: only a display reads them).
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

PROGRESS_ENV = "CPT_TASK_PROGRESS"
_INTERVAL_S = 1.0


class _Reporter:
    def __init__(self) -> None:
        self.path: Path | None = None
        self.state: dict[str, Any] = {}
        self.last = 0.0

    def start(self, path: Path, attempt: int) -> None:
        self.path, self.last = path, 0.0
        self.state = {"pid": os.getpid(), "attempt": attempt, "units": 0, "docs": 0, "time": time.time()}
        self.write()

    def write(self) -> None:
        from cpt.io import write_json_atomic

        if self.path is None or os.environ.get(PROGRESS_ENV) != str(self.path):
            return
        self.state["time"] = time.time()
        self.last = time.perf_counter()
        write_json_atomic(self.path, self.state, durable=False)


_REPORTER = _Reporter()


def start_report(path: Path, attempt: int) -> None:
    """Called by `run_task` as an attempt starts: its pid is known to the driver from here on."""
    _REPORTER.start(path, attempt)


def finish_report() -> None:
    """Called by `run_task` when an attempt returns: its last counts are written whatever the
    interval (the launch summary's `docs` is the sum of these files)."""
    _REPORTER.write()


def report(units: int = 0, docs: int = 0, *, total: bool = False) -> None:
    """Add `units` (bytes, documents: the task's own unit of work) and `docs` done; with `total`,
    set them instead. A no-op outside a launched task."""
    r = _REPORTER
    if r.path is None:
        return
    if total:
        r.state["units"], r.state["docs"] = int(units), int(docs)
    else:
        r.state["units"] += int(units)
        r.state["docs"] += int(docs)
    if time.perf_counter() - r.last >= _INTERVAL_S:
        r.write()


class TaskProgress:
    """A drop-in for `cpt.corpus.progress.Progress` inside a task: `update(nbytes, docs, tokens)`."""

    def update(self, nbytes: int = 0, docs: int = 0, tokens: int = 0) -> None:
        report(nbytes, docs)

    def close(self) -> None:
        _REPORTER.write()


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Board:
    """One progress line over all tasks: done/running/retried/failed, docs/s, share done and ETA."""

    def __init__(self, label: str, units: Sequence[int], names: Sequence[str], launch_dir: Path,
                 enabled: bool = True, stream=None):
        self.label, self.names, self.dir = label, list(names), Path(launch_dir) / "progress"
        self.units = dict(zip(names, units))
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.last = 0.0
        self.done: set[str] = set()
        self.retried = self.failed = self.running = 0
        self.docs = 0

    def _counts(self) -> tuple[int, int]:
        units = docs = 0
        for name in self.names:
            try:
                state = json.loads((self.dir / f"{name}.json").read_text())
            except (OSError, ValueError):
                continue
            docs += state.get("docs", 0)
            units += state.get("units", 0)
        # tasks may do each other's work (slices taking others' chunks): the share is the sum of what
        # all report, not per task; a finished launch is whole (a failed attempt's counts are gone)
        total = sum(self.units.values())
        return (total if len(self.done) == len(self.names) else min(units, total)), docs

    def refresh(self, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and (not self.enabled or now - self.last < (0.5 if self.tty else 10.0)):
            return
        self.last = now
        units, self.docs = self._counts()
        if not self.enabled:
            return
        total = sum(self.units.values())
        elapsed = max(now - self.start, 1e-9)
        if total:
            share = units / total
            eta = _hms(elapsed * (1 - share) / share) if share > 0 else "?"
        else:
            share = len(self.done) / max(len(self.names), 1)
            eta = _hms(elapsed * (1 - share) / share) if share > 0 else "?"
        line = (f"[{self.label}] {len(self.done)}/{len(self.names)} done, {self.running} running, "
                f"{self.retried} retried, {self.failed} failed | {self.docs} docs {self.docs / elapsed:.1f}/s | "
                f"{share * 100:5.1f}% elapsed {_hms(elapsed)} ETA {eta}")
        print(line, end="\r" if self.tty and not force else "\n", file=self.stream, flush=True)


__all__ = ["Board", "PROGRESS_ENV", "TaskProgress", "finish_report", "report", "start_report"]
