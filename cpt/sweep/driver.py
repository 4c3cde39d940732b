"""Run a sweep: plan every (arm, seed), launch the unfinished runs, collect results, report.

    SWEEP_DIR/sweep.json           the plan: arms, seeds, runs, report settings (written first)
    SWEEP_DIR/runs/ARM/seed-S/     run.json, STAGE.yaml, STAGE/ (the trainer's folder), logs/, result.json
    SWEEP_DIR/launch/              the executor's logs, progress and summary.json
    SWEEP_DIR/results.jsonl        one row per finished run (cpt.sweep.collect)
    SWEEP_DIR/report/              report.md, report.json, plots/ (when a baseline is named)

Runs with a committed result are not launched again; the others are launch tasks (`cpt.launch`),
so the executor decides where they run and retries a failed one (which resumes). Collection and the
report are the launch's merge task: on Slurm a job that waits for every run. When some run failed
for good, the finished ones are still collected before the error is raised, and rerunning the same
command finishes only the rest.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from cpt.sweep.plan import Run, plan_runs, write_run_plan
from cpt.sweep.runner import RESULT_FILE
from cpt.sweep.spec import SweepSpec

if TYPE_CHECKING:
    from cpt.launch import LaunchSpec

SWEEP_FILE = "sweep.json"
SWEEP_VERSION = 1


def run_state(run: Run) -> str:
    """done (result committed) / started (some stage trained or began) / new."""
    if (run.folder / RESULT_FILE).is_file():
        return "done"
    if any(run.stage_dir(stage).exists() for stage, _ in run.stages):
        return "started"
    return "new"


def write_plan(spec: SweepSpec, sweep_dir: Path, runs: list[Run]) -> None:
    from dataclasses import asdict

    from cpt.io import write_json_atomic

    for run in runs:
        write_run_plan(run, spec)
    write_json_atomic(sweep_dir / SWEEP_FILE, {
        "version": SWEEP_VERSION, "name": spec.name, "sweep_file": str(spec.path), "workdir": str(spec.workdir),
        "arms": [a.name for a in spec.arms], "seeds": spec.seeds,
        "runs": [{"arm": r.arm, "seed": r.seed, "folder": str(r.folder), "fingerprint": r.fingerprint} for r in runs],
        "report": asdict(spec.report)})


def read_plan(sweep_dir: Path) -> dict[str, Any]:
    path = sweep_dir / SWEEP_FILE
    if not path.is_file():
        raise ValueError(f"{sweep_dir}: not a sweep folder (no {SWEEP_FILE}; `cpt sweep SWEEP.yaml --out` makes one)")
    plan = json.loads(path.read_text())
    if plan.get("version") != SWEEP_VERSION:
        raise ValueError(f"{path}: version {plan.get('version')}, this cpt reads version {SWEEP_VERSION}")
    return plan


def report_sweep(sweep_dir: Path, baseline: str | None = None, metrics: list[str] | None = None,
                 out: Path | None = None) -> dict[str, Any]:
    """Write the report of SWEEP_DIR's results.jsonl (settings from the sweep file unless given).

    A metric is higher-is-better when the sweep file says so or when the eval that measured it
    does (the runs' `higher_is_better`, e.g. lm-eval accuracies)."""
    from cpt.sweep.collect import read_results
    from cpt.sweep.report import write_report

    plan = read_plan(sweep_dir)
    rows = read_results(sweep_dir)
    done = {(r["arm"], r["seed"]) for r in rows}
    missing = [f"{r['arm']}/seed-{r['seed']}" for r in plan["runs"] if (r["arm"], r["seed"]) not in done]
    settings = plan["report"]
    higher = sorted({*settings["higher_is_better"], *(m for r in rows for m in r.get("higher_is_better") or [])})
    return write_report(rows, out or sweep_dir / "report", plan["name"], plan["arms"],
                        metrics or settings["metrics"], baseline or settings["baseline"],
                        higher, settings["confidence"], missing)


def finish_sweep(sweep_dir: str) -> dict[str, Any]:
    """The launch's merge task: results.jsonl from every committed run, then the report (with a baseline)."""
    from cpt.sweep.collect import write_results

    sweep_dir = Path(sweep_dir)
    plan = read_plan(sweep_dir)
    rows, missing = write_results(sweep_dir, [Path(r["folder"]) for r in plan["runs"]])
    out: dict[str, Any] = {"results": rows, "missing": missing}
    if plan["report"]["baseline"] and rows:
        report = report_sweep(sweep_dir)
        out["report"] = str(sweep_dir / "report" / "report.md")
        out["verdicts"] = {m: {a: e["arms"][a].get("vs_baseline", {}).get("verdict") for a in plan["arms"]
                               if a != plan["report"]["baseline"]} for m, e in report["metrics"].items()}
    return out


def run_sweep(spec: SweepSpec, sweep_dir: Path, launch_spec: "LaunchSpec",
              log: Callable[[str], None] = print, reuse_from: Sequence[Path] = ()) -> dict[str, Any]:
    """Plan, launch the unfinished runs on `launch_spec`'s executor, collect and report. `reuse_from`:
    sweep folders whose done stages a run not started here takes instead of training them
    (cpt.sweep.reuse)."""
    from cpt.launch import LaunchError, Task, launch
    from cpt.sweep.reuse import reuse_stages

    sweep_dir = sweep_dir.absolute()
    runs = plan_runs(spec, sweep_dir)
    write_plan(spec, sweep_dir, runs)
    reuse_stages(runs, spec.train_command, spec.workdir, list(reuse_from), log)
    todo = [r for r in runs if run_state(r) != "done"]
    log(f"[sweep] {spec.name}: {len(spec.arms)} arms x {len(spec.seeds)} seeds = {len(runs)} runs, "
        f"{len(runs) - len(todo)} done, {len(todo)} to run on {launch_spec.executor} -> {sweep_dir}")
    threads = launch_spec.cpus_per_task
    tasks = [Task(name=r.name, fn="cpt.sweep.runner:run_sweep_run",
                  kwargs={"folder": str(r.folder), "stages": [s for s, _ in r.stages],
                          "train_command": spec.train_command, "workdir": str(spec.workdir),
                          "threads": threads, "fingerprint": r.fingerprint,
                          **({"evals": r.evals} if r.evals else {})},
                  env={"OMP_NUM_THREADS": str(threads)}) for r in todo]
    merge = Task(name="collect", fn="cpt.sweep.driver:finish_sweep", kwargs={"sweep_dir": str(sweep_dir)})
    if not tasks:
        return finish_sweep(str(sweep_dir))
    try:
        return launch(tasks, merge, launch_spec, sweep_dir / "launch", f"sweep {spec.name}").merge
    except LaunchError:
        finish_sweep(str(sweep_dir))  # what finished is collected; a rerun finishes the rest
        raise


__all__ = ["SWEEP_FILE", "finish_sweep", "read_plan", "report_sweep", "run_state", "run_sweep", "write_plan"]
