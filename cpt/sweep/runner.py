"""One sweep run as a launch task: its stages in order, each the `cpt train` command a user would type.

A stage is a fresh process (`TRAIN_COMMAND RUN/STAGE.yaml`, in the sweep's workdir, with the run's
thread count), so a run is exactly what the recipe file says and a multi-GPU user can make the
command `torchrun ... -m cpt.cli train`. What makes the task resumable is the trainer's own rule:
rerunning the same command resumes from the stage's latest checkpoint. What makes it idempotent
are the markers, each written atomically when its work is complete:

- `RUN/STAGE.done.json` after the stage's command exited 0 (a done stage is never run again), or
  after the stage was taken from another sweep's run that trains it the same way (cpt.sweep.reuse;
  the marker and the run's result name it);
- `RUN/evals/NAME.json`, the sweep's `cpt eval` commands' own atomic outputs, after the last stage
  (an eval with its output is never run again); their `metrics` join the run's as `NAME/KEY`, and
  the keys they list under `higher_is_better` the run's `higher_is_better`;
- `RUN/result.json` (the run's commit marker) after the final evaluation was read: a run with it
  is never rerun, and the sweep's results are collected from these files only.

A killed attempt leaves neither marker for the stage it was in; the next attempt reruns that
stage's command, which resumes from its checkpoint. The training process is tied to the task's
process (PR_SET_PDEATHSIG on Linux): a task killed by its executor does not leave it running.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cpt.sweep.collect import final_eval_metrics

RESULT_FILE = "result.json"
REUSED_FROM = "reused_from"
"""Key of a done marker whose stage was trained by another sweep's run (cpt.sweep.reuse), naming it."""
STAGE_ENV = "CPT_SWEEP_STAGE"
"""Marks every process of a stage (inherited by the trainer's own helpers) so leftovers can be found."""
PYTHON = "{python}"
"""Placeholder in a train command for the Python running the task (machines differ; the plan does not)."""
DEFAULT_TRAIN_COMMAND = [PYTHON, "-m", "cpt.cli", "train"]


def _libc_prctl():
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux (glibc): a killed task may leave its stage running
        return None


_PRCTL = _libc_prctl()  # resolved here: the child between fork and exec only calls it (no import, no lock)


def _die_with_parent() -> None:
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def kill_leftovers(stage_dir: Path) -> int:
    """SIGKILL every process whose environment marks it as part of `stage_dir`; return how many."""
    import psutil

    mark, victims = str(stage_dir), []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(STAGE_ENV) == mark:
                proc.kill()
                victims.append(proc)
        except (psutil.Error, OSError):  # gone, or another user's: not ours
            continue
    psutil.wait_procs(victims, timeout=10)
    return len(victims)


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace")[-8000:].splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if "error" in ln.lower()]
    return (errors or lines or ["no output"])[-1].strip()[:300]


def run_stage(folder: Path, stage: str, train_command: list[str], workdir: str, threads: int) -> float:
    """Run (or resume) one stage's training; return its wall seconds. Raises on a non-zero exit."""
    from cpt.launch import TaskFailed

    log = folder / "logs" / f"{stage}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable if a == PYTHON else a for a in train_command] + [str(folder / f"{stage}.yaml")]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           STAGE_ENV: str(folder / stage)}
    t0 = time.perf_counter()
    with open(log, "ab", buffering=0) as out:
        if leftovers := kill_leftovers(folder / stage):
            out.write(f"[sweep] killed {leftovers} leftover process(es) of an earlier attempt\n".encode())
        out.write(f"[sweep] {time.strftime('%Y-%m-%d %H:%M:%S')} in {workdir}: {' '.join(argv)}\n".encode())
        try:
            code = subprocess.call(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, preexec_fn=_die_with_parent if _PRCTL else None)
        finally:
            kill_leftovers(folder / stage)
    seconds = time.perf_counter() - t0
    if code != 0:
        raise TaskFailed(f"stage {stage} of {folder}: training exited with status {code}: {_tail(log)} (log {log})")
    return seconds


def run_eval(folder: Path, name: str, args: list[str], workdir: str, threads: int) -> tuple[dict[str, float], list[str]]:
    """Run (unless its output exists) one `cpt eval` of a finished run; return its metrics as NAME/KEY
    and those of them where higher is better."""
    from cpt.launch import TaskFailed
    from cpt.sweep.collect import eval_output_higher_is_better, eval_output_metrics

    out = folder / "evals" / f"{name}.json"
    if not out.is_file():
        log = folder / "logs" / f"eval-{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "cpt.cli", *args, "--out", str(out)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        with open(log, "ab", buffering=0) as sink:
            sink.write(f"[sweep] {time.strftime('%Y-%m-%d %H:%M:%S')} in {workdir}: {' '.join(argv)}\n".encode())
            code = subprocess.call(argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=sink,
                                   stderr=subprocess.STDOUT, preexec_fn=_die_with_parent if _PRCTL else None)
        if code != 0 or not out.is_file():
            raise TaskFailed(f"eval {name} of {folder}: exited with status {code}: {_tail(log)} (log {log})")
    return eval_output_metrics(out, name), eval_output_higher_is_better(out, name)


def run_sweep_run(folder: str, stages: list[str], train_command: list[str], workdir: str, threads: int,
                  fingerprint: str, evals: list[tuple[str, list[str]]] | None = None) -> dict[str, Any]:
    """The launch task of one (arm, seed): train every stage not done yet, then commit result.json."""
    from cpt.io import write_json_atomic

    run = Path(folder)
    plan = json.loads((run / "run.json").read_text())
    if plan["fingerprint"] != fingerprint:
        raise ValueError(f"{run}/run.json: fingerprint {plan['fingerprint']} is not the task's {fingerprint}")
    result_path = run / RESULT_FILE
    if result_path.is_file():
        return json.loads(result_path.read_text())
    seconds: dict[str, float] = {}
    reused: dict[str, str] = {}
    for stage in stages:
        marker = run / f"{stage}.done.json"
        if marker.is_file():
            done = json.loads(marker.read_text())
            seconds[stage] = done["seconds"]
            if REUSED_FROM in done:
                reused[stage] = done[REUSED_FROM]
            continue
        seconds[stage] = round(run_stage(run, stage, train_command, workdir, threads), 3)
        write_json_atomic(marker, {"stage": stage, "seconds": seconds[stage]})
    metrics, where = final_eval_metrics(run / stages[-1] / "metrics.jsonl")
    higher: list[str] = []
    for name, args in evals or []:
        figures, up = run_eval(run, name, list(args), workdir, threads)
        metrics.update(figures)
        higher += up
    result = {"arm": plan["arm"], "seed": plan["seed"], "run": f"{run.parent.name}/{run.name}",
              "fingerprint": fingerprint, "metrics": metrics, **where, "higher_is_better": sorted(higher),
              "stage_seconds": seconds, "train_seconds": round(sum(seconds.values()), 3),
              **({"reused_stages": reused} if reused else {})}
    write_json_atomic(result_path, result, sort_keys=True)
    return result


__all__ = ["DEFAULT_TRAIN_COMMAND", "PYTHON", "RESULT_FILE", "REUSED_FROM", "STAGE_ENV", "kill_leftovers", "run_eval",
           "run_stage", "run_sweep_run"]
