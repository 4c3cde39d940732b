"""A unit of work for an executor: a pure function of JSON arguments, named by import path.

A task (one slice of `cpt preprocess`, one `cpt tag` slice, one sweep arm) must be resumable and
commit its output atomically: running it again after a kill finishes it rather than redoing it, and
running it once more after it finished changes nothing. That is what lets an executor retry a task
wherever it likes; the executor never looks inside. Every attempt writes its stdout/stderr to
`LAUNCH/logs/NAME.attempt-K.log` and its live counts to `LAUNCH/progress/NAME.json` (through
`cpt.launch.progress.report`), so the driver can show one progress line and name a failed task's log.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from cpt.launch.progress import PROGRESS_ENV, finish_report, start_report


@dataclass(frozen=True, slots=True, kw_only=True)
class Task:
    """What to run: `fn(**kwargs)`, where `fn` is "package.module:function"."""

    name: str
    """Unique within a launch and file-safe (`slice-00003-of-00016`, `arm-lr3e-4-seed1`)."""
    fn: str
    """Import path of the function, "package.module:function"; it returns a JSON-able dict."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """JSON-able keyword arguments: the whole input of the task."""
    units: int = 0
    """Size of the work (bytes, documents) for the ETA; 0 when unknown."""
    env: dict[str, str] = field(default_factory=dict)
    """Environment variables set while the task runs (thread counts, test hooks)."""
    cwd: str | None = None
    """Working folder while it runs (the launch sets the driver's: relative paths mean the same)."""

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "/\\ \n") or ":" not in self.fn:
            raise ValueError(f"task name {self.name!r} must be non-empty and file-safe, fn {self.fn!r} "
                             f"must be 'package.module:function'")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "Task":
        return cls(**data)


class TaskFailed(RuntimeError):
    """A task ended without its result; the message says why in one line."""


def log_path(launch_dir: str | Path, name: str, attempt: int) -> Path:
    return Path(launch_dir) / "logs" / f"{name}.attempt-{attempt}.log"


def resolve(fn: str) -> Callable[..., Any]:
    module, _, attr = fn.partition(":")
    return getattr(importlib.import_module(module), attr)


@contextlib.contextmanager
def _redirected(log: Path) -> Iterator[None]:
    """Send this process's fds 1 and 2 (Python's and native code's output) to `log`, then restore."""
    log.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log, "ab", buffering=0) as f:
        os.dup2(f.fileno(), 1), os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


@contextlib.contextmanager
def _environment(env: dict[str, str], cwd: str | None) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in env}
    old_cwd = os.getcwd()
    os.environ.update(env)
    if cwd:
        os.chdir(cwd)
    try:
        yield
    finally:
        os.chdir(old_cwd)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _apply_threads() -> None:
    """A reused worker (Ray) imported torch already: OMP_NUM_THREADS alone would not reach it."""
    threads = os.environ.get("OMP_NUM_THREADS")
    if threads and threads.isdigit() and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def run_task(task: Task | dict[str, Any], launch_dir: str, attempt: int) -> dict[str, Any]:
    """Run one attempt of `task` in this process (a pool worker, a Ray worker, a Slurm job).

    Returns {"result": fn's dict, "seconds", "cpu_seconds", "pid", "host", "started_at",
    "ended_at", "worker_age"}; an exception in the task propagates after its traceback went to the
    attempt's log. `cpu_seconds` (this process and the children it waited for) beside `seconds`
    tells a slice that waited for a CPU from one that had more work; `started_at`/`ended_at` (this
    host's clock) and `worker_age` (how long the process existed before the attempt: a fresh
    worker's start-up is on the critical path, a reused one's is not) place it on the launch's
    timeline.
    """
    import socket
    import traceback

    started_at, t0, cpu0 = time.time(), time.perf_counter(), _cpu_seconds()
    task = task if isinstance(task, Task) else Task.from_json(task)
    progress = (Path(launch_dir) / "progress" / f"{task.name}.json").absolute()
    with _redirected(log_path(launch_dir, task.name, attempt).absolute()), \
            _environment({**task.env, PROGRESS_ENV: str(progress)}, task.cwd):
        print(f"[launch] {task.name} attempt {attempt} on {socket.gethostname()} pid {os.getpid()}: "
              f"{task.fn}({json.dumps(task.kwargs, sort_keys=True)[:2000]})", flush=True)
        start_report(progress, attempt)
        _apply_threads()
        try:
            result = resolve(task.fn)(**task.kwargs)
        except BaseException:
            traceback.print_exc()
            raise
        finish_report()
        print(f"[launch] {task.name} done in {time.perf_counter() - t0:.1f} s", flush=True)
    born = process_started_at()
    return {"result": result, "seconds": round(time.perf_counter() - t0, 3),
            "cpu_seconds": round(_cpu_seconds() - cpu0, 3), "pid": os.getpid(), "host": socket.gethostname(),
            "started_at": started_at, "ended_at": time.time(),
            "worker_age": None if born is None else round(max(started_at - born, 0.0), 3)}


def process_started_at() -> float | None:
    """When this process started (epoch seconds, to a clock tick), from /proc; None elsewhere.

    /proc gives the start in ticks since boot; the time since boot comes from CLOCK_BOOTTIME (the
    same clock) rather than /proc/stat's btime, which is rounded to whole seconds."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rpartition(")")[2].split()[19])  # field 22, starttime (after comm)
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - ticks / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _cpu_seconds() -> float:
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


__all__ = ["Task", "TaskFailed", "log_path", "process_started_at", "resolve", "run_task"]
