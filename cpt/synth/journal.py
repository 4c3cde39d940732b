"""The resumable journal: one JSON line per finished generation, appended and synced at once.

A run that is killed (even SIGKILL mid-write) leaves at most a torn last line; reopening cuts it off
and the keys already present are skipped, so the rerun generates only what is missing and never
writes a key twice. An exclusive `flock` keeps two runs from appending to the same journal.
"""
from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path
from typing import Iterator


class JournalError(RuntimeError):
    """A journal that cannot be used as is; the message names the file and line."""


class Journal:
    """Append-only jsonl keyed by `record["key"]`."""

    def __init__(self, path: Path, fsync: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.records: dict[str, dict] = {}
        self.torn_tail_bytes = 0
        self._fh = open(self.path, "a+b")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise JournalError(f"{self.path} is in use by another running `cpt synth`") from None
        self._load()

    def _load(self) -> None:
        self._fh.seek(0)
        data = self._fh.read()
        good_end = 0
        for lineno, line in enumerate(data.split(b"\n"), 1):
            end = good_end + len(line) + 1
            if end > len(data):  # no newline: a torn last write (or an empty tail)
                break
            if line.strip():
                try:
                    rec = json.loads(line)
                    key = rec["key"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise JournalError(f"{self.path}:{lineno}: not a journal record; remove or repair it") from None
                self.records.setdefault(key, rec)
            good_end = end
        if good_end < len(data):
            self.torn_tail_bytes = len(data) - good_end
            self._fh.truncate(good_end)
        self._fh.seek(0, os.SEEK_END)

    def __contains__(self, key: str) -> bool:
        return key in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict) -> None:
        """Write one record durably; a key already present is an error (it would duplicate)."""
        key = record["key"]
        if key in self.records:
            raise JournalError(f"{self.path}: key {key!r} is already journaled")
        self._fh.write(json.dumps(record, ensure_ascii=False).encode() + b"\n")
        self._fh.flush()
        if self.fsync:
            os.fsync(self._fh.fileno())
        self.records[key] = record

    def __iter__(self) -> Iterator[dict]:
        return iter(self.records.values())

    def close(self) -> None:
        if not self._fh.closed:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            self._fh.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
