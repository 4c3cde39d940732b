"""Where tasks run: a local process pool, Ray tasks, Slurm jobs through submitit.

An executor only submits one attempt of a task and tells when it ended (its result, or a one-line
reason); the retry policy, progress and summary are the driver's (`cpt.launch.run`). Each engine's
own retries are turned off so that every retry is counted and named in one place.
"""
from __future__ import annotations

import abc
import dataclasses
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from cpt.launch.spec import LaunchError, LaunchSpec
from cpt.launch.task import Task, log_path, run_task
from cpt.launch.worker import result_file as _result_file


@dataclass(eq=False)
class Attempt:
    task: Task
    number: int
    handle: Any = None
    handle_id: str = ""
    started: float = field(default_factory=time.time)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def _log_tail(launch_dir: Path, attempt: Attempt) -> str:
    try:
        return _last_line(log_path(launch_dir, attempt.task.name, attempt.number).read_text(errors="replace")[-4000:])
    except OSError:
        return "no log"


class Executor(abc.ABC):
    """Submit attempts, report finished ones. Subclasses implement `submit` and `wait`."""

    merges_in_driver = True
    """`run_merge` runs in the driver's process, so the driver may stream the merge instead."""

    def __init__(self, spec: LaunchSpec, launch_dir: Path):
        self.spec, self.launch_dir = spec, launch_dir

    def start(self) -> None:
        """Connect to the engine (or start it); errors are LaunchError with one line."""

    def stop(self) -> None:
        """Release what `start` acquired."""

    def capacity(self) -> int:
        """How many attempts may be in flight (the engine queues the rest itself when large)."""
        return 1 << 20

    def warm_up(self, task: Task, count: int) -> None:
        """Run `task` at once in up to `count` of the worker processes that later attempts will
        run in (Ray: workers that outlive a task; local: processes started ahead, each waiting for
        its attempt), so that what every task loads first (its imports, a tokenizer) is loaded
        while the caller still plans them. A warm-up that fails is only recorded (`warm_ups`): an
        attempt prepares anew what it does not find ready. Nothing here (Slurm: every job is a
        process of its own that no warm-up can reach before it is scheduled)."""

    def warm_ups(self) -> list[tuple[Attempt, dict | None, str | None]]:
        """Each warm-up as `wait` reports an attempt: (attempt, run_task's dict, None) or (attempt, None, why)."""
        return []

    def submit_many(self, batch: Sequence[tuple[Task, int]]) -> list[Attempt]:
        return [self.submit(task, number) for task, number in batch]

    @abc.abstractmethod
    def submit(self, task: Task, number: int) -> Attempt:
        """Start attempt `number` of `task` where this executor runs things."""

    @abc.abstractmethod
    def wait(self, running: list[Attempt], timeout: float) -> list[tuple[Attempt, dict | None, str | None]]:
        """Attempts that ended within `timeout`: (attempt, run_task's dict, None) or (attempt, None, why)."""

    def plan_merge(self, merge: Task | None) -> None:
        """The merge that will follow the tasks (Slurm submits it at once, as a dependent job)."""

    def run_merge(self, merge: Task, after: list[str]) -> dict[str, Any]:
        """Run the merge once every task succeeded (here, in the driver); return its result."""
        return run_task(merge, str(self.launch_dir), 1)["result"]


class LocalExecutor(Executor):
    """One fresh process per attempt (`python -m cpt.launch.worker`), as many at once as CPUs allow.

    With a warm-up, the first processes start at once, each running the warm-up and then waiting
    for the attempt `submit` hands it (on its stdin): Python's start, the imports and what the
    warm-up loads overlap the driver's planning. Each still runs one attempt, so a killed worker
    takes only its own attempt with it."""

    live: list[subprocess.Popen]
    exit_fds: dict[int, int | None]
    """pid -> a descriptor that becomes readable when that worker exits (Linux pidfd), None where unsupported."""
    parked: list[subprocess.Popen]
    """Warmed processes waiting for an attempt, oldest first."""
    warming: list[tuple[Attempt, Path]]
    """Each warm-up as an attempt, and its spec file."""

    def capacity(self) -> int:
        cpus = self.spec.local_cpus or os.cpu_count() or 1
        return max(1, cpus // self.spec.cpus_per_task)

    def start(self) -> None:
        self.live, self.exit_fds, self.parked, self.warming = [], {}, [], []

    def warm_up(self, task: Task, count: int) -> None:
        for i in range(min(count, self.capacity())):
            named = dataclasses.replace(task, name=f"{task.name}-{i:05d}")
            spec_file = self._write_spec(named, 1)
            proc = self._spawn(["--warm", str(spec_file)], subprocess.PIPE)
            self.parked.append(proc)
            self.warming.append((Attempt(named, 1, proc, f"pid-{proc.pid}"), spec_file))

    def warm_ups(self):
        out = []
        for attempt, spec_file in self.warming:
            result = _result_file(spec_file)
            if result.is_file():
                out.append((attempt, json.loads(result.read_text()), None))
            else:
                out.append((attempt, None, f"no result: {_log_tail(self.launch_dir, attempt)}"))
        return out

    def submit(self, task: Task, number: int) -> Attempt:
        spec_file = self._write_spec(task, number)
        proc = self._hand(spec_file) or self._spawn([str(spec_file)], subprocess.DEVNULL)
        return Attempt(task, number, proc, f"pid-{proc.pid}")

    def _write_spec(self, task: Task, number: int) -> Path:
        spec_file = self.launch_dir / "tasks" / f"{task.name}.attempt-{number}.json"
        spec_file.parent.mkdir(parents=True, exist_ok=True)
        spec_file.write_text(json.dumps({"task": task.to_json(), "launch_dir": str(self.launch_dir),
                                         "attempt": number}))
        return spec_file

    def _spawn(self, args: list[str], stdin: int) -> subprocess.Popen:
        env = {**os.environ, "OMP_NUM_THREADS": str(self.spec.cpus_per_task)}
        proc = subprocess.Popen([sys.executable, "-m", "cpt.launch.worker", *args], env=env,
                                stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.live.append(proc)
        self.exit_fds[proc.pid] = _exit_fd(proc.pid)
        return proc

    def _hand(self, spec_file: Path) -> subprocess.Popen | None:
        """Give the attempt of `spec_file` to the oldest warmed process still alive, if any."""
        while self.parked:
            proc = self.parked.pop(0)
            try:
                proc.stdin.write(f"{spec_file}\n".encode())
                proc.stdin.close()
            except OSError:  # it died while waiting (BrokenPipeError): the next one, or a fresh process
                continue
            return proc
        return None

    def stop(self) -> None:
        """An interrupted driver takes its workers with it (a rerun resumes their work); a warmed
        process no attempt came for ends too."""
        for proc in self.parked:
            proc.stdin.close()
        for proc in self.live:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for pid in list(self.exit_fds):
            self._close_exit_fd(pid)

    def wait(self, running, timeout):
        deadline = time.monotonic() + timeout
        while True:
            ended = [a for a in running if a.handle.poll() is not None]
            left = deadline - time.monotonic()
            if ended or left <= 0:
                return [self._outcome(a) for a in ended]
            fds = [self.exit_fds.get(a.handle.pid) for a in running]
            if running and None not in fds and hasattr(select, "poll"):
                poller = select.poll()
                for fd in fds:
                    poller.register(fd, select.POLLIN)
                poller.poll(max(1, int(left * 1000)))  # wakes the moment a worker exits
            else:
                time.sleep(min(left, 0.05))

    def _close_exit_fd(self, pid: int) -> None:
        fd = self.exit_fds.pop(pid, None)
        if fd is not None:
            os.close(fd)

    def _outcome(self, a: Attempt):
        proc: subprocess.Popen = a.handle
        self._close_exit_fd(proc.pid)
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        result_file = _result_file(self.launch_dir / "tasks" / f"{a.task.name}.attempt-{a.number}.json")
        if proc.returncode == 0 and result_file.is_file():
            return a, json.loads(result_file.read_text()), None
        if proc.returncode < 0:
            return a, None, f"worker pid {proc.pid} killed by signal {-proc.returncode}"
        why = _last_line(stderr) if stderr.strip() else _log_tail(self.launch_dir, a)
        return a, None, f"exit {proc.returncode}: {why}"


def _exit_fd(pid: int) -> int | None:
    """A pidfd of `pid` (Linux 5.3+), which poll() reports readable once the process exited."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # another OS or an older kernel: wait() polls instead
        return None


def make_executor(spec: LaunchSpec, launch_dir: Path) -> Executor:
    launch_dir = Path(launch_dir).absolute()  # tasks may start in another folder (Ray, Slurm)
    if spec.executor == "local":
        return LocalExecutor(spec, launch_dir)
    if spec.executor == "ray":
        from cpt.launch.ray_executor import RayExecutor

        return RayExecutor(spec, launch_dir)
    from cpt.launch.slurm import SlurmExecutor

    return SlurmExecutor(spec, launch_dir)


__all__ = ["Attempt", "Executor", "LaunchError", "LocalExecutor", "make_executor"]
