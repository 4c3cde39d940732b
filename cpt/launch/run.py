"""The driver loop every executor shares: submit, wait, retry, show progress, merge, summarize.

    report = launch(tasks, merge, spec, launch_dir, label)

A caller that plans its tasks while the executor starts makes it with `start_executor` (passing
it on as `launch(executor=...)`), optionally with a warm-up task that the executor's workers run
first, loading what the tasks share meanwhile (`Executor.warm_up`; recorded in the summary).

Each task is submitted; a failed attempt (an exception, a non-zero exit, a killed worker) is
submitted again until it has had `1 + max_retries` attempts. Because tasks resume, a retry finishes
the work of the attempt before it. When every task succeeded, the merge task runs (in this process
for local and Ray, as a dependent job for Slurm). Where it would run in this process and the caller
gives it as a `MergeStream` too, the driver instead merges the parts committed so far between its
waits, so that only the tail is left when the last task ends (`cpt.launch.stream`). When any task
failed for good, the merge does not run (a stream is aborted) and `LaunchError` names the failed
tasks and their logs - rerunning the same command then finishes only those, as the finished ones
find their output committed. Either way `LAUNCH/summary.json` records every attempt and the
seconds of each phase (starting the executor, the tasks, the merge after them, and the merging
done while they ran), so a slow launch shows where its time went (written last).
"""
from __future__ import annotations

import dataclasses
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from cpt.launch.executors import Attempt, Executor, make_executor
from cpt.launch.progress import PROGRESS_ENV, Board
from cpt.launch.spec import LaunchError, LaunchSpec
from cpt.launch.stream import MergeStream
from cpt.launch.task import Task, log_path
from cpt.launch.timeline import Timeline

SUMMARY_VERSION = 1


@dataclass
class TaskRecord:
    task: Task
    attempts: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None


@dataclass
class Report:
    """What a launch did: per-task results (in task order) and the merge's result."""

    results: list[dict[str, Any]]
    merge: dict[str, Any] | None
    summary: dict[str, Any]


def launch(tasks: Sequence[Task], merge: Task | None, spec: LaunchSpec, launch_dir: str | Path,
           label: str, executor: Executor | None = None,
           merge_stream: Callable[[], MergeStream] | None = None, timeline: Timeline | None = None) -> Report:
    """Run every task on `spec.executor` with retries, then `merge`; see the module docstring.

    `executor`: one the caller started already (to overlap its start with planning); it is
    stopped here like one made here. `merge_stream`: makes the same merge as a stream, used
    where the executor runs the merge in this process. `timeline`: the caller's, holding what it
    did before (starting the executor, planning), continued here into the summary."""
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"task names must be unique: {names}")
    launch_dir = Path(launch_dir).absolute()
    tasks, merge = _with_driver_env(tasks, merge, launch_dir)
    t0 = time.time()
    timeline = timeline or Timeline()
    records = {t.name: TaskRecord(t) for t in tasks}
    board = Board(f"{label} {spec.executor}", [t.units for t in tasks], names, launch_dir, spec.progress)
    phases: dict[str, float] = {}
    timeline.mark("launched")
    if executor is None:
        executor = start_executor(spec, launch_dir)
        timeline.mark("executor_started")
    phases["start"] = time.time() - t0
    stream, stopping, warmed = None, None, []
    try:
        if merge is not None and merge_stream is not None and executor.merges_in_driver:
            stream, phases["merge_overlapped"] = merge_stream(), 0.0
        executor.plan_merge(merge)
        _drive(executor, records, spec, board, stream, phases, timeline)
        phases["tasks"] = time.time() - t0 - phases["start"]
        timeline.mark("tasks_noticed")
        warmed = _warm_up_records(executor, timeline)
        if stream is not None or merge is None:  # nothing in flight, and the rest needs no executor
            stopping = _stop_in_background(executor, timeline)
        failed = [r for r in records.values() if not r.ok]
        merged = None
        if not failed and merge is not None:
            if stream is not None:
                merged, stream = stream.finish(), None
            else:
                merged = executor.run_merge(merge, [records[n].attempts[-1]["handle_id"] for n in names])
            phases["merge"] = time.time() - t0 - phases["start"] - phases["tasks"]
            timeline.mark("merged")
        board.refresh(force=True)
    finally:
        if stream is not None:
            stream.abort()
        if stopping is None:
            executor.stop()
            timeline.mark("executor_stopped")
        else:
            stopping.result()
    summary = _summary(records, merge, merged, spec, label, board, time.time() - t0)
    summary["phase_seconds"] = {k: round(v, 3) for k, v in phases.items()} | {
        "timeline": timeline.with_tasks([a for r in records.values() for a in r.attempts])}
    summary["warm_up"] = warmed
    from cpt.io import write_json_atomic

    write_json_atomic(launch_dir / "summary.json", summary, sort_keys=True)
    if failed:
        raise LaunchError(_failure_line(failed, spec, launch_dir, label))
    return Report([records[n].result for n in names], merged, summary)


def start_executor(spec: LaunchSpec, launch_dir: str | Path, warm_up: Task | None = None,
                   count: int = 0) -> Executor:
    """Make and start `spec`'s executor (for `launch(executor=...)`); with `warm_up` (unless
    `spec.warm_up` is off), run it at once in up to `count` of its workers (`Executor.warm_up`),
    with the driver's environment like every task: the workers then start and load what the tasks
    share while the caller plans them."""
    launch_dir = Path(launch_dir).absolute()
    executor = make_executor(spec, launch_dir)
    executor.start()
    if warm_up is not None and count > 0 and spec.warm_up:
        try:
            (launch_dir / "progress").mkdir(parents=True, exist_ok=True)
            executor.warm_up(_placed(warm_up), count)
        except BaseException:
            executor.stop()
            raise
    return executor


def _placed(t: Task) -> Task:
    """`t` with the driver's CPT_* variables and working folder."""
    return dataclasses.replace(t, env={**forwarded_env(), **t.env}, cwd=t.cwd or os.getcwd())


def _with_driver_env(tasks: Sequence[Task], merge: Task | None, launch_dir: Path) -> tuple[list[Task], Task | None]:
    """The tasks with the driver's environment; no progress file left of these tasks' names (an
    earlier launch's: other files there may be this launch's warm-ups, running)."""
    (launch_dir / "progress").mkdir(parents=True, exist_ok=True)
    for t in tasks:
        (launch_dir / "progress" / f"{t.name}.json").unlink(missing_ok=True)
    return [_placed(t) for t in tasks], None if merge is None else _placed(merge)


def _warm_up_records(executor: Executor, timeline: Timeline) -> list[dict[str, Any]]:
    """Where each warm-up ran and when (as attempts are recorded) and what it returned, or why it did not."""
    return [{"name": a.task.name, "ok": error is None, "error": error, "id": a.handle_id,
             **(_outcome_fields(outcome, timeline) | {"result": outcome["result"]} if outcome else {})}
            for a, outcome, error in executor.warm_ups()]


def forwarded_env() -> dict[str, str]:
    """The driver's CPT_* settings (CPT_TRACEBACK, test hooks) reach every task, wherever it runs."""
    return {k: v for k, v in os.environ.items() if k.startswith("CPT_") and k != PROGRESS_ENV}


def _stop_in_background(executor: Executor, timeline: Timeline) -> Future:
    """Release the executor (leaving a Ray cluster takes a noticeable moment) while this process
    runs the merge's tail; `result()` waits for it and re-raises what it raised."""
    def stop() -> None:
        executor.stop()
        timeline.mark("executor_stopped")

    pool = ThreadPoolExecutor(1, thread_name_prefix="cpt-launch-stop")
    try:
        return pool.submit(stop)
    finally:
        pool.shutdown(wait=False)


def _drive(executor: Executor, records: dict[str, TaskRecord], spec: LaunchSpec, board: Board,
           stream: MergeStream | None, phases: dict[str, float], timeline: Timeline) -> None:
    queue: list[tuple[Task, int]] = [(r.task, 1) for r in records.values()]
    running: dict[Any, Attempt] = {}
    while queue or running:
        room = executor.capacity() - len(running)
        batch, queue = queue[:max(room, 0)], queue[max(room, 0):]
        for attempt in executor.submit_many(batch):
            running[attempt.handle] = attempt
        board.running = len(running)
        merged_part = False
        if stream is not None:  # one part per turn: an ended task is noticed within one part's merge
            t = time.time()
            merged_part = stream.advance()
            phases["merge_overlapped"] += (time.time() - t) if merged_part else 0.0
        idle = 0.5 if stream is None else 0.2  # streaming: look for newly committed parts sooner
        for attempt, outcome, error in executor.wait(list(running.values()), timeout=0 if merged_part else idle):
            del running[attempt.handle]
            rec = records[attempt.task.name]
            rec.attempts.append({"attempt": attempt.number, "handle_id": attempt.handle_id,
                                 "ok": error is None, "error": error,
                                 "seconds": round(time.time() - attempt.started, 3),
                                 # seconds: from submission (queueing, worker start); ran_seconds: the task's own
                                 "noticed_s": timeline.since(time.time()),
                                 **(_outcome_fields(outcome, timeline) if outcome else {})})
            if error is None:
                rec.result = outcome["result"]
                board.done.add(attempt.task.name)
            elif attempt.number <= spec.max_retries:
                board.retried += 1
                queue.append((attempt.task, attempt.number + 1))
            else:
                board.failed += 1
        board.running = len(running)
        board.refresh()


def _outcome_fields(outcome: dict[str, Any], timeline: Timeline) -> dict[str, Any]:
    """What an attempt's own report adds: where it ran, its own seconds, and its place on the
    timeline (`ran_from_s`/`ran_to_s` by its host's clock; `noticed_s` is when the driver saw it end)."""
    return {"pid": outcome["pid"], "host": outcome["host"], "ran_seconds": outcome.get("seconds"),
            "cpu_seconds": outcome.get("cpu_seconds"), "worker_age": outcome.get("worker_age"),
            **({"ran_from_s": timeline.since(outcome["started_at"]), "ran_to_s": timeline.since(outcome["ended_at"])}
               if "started_at" in outcome else {})}


def _failure_line(failed: list[TaskRecord], spec: LaunchSpec, launch_dir: Path, label: str) -> str:
    named = ", ".join(
        f"{r.task.name} ({r.attempts[-1]['error']}; log {log_path(launch_dir, r.task.name, r.attempts[-1]['attempt'])})"
        for r in failed[:3])
    more = f" and {len(failed) - 3} more" if len(failed) > 3 else ""
    return (f"{len(failed)} task(s) failed after {spec.max_retries + 1} attempt(s): {named}{more}; the merge "
            f"did not run; rerun the same command to finish only these (summary {launch_dir / 'summary.json'})")


def _summary(records: dict[str, TaskRecord], merge: Task | None, merged: dict[str, Any] | None,
             spec: LaunchSpec, label: str, board: Board, seconds: float) -> dict[str, Any]:
    from dataclasses import asdict

    return {
        "version": SUMMARY_VERSION, "label": label, "spec": asdict(spec),
        "tasks": [{"name": r.task.name, "fn": r.task.fn, "units": r.task.units, "ok": r.ok,
                   "attempts": [{k: v for k, v in a.items() if k != "handle_id"} | {"id": a["handle_id"]}
                                for a in r.attempts],
                   "result": r.result} for r in records.values()],
        "succeeded": sum(r.ok for r in records.values()),
        "failed": [r.task.name for r in records.values() if not r.ok],
        "retried": sum(max(len(r.attempts) - 1, 0) for r in records.values()),
        "merge": None if merge is None else {"fn": merge.fn, "ran": merged is not None, "result": merged},
        "docs": board.docs, "seconds": round(seconds, 3),
        "docs_per_s": round(board.docs / seconds, 1) if seconds > 0 else 0.0,
    }


__all__ = ["LaunchError", "Report", "launch", "start_executor"]
