"""What Slurm's queue says of jobs whose accounting state is unknown: the driver's way to notice a
job that died without a result where `sacct` does not answer.

submitit decides a job is done when its result file exists or when `sacct` reports an ended state.
On a cluster without accounting storage (small and private clusters; `sacct` then fails, and
submitit warns and keeps the state UNKNOWN), a job killed by the OOM killer, `scancel`, a node
failure or SIGKILL leaves no result file and never looks ended: the driver would wait forever.
`squeue -t all` still lists ended jobs (with their end state) for MinJobAge seconds after they end,
and not at all later; so an attempt is taken as ended without a result when squeue gives an end
state, or does not list it on two polls in a row (`QueueWatch`), and no result file appeared.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

ENDED = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                   "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED"})
"""Job states after which a job runs no more (a requeued job shows as PENDING again)."""
POLL_S = 10.0
"""Seconds between squeue calls: a driver asks once per interval about all its unknown jobs."""


def parse_queue(text: str) -> dict[str, str]:
    """Job id -> state from `squeue -h -r -o %i|%T` output (one array element per line)."""
    states = {}
    for line in text.splitlines():
        job, sep, state = line.strip().partition("|")
        if sep:
            states[job] = state.split()[0].rstrip("+") if state.strip() else ""
    return states


def squeue_states(job_ids: Sequence[str]) -> dict[str, str] | None:
    """The queue's state of each listed job that squeue still knows (None: squeue did not answer)."""
    command = ["squeue", "-h", "-r", "-t", "all", "-o", "%i|%T", "-j", ",".join(job_ids)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        # every id purged from the queue: squeue refuses the list; none of them is listed
        return {} if "Invalid job id" in done.stderr else None
    return parse_queue(done.stdout)


@dataclass
class QueueWatch:
    """Which of a driver's jobs ended without a result, by the queue (see the module docstring)."""

    states: Callable[[Sequence[str]], dict[str, str] | None] = squeue_states
    poll_s: float = POLL_S
    _last: float = field(default=float("-inf"))
    _unlisted: set[str] = field(default_factory=set)

    def ended(self, job_ids: Iterable[str], now: float | None = None) -> dict[str, str]:
        """Of `job_ids` (jobs without a result file whose accounting state is unknown), those the
        queue shows ended, each with its state ("gone from the queue" for an unlisted one); asks
        squeue at most once per `poll_s`, and says nothing in between."""
        now = time.monotonic() if now is None else now
        ids = sorted(set(job_ids))
        if not ids or now - self._last < self.poll_s:
            return {}
        self._last = now
        listed = self.states(ids)
        if listed is None:
            return {}  # squeue failed: no news, ask again next interval
        out = {j: listed[j] for j in ids if listed.get(j) in ENDED}
        unlisted = {j for j in ids if j not in listed}
        out.update({j: "gone from the queue" for j in unlisted & self._unlisted})  # twice in a row
        self._unlisted = unlisted
        return out


__all__ = ["ENDED", "POLL_S", "QueueWatch", "parse_queue", "squeue_states"]
