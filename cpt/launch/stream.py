"""A merge the driver can do while the tasks still run, for executors whose driver runs the merge.

Where the merge runs in the driver (local, Ray), waiting for the last task before merging leaves
the merge's whole time as a serial tail, and the CPUs idle while the first tasks already ended. A
`MergeStream` lets the driver loop (`cpt.launch.run`) merge whatever parts are committed so far
between its waits; when every task succeeded, `finish` merges the rest and commits. It must give
exactly what the merge task gives, and commit nothing before `finish` (an aborted or killed driver
leaves no output that reads as complete; a rerun starts the stream afresh). On Slurm the merge is a
dependent job, so there is no driver to stream it and the merge task runs as it is.
"""
from __future__ import annotations

from typing import Any, Protocol


class MergeStream(Protocol):
    def advance(self) -> bool:
        """Merge one more committed part if there is one (a short step); True if it did."""

    def finish(self) -> dict[str, Any]:
        """Every task succeeded: merge the remaining parts, commit, return the merge task's result."""

    def abort(self) -> None:
        """Some task failed for good, or the driver stops: delete what is not committed."""


__all__ = ["MergeStream"]
