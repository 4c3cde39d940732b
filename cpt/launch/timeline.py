"""Where a launch's wall time went: named moments, in seconds since the driver's process started.

A launch of short tasks is dominated by fixed costs (starting Python, joining the cluster, each
task's worker and set-up, the merge's tail), none of which a per-phase duration shows on its own.
The driver marks its moments (`mark`); each attempt reports when it ran by its host's clock, and
`with_tasks` adds the first and last task start and end, so `LAUNCH/summary.json` reads as one
timeline from the process start to the executor's stop (on a cluster, worker clocks may be skewed
by what NTP leaves).
"""
from __future__ import annotations

import time
from typing import Any, Iterable

from cpt.launch.task import process_started_at


class Timeline:
    def __init__(self, origin: float | None = None) -> None:
        self.origin = origin if origin is not None else (process_started_at() or time.time())
        """Epoch seconds of zero: the driver's process start where known, else now."""
        self.marks: dict[str, float] = {}

    def since(self, at: float) -> float:
        return round(at - self.origin, 3)

    def mark(self, name: str, at: float | None = None) -> None:
        """Record moment `name` (now, or epoch seconds `at`)."""
        self.marks[name] = self.since(time.time() if at is None else at)

    def with_tasks(self, attempts: Iterable[dict[str, Any]]) -> dict[str, float]:
        """The marks and the first/last start and end of the attempts that ran, in time order."""
        ran = [a for a in attempts if "ran_from_s" in a]
        out = dict(self.marks)
        if ran:
            starts, ends = [a["ran_from_s"] for a in ran], [a["ran_to_s"] for a in ran]
            out.update(first_task_started=min(starts), last_task_started=max(starts),
                       first_task_ended=min(ends), last_task_ended=max(ends))
        return dict(sorted(out.items(), key=lambda kv: kv[1]))


__all__ = ["Timeline"]
