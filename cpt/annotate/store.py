"""Resumable annotation results: a checkpoint file of partial results, then one atomic final write.

Every processed chunk of documents is appended to `OUT.partial.jsonl` (flushed and fsynced) keyed
by doc_id, so a killed run restarts where it stopped. The checkpoint starts with a run key (model,
taxonomy, lengths ...) and a rerun with different settings refuses it instead of mixing results.
The final table is written under a temporary name and renamed; the summary JSON is written last
(the completion marker), then the checkpoint is removed.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from cpt.io import atomic_path, write_json_atomic, write_jsonl_atomic


@dataclass(frozen=True, slots=True)
class Result:
    doc_id: str
    values: dict[str, Any] | None
    """Column values for this document, or None when it was skipped."""
    skip: str | None = None
    """Why the document was skipped (`empty`, `no_tokens`, ...); None when annotated."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint from a run with other settings is in the way."""


class ResultStore:
    """Partial results of one annotation run writing `out`."""

    def __init__(self, out: str | Path, run_key: dict[str, Any]):
        self.out = Path(out)
        self.partial = self.out.with_name(self.out.name + ".partial.jsonl")
        self.summary_path = self.out.with_name(self.out.name + ".summary.json")
        self.run_key = json.loads(json.dumps(run_key, sort_keys=True, default=str))
        self._file = None
        self.done: dict[str, Result] = {}

    def open(self) -> dict[str, Result]:
        """Load the results a previous run checkpointed (empty when starting fresh); idempotent."""
        if self._file is not None:
            return self.done
        self.out.parent.mkdir(parents=True, exist_ok=True)
        done: dict[str, Result] = {}
        if self.partial.exists():
            done = self._load()
        else:
            with self.partial.open("w", encoding="utf-8") as f:
                f.write(json.dumps({"run_key": self.run_key}, sort_keys=True) + "\n")
        self._file = self.partial.open("a", encoding="utf-8")
        self.done = done
        return done

    def _load(self) -> dict[str, Result]:
        raw = self.partial.read_bytes()
        lines = raw.split(b"\n")
        header = json.loads(lines[0]) if lines and lines[0] else {}
        if header.get("run_key") != self.run_key:
            raise CheckpointMismatchError(
                f"{self.partial} was written by a run with other settings "
                f"({header.get('run_key')} != {self.run_key}); delete it to start over")
        done: dict[str, Result] = {}
        good = len(lines[0]) + 1
        for line in lines[1:]:
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a crash: everything after it is redone
            done[r["doc_id"]] = Result(r["doc_id"], r["values"], r["skip"])
            good += len(line) + 1
        if good < len(raw):
            with self.partial.open("r+b") as f:
                f.truncate(good)
        return done

    def append(self, results: Iterable[Result]) -> None:
        assert self._file is not None, "open() first"
        for r in results:
            self._file.write(json.dumps({"doc_id": r.doc_id, "values": r.values, "skip": r.skip},
                                        ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finalize(self, rows: Sequence[dict[str, Any]], columns: Sequence[str],
                 summary: dict[str, Any]) -> None:
        """Write the final table (parquet or jsonl by suffix), then the summary, then drop the checkpoint."""
        def write() -> None:
            write_table(self.out, rows, columns)

        self.finalize_with(write, summary)

    def finalize_with(self, write: Callable[[], None], summary: dict[str, Any]) -> None:
        """Run `write` (itself atomic, e.g. a sidecar rewrite), then the summary, then drop the checkpoint."""
        self.close()
        write()
        write_json_atomic(self.summary_path, summary)
        self.partial.unlink(missing_ok=True)


def write_table(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """The rows' `columns` as jsonl (by suffix) or parquet, written atomically."""
    if path.suffix == ".jsonl":
        write_jsonl_atomic(path, ({c: r.get(c) for c in columns} for r in rows))
    else:
        write_parquet_atomic(path, rows, columns)


def write_parquet_atomic(path: Path, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: [r.get(c) for r in rows] for c in columns})
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
