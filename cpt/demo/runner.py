"""Run demo steps in order: each a `cpt` sub-command in a subprocess (or a small in-process action),
skipped when a previous run completed it, timed, logged to its own file.

A step is complete when its marker `steps/NAME.json` exists, records the same command line and
the same recipe file contents, and every declared output exists; the marker is written after the command succeeds (the commit marker
comes last), so a killed demo reruns the interrupted step, and the tools' own resume (preprocess
chunks, annotation checkpoints, synth journal, training checkpoints) picks up inside it.
A step that runs makes every later step run too (their inputs may have changed); the tools then
overwrite or resume their outputs by their own rules. A failing step stops the demo with its
command line and the tail of its log.
"""
from __future__ import annotations

import hashlib
import json
import os
import resource
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from cpt.io import write_json_atomic

LOG_TAIL_LINES = 30


class StepFailed(RuntimeError):
    """A demo step failed; the message holds its command line and the tail of its log."""


@dataclass
class Step:
    """One demo step.

    `argv` are the arguments after `cpt`, `late_argv` a callable returning more of them, called when
    the step runs (arguments that depend on earlier outputs, e.g. the model section of an import);
    `action` runs in-process instead (building the corpus). `outputs` are paths, relative to the demo folder, that must exist
    for the step to count as done."""

    name: str
    argv: Sequence[str] = ()
    outputs: Sequence[str] = ()
    late_argv: Optional[Callable[[], Sequence[str]]] = None
    action: Optional[Callable[[Path], object]] = None
    describe: str = ""

    def command(self) -> list[str]:
        if self.action is not None:
            return [f"<in-process: {self.describe or self.name}>"]
        late = self.late_argv() if self.late_argv is not None else ()
        return ["cpt", *[str(a) for a in (*self.argv, *late)]]

    @property
    def cli(self) -> Optional[str]:
        """The `cpt` sub-command this step runs (None for in-process steps)."""
        return None if self.action is not None else str(self.argv[0])


@dataclass
class StepResult:
    name: str
    seconds: float
    skipped: bool
    command: list[str] = field(default_factory=list)
    cpu_seconds: float = 0.0
    """user + system CPU time of the step (its subprocess, or this process for in-process steps): on a
    shared machine wall time stretches with the load, CPU time much less."""


class Runner:
    """Runs steps with the demo folder as working directory (recipes' relative paths resolve there)."""

    def __init__(self, root: Path, log: Callable[[str], None] = print) -> None:
        self.root = Path(root)
        self.log = log
        (self.root / "steps").mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)

    def marker(self, name: str) -> Path:
        return self.root / "steps" / f"{name}.json"

    def is_done(self, step: Step, command: list[str]) -> bool:
        marker = self.marker(step.name)
        if not marker.is_file():
            return False
        try:
            recorded = json.loads(marker.read_text())
        except json.JSONDecodeError:
            return False
        return (recorded.get("command") == command and recorded.get("recipes") == self.recipe_hashes(command)
                and all((self.root / p).exists() for p in step.outputs))

    def recipe_hashes(self, command: list[str]) -> dict[str, str]:
        """sha256 of the recipe files a command names: an edited recipe makes its step run again."""
        out = {}
        for arg in command:
            path = self.root / arg
            if arg.endswith((".yaml", ".yml")) and path.is_file():
                out[arg] = hashlib.sha256(path.read_bytes()).hexdigest()
        return out

    def run(self, step: Step, force: bool = False) -> StepResult:
        """Run `step` unless a previous run completed it (`force`: run anyway, e.g. an input changed)."""
        command = step.command()
        if not force and self.is_done(step, command):
            self.log(f"[demo] {step.name}: done in an earlier run, skipped")
            return StepResult(step.name, 0.0, True, command)
        self.log(f"[demo] {step.name}: {shlex.join(command)}")
        log_path = self.root / "logs" / f"{step.name}.log"
        start, cpu_start = time.perf_counter(), _cpu_seconds()
        if step.action is not None:
            self._run_action(step, log_path)
        else:
            self._run_command(step, command, log_path)
        seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu_start
        missing = [p for p in step.outputs if not (self.root / p).exists()]
        if missing:
            raise StepFailed(f"step {step.name} finished but did not write {', '.join(missing)} "
                             f"(in {self.root}); command: {shlex.join(command)}\n{_tail(log_path)}")
        write_json_atomic(self.marker(step.name), {
            "command": command, "recipes": self.recipe_hashes(command), "seconds": round(seconds, 3),
            "cpu_seconds": round(cpu, 3), "finished": time.time()}, indent=None)
        self.log(f"[demo] {step.name}: {seconds:.1f} s ({cpu:.1f} CPU s)")
        return StepResult(step.name, seconds, False, command, cpu)

    def _run_action(self, step: Step, log_path: Path) -> None:
        try:
            result = step.action(self.root)
        except Exception as exc:  # noqa: BLE001 - reported with the step's name, then stops the demo
            raise StepFailed(f"step {step.name} ({step.describe}) failed: {type(exc).__name__}: {exc}") from exc
        log_path.write_text(json.dumps(result, default=str) + "\n" if result is not None else "")

    def _run_command(self, step: Step, command: list[str], log_path: Path) -> None:
        argv = [sys.executable, "-m", "cpt.cli", *command[1:]]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        with log_path.open("w") as log:
            log.write(f"$ (cd {self.root} && {shlex.join(command)})\n")
            log.flush()
            code = subprocess.call(argv, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, env=env)
        if code != 0:
            raise StepFailed(
                f"step {step.name} failed (exit status {code})\n"
                f"command (run in {self.root}): {shlex.join(command)}\n"
                f"log: {log_path}\n{_tail(log_path)}"
            )


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children so far."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    if not path.is_file():
        return "(no log)"
    text = path.read_text(errors="replace").replace("\r", "\n").splitlines()
    text = [t for t in text if t.strip()]
    return f"--- last {min(lines, len(text))} lines of {path.name} ---\n" + "\n".join(text[-lines:])
