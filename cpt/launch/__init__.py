"""Executors that run the slices of an offline tool (or the arms of a sweep) and then their merge.

    from cpt.launch import LaunchSpec, Task, launch
    report = launch(tasks, merge_task, LaunchSpec(executor="ray", cpus_per_task=1), "out.launch", "preprocess")

A task is a pure function of its JSON arguments whose output is resumable and committed atomically
(`cpt.launch.task`); an executor (`local`, `ray`, `slurm`, `submitit-local`) only decides where an
attempt runs; the driver (`cpt.launch.run`) retries failed attempts, draws one progress line and
writes `LAUNCH/summary.json`. We write no scheduler: Ray and Slurm place the work.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from cpt.lazy import lazy_exports

if TYPE_CHECKING:
    from cpt.launch.run import Report, launch
    from cpt.launch.spec import EXECUTORS, LaunchError, LaunchSpec, add_executor_arguments, spec_from_args
    from cpt.launch.stream import MergeStream
    from cpt.launch.task import Task, TaskFailed

_WHERE = {"Report": "run", "launch": "run", "EXECUTORS": "spec", "LaunchError": "spec", "LaunchSpec": "spec",
          "add_executor_arguments": "spec", "spec_from_args": "spec", "MergeStream": "stream", "Task": "task",
          "TaskFailed": "task"}

__all__ = sorted(_WHERE)


# Imported on first use: a task's worker process needs cpt.launch.task only, not the driver loop
# and the executors (every run of a sweep starts one).
__getattr__ = lazy_exports(__name__, _WHERE)
