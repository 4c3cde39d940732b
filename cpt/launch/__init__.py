"""Executors that run the slices of an offline tool (or the arms of a sweep) and then their merge.

    from cpt.launch import LaunchSpec, Task, launch
    report = launch(tasks, merge_task, LaunchSpec(executor="ray", cpus_per_task=1), "out.launch", "preprocess")

A task is a pure function of its JSON arguments whose output is resumable and committed atomically
(`cpt.launch.task`); an executor (`local`, `ray`, `slurm`, `submitit-local`) only decides where an
attempt runs; the driver (`cpt.launch.run`) retries failed attempts, draws one progress line and
writes `LAUNCH/summary.json`. We write no scheduler: Ray and Slurm place the work.
"""
from cpt.launch.run import Report, launch
from cpt.launch.spec import EXECUTORS, LaunchError, LaunchSpec, add_executor_arguments, spec_from_args
from cpt.launch.stream import MergeStream
from cpt.launch.task import Task, TaskFailed

__all__ = ["EXECUTORS", "LaunchError", "LaunchSpec", "MergeStream", "Report", "Task", "TaskFailed",
           "add_executor_arguments", "launch", "spec_from_args"]
