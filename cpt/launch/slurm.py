"""Slurm through submitit: the slices as one array job, the merge as a job that depends on them.

On Slurm the merge job is submitted right after the array, with `--dependency=afterok:` on every
slice job, so it runs even if the driver is gone by then. A failed slice is resubmitted by the
driver (one job each, counted like every other retry); its merge job can then never start, so it is
cancelled and submitted again with `afterok:` on the final attempts. Where `sacct` does not answer
(no accounting storage), a job that died without a result is noticed through `squeue`
(cpt.launch.slurm_queue) instead of being waited on forever. `submitit-local` is submitit's
LocalExecutor: the same code path on this machine (tests, dry runs) but without a scheduler, so
there the merge job is submitted once the slices ended.
"""
from __future__ import annotations

from typing import Any, Sequence

from cpt.launch.executors import Attempt, Executor, _last_line, _log_tail
from cpt.launch.slurm_queue import QueueWatch
from cpt.launch.spec import LaunchError
from cpt.launch.task import Task, run_task


def _import_submitit():
    try:
        import submitit
    except ImportError:
        raise LaunchError("--executor slurm needs submitit, which is not installed: pip install 'cpt[slurm]'") from None
    return submitit


class SlurmExecutor(Executor):
    merges_in_driver = False  # the merge is a job of its own (dependent on the slices on Slurm)

    def start(self) -> None:
        submitit = _import_submitit()
        self.submitit = submitit
        self.merge_task: Task | None = None
        self.merge_job: Any = None  # submitted with the array (Slurm), waiting on it
        self.merge_after: list[str] = []
        self.queue, self.lost = QueueWatch(), {}  # lost: job id -> the queue's end state (no result)
        folder = self.launch_dir / "submitit"
        spec = self.spec
        if spec.executor == "submitit-local":
            self.ex = submitit.LocalExecutor(folder=folder)
            self.ex.update_parameters(timeout_min=spec.slurm_time_min, cpus_per_task=spec.cpus_per_task,
                                      gpus_per_node=int(spec.gpus_per_task))
        else:
            import shutil

            if shutil.which("sbatch") is None:
                raise LaunchError("--executor slurm needs Slurm's sbatch on PATH, and this machine has none "
                                  "(--executor submitit-local runs the same code path here)")
            self.ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
            params: dict[str, Any] = dict(timeout_min=spec.slurm_time_min, cpus_per_task=spec.cpus_per_task,
                                          nodes=1, tasks_per_node=1, name="cpt-launch",
                                          slurm_additional_parameters=dict(spec.slurm_options))
            if spec.gpus_per_task:
                params["gpus_per_node"] = int(spec.gpus_per_task)
            if spec.slurm_partition:
                params["slurm_partition"] = spec.slurm_partition
            self.ex.update_parameters(**params)

    def submit_many(self, batch: Sequence[tuple[Task, int]]) -> list[Attempt]:
        if len(batch) <= 1:
            attempts = [self.submit(t, n) for t, n in batch]
        else:
            with self.ex.batch():  # one array job
                jobs = [self.ex.submit(run_task, t.to_json(), str(self.launch_dir), n) for t, n in batch]
            attempts = [Attempt(t, n, job, str(job.job_id)) for (t, n), job in zip(batch, jobs)]
        if attempts and self.merge_task is not None and self.merge_job is None and self.spec.executor == "slurm":
            self.merge_job = self._submit_merge([a.handle_id for a in attempts])
        return attempts

    def plan_merge(self, merge: Task | None) -> None:
        self.merge_task = merge

    def _submit_merge(self, after: list[str]):
        self.merge_after = list(after)
        if self.spec.executor == "slurm":
            self.ex.update_parameters(slurm_additional_parameters={
                **self.spec.slurm_options, "dependency": "afterok:" + ":".join(after)})
        try:
            return self.ex.submit(run_task, self.merge_task.to_json(), str(self.launch_dir), 1)
        finally:
            if self.spec.executor == "slurm":
                self.ex.update_parameters(slurm_additional_parameters=dict(self.spec.slurm_options))

    def stop(self) -> None:
        if getattr(self, "merge_job", None) is not None and not self.merge_job.done():
            self.merge_job.cancel(check=False)  # its slices failed for good: it can never start

    def submit(self, task: Task, number: int) -> Attempt:
        job = self.ex.submit(run_task, task.to_json(), str(self.launch_dir), number)
        return Attempt(task, number, job, str(job.job_id))

    def wait(self, running, timeout):
        import time

        deadline = time.monotonic() + timeout
        while True:
            ended = [a for a in running if a.handle.done()] or self._ended_by_queue(running)
            if ended or time.monotonic() >= deadline:
                return [self._outcome(a) for a in ended]
            time.sleep(0.2)

    def _ended_by_queue(self, running) -> list[Attempt]:
        """Attempts without a result whose accounting state is unknown and that the queue shows ended."""
        if self.spec.executor != "slurm":
            return []
        unknown = {a.handle_id: a for a in running
                   if a.handle.watcher.get_state(a.handle.job_id, mode="cache") == "UNKNOWN"}
        ended = []
        for job, state in self.queue.ended(unknown).items():
            if not unknown[job].handle.done():  # its result did not appear meanwhile
                self.lost[job] = state
                ended.append(unknown[job])
        return ended

    def _outcome(self, a: Attempt):
        if a.handle_id in self.lost:
            return a, None, (f"job {a.handle_id} ended without a result ({self.lost[a.handle_id]}, by squeue: "
                             f"sacct does not answer): {_log_tail(self.launch_dir, a)}")
        try:
            return a, a.handle.result(), None
        except Exception as e:  # noqa: BLE001 - submitit's Failed/UncompletedJobError carry the cause
            return a, None, f"job {a.handle_id} {a.handle.state}: {_last_line(str(e)) or _log_tail(self.launch_dir, a)}"

    def run_merge(self, merge: Task, after: list[str]) -> dict[str, Any]:
        self.merge_task = merge
        if self.merge_job is not None and sorted(self.merge_after) != sorted(after):
            self.merge_job.cancel(check=False)  # waits on a failed attempt: never starts
            self.merge_job = None
        job = self.merge_job or self._submit_merge(after)
        self.merge_job = None
        attempt = Attempt(merge, 1, job, str(job.job_id))
        ended: list = []
        while not ended:
            ended = self.wait([attempt], 60.0)
        _, result, error = ended[0]
        if error is not None:
            raise LaunchError(f"the merge job {job.job_id} failed: {error} "
                              f"(log {self.launch_dir / 'logs' / 'merge.attempt-1.log'})")
        return result["result"]


__all__ = ["SlurmExecutor"]
