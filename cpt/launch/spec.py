"""How and where a launch runs: the executor's validated settings, and their command-line flags."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

class LaunchError(RuntimeError):
    """A launch could not start, or some task failed for good; the message is one line."""


EXECUTORS = ("local", "ray", "slurm", "submitit-local")


@dataclass(frozen=True, slots=True, kw_only=True)
class LaunchSpec:
    """Settings of one launch; the tasks themselves say nothing about where they run."""

    executor: str = "local"
    """local (processes on this machine), ray, slurm (submitit), submitit-local (submitit's local
    executor: the Slurm code path on this machine)."""
    max_retries: int = 2
    """Attempts after the first for a failed task (a task resumes, so a retry finishes it)."""
    cpus_per_task: int = 1
    """CPU cores each task gets (its worker processes / threads)."""
    gpus_per_task: float = 0
    """GPUs each task gets (score, synth); Ray accepts fractions."""
    ray_address: str | None = None
    """Running Ray cluster (else $RAY_ADDRESS; neither: a local Ray on this machine's CPUs)."""
    local_cpus: int | None = None
    """CPUs of the local pool or local Ray cluster (default: all of this machine's)."""
    slurm_partition: str | None = None
    """Slurm partition of the slice and merge jobs."""
    slurm_time_min: int = 240
    """Time limit of each Slurm job in minutes."""
    slurm_options: dict[str, str] = field(default_factory=dict)
    """Further sbatch options (submitit's slurm_additional_parameters), e.g. account, qos."""
    progress: bool = True
    """Draw the progress line on stderr."""
    warm_up: bool = True
    """Run the caller's warm-up (`start_executor`) in the workers while it plans: off only to
    measure what it saves, or to keep a worker from loading before its slice is known."""

    def __post_init__(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"--executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.max_retries < 0:
            raise ValueError(f"--max-retries must be >= 0, got {self.max_retries}")
        if self.cpus_per_task < 1 or self.gpus_per_task < 0:
            raise ValueError(f"--cpus-per-task must be >= 1 and --gpus-per-task >= 0 "
                             f"(got {self.cpus_per_task}, {self.gpus_per_task})")
        if self.local_cpus is not None and self.local_cpus < 1:
            raise ValueError(f"--local-cpus must be >= 1, got {self.local_cpus}")


def add_executor_arguments(p: argparse.ArgumentParser, retries_flag: str = "--max-retries",
                           warm_up: bool = False) -> None:
    """The flags every scale-out command shares (with its own --num-shards: the number of slices).

    `retries_flag`: `cpt synth` has its own --max-retries (of a request), so it names this one apart.
    `warm_up`: the command warms its workers up (preprocess, tag, score), so it offers --no-warm-up."""
    g = p.add_argument_group("executor (run all --num-shards slices, then the merge, in one command)")
    g.add_argument("--executor", choices=EXECUTORS, default=None,
                   help="run every slice on this executor and merge (default: this process, one slice)")
    g.add_argument(retries_flag, dest="launch_max_retries", type=int, default=2,
                   help="retries of a failed slice (it resumes where it stopped)")
    g.add_argument("--cpus-per-task", type=int, default=1, help="CPU cores per slice")
    g.add_argument("--gpus-per-task", type=float, default=0, help="GPUs per slice")
    g.add_argument("--ray-address", default=None,
                   help="running Ray cluster (default $RAY_ADDRESS; neither: start a local Ray)")
    g.add_argument("--local-cpus", type=int, default=None,
                   help="CPUs of the local pool / local Ray (default: all of this machine's)")
    g.add_argument("--slurm-partition", default=None, help="Slurm partition")
    g.add_argument("--slurm-time-min", type=int, default=240, help="Slurm time limit per job (minutes)")
    g.add_argument("--slurm-option", action="append", default=[], metavar="KEY=VALUE",
                   help="further sbatch option, repeatable (account=..., qos=...)")
    if warm_up:
        g.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                       help="do not load the slices' tokenizer / model in the workers ahead of their first "
                            "slice, while the driver plans (on by default for local and Ray)")


EXECUTOR_DESTS = ("executor", "launch_max_retries", "cpus_per_task", "gpus_per_task", "ray_address",
                  "local_cpus", "slurm_partition", "slurm_time_min", "slurm_option", "warm_up")
"""Namespace entries of the executor flags: never passed on to the slices."""


def spec_from_args(args: argparse.Namespace, progress: bool = True) -> LaunchSpec:
    options = {}
    for item in args.slurm_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--slurm-option {item!r}: expected KEY=VALUE")
        options[key.replace("-", "_")] = value
    return LaunchSpec(executor=args.executor, max_retries=args.launch_max_retries,
                      cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task,
                      ray_address=args.ray_address, local_cpus=args.local_cpus,
                      slurm_partition=args.slurm_partition, slurm_time_min=args.slurm_time_min,
                      slurm_options=options, progress=progress, warm_up=getattr(args, "warm_up", True))


__all__ = ["EXECUTORS", "LaunchError", "EXECUTOR_DESTS", "LaunchSpec", "add_executor_arguments", "spec_from_args"]
