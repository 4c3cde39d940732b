"""On-disk index cache: arrays built once per key, committed atomically, memory-mapped by every rank.

As megatron's GPTDataset caches its document / sample / shuffle indices under a hash of the config
with a description beside them, an entry here is a folder `<kind>-<key>/` of `.npy` arrays plus
`description.json` (what the key was made of, readable by a person) and `complete.json` (the file
sizes, written last). The key is a sha256 of the kind, CACHE_VERSION and every field that changes
the arrays (shard fingerprints, filter, order, seed, sequence length, holdout, ...): nothing is
trusted because a file exists under a name.

Building: one process takes an exclusive lock (`fcntl.flock` on `.<kind>-<key>.lock`), checks again,
builds into a temporary folder and renames it into place (`cpt.io.atomic_dir`); the others wait on
the lock and then open what it built. A build killed half-way leaves only a temporary folder (named
`.<kind>-<key>-*`), which is never read and is removed by the next build of that key. The lock is
node-local on most shared file systems: build the cache ahead (`cpt data build-cache RECIPE`) or
give each node its own `data.cache_dir`.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

import cpt.io
from cpt.sampling import mapped

CACHE_VERSION = 3  # bump when an entry's arrays change meaning or layout
_COMPLETE = "complete.json"
_DESCRIPTION = "description.json"


def cache_key(kind: str, fields: Mapping[str, Any]) -> str:
    blob = json.dumps({"kind": kind, "version": CACHE_VERSION, **fields}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


class Entry:
    """A complete cache entry: its arrays (memory-mapped, read-only) and its description."""

    def __init__(self, path: Path, hit: bool) -> None:
        self.path = path
        self.hit = hit  # True when it was already there; False when this process built it
        self.description: dict[str, Any] = json.loads((path / _DESCRIPTION).read_text(encoding="utf-8"))

    def array(self, name: str) -> np.ndarray:
        path = self.path / f"{name}.npy"
        if path.stat().st_size <= 4096:
            return np.load(path, allow_pickle=False)
        return mapped.track(np.load(path, mmap_mode="r", allow_pickle=False))  # pages let go of per step

    @property
    def meta(self) -> dict[str, Any]:
        return self.description.get("meta", {})


class Builder:
    """What a build callback writes into: arrays and a small JSON-able `meta` dict."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.meta: dict[str, Any] = {}

    def save(self, name: str, array: np.ndarray) -> None:
        np.save(self.folder / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)

    def create(self, name: str, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A writable memory-mapped array to fill in place (for arrays larger than memory should hold)."""
        return np.lib.format.open_memmap(self.folder / f"{name}.npy", mode="w+", dtype=dtype, shape=shape)


class IndexCache:
    """A folder of cache entries; `get(kind, fields, build)` opens an entry or builds it once."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path_of(self, kind: str, fields: Mapping[str, Any]) -> Path:
        return self.root / f"{kind}-{cache_key(kind, fields)}"

    def lookup(self, kind: str, fields: Mapping[str, Any]) -> Entry | None:
        path = self.path_of(kind, fields)
        return Entry(path, hit=True) if is_complete(path) else None

    def get(self, kind: str, fields: Mapping[str, Any], build: Callable[[Builder], None],
            accept: Callable[[Entry], bool] | None = None) -> Entry:
        """The entry for (kind, fields): opened if complete (and `accept`ed: e.g. it covers enough
        epochs), else built by `build` under the lock, replacing an entry that was not accepted."""
        path = self.path_of(kind, fields)
        ok = lambda: is_complete(path) and (accept is None or accept(Entry(path, hit=True)))  # noqa: E731
        if ok():
            return Entry(path, hit=True)
        with _locked(self.root / f".{path.name}.lock"):
            if ok():
                return Entry(path, hit=True)
            for stale in self.root.glob(f".{path.name}-*"):
                shutil.rmtree(stale, ignore_errors=True)  # a build that was killed: never read
            with cpt.io.atomic_dir(path) as tmp:
                builder = Builder(tmp)
                build(builder)
                _commit(tmp, kind, fields, builder.meta)
        return Entry(path, hit=False)


def is_complete(path: Path) -> bool:
    """True when `path` holds a committed entry whose files have the sizes recorded at commit."""
    try:
        sizes = json.loads((path / _COMPLETE).read_text(encoding="utf-8"))["files"]
    except (OSError, ValueError, KeyError):
        return False
    try:
        return all((path / name).stat().st_size == size for name, size in sizes.items())
    except OSError:
        return False


def _commit(folder: Path, kind: str, fields: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """fsync every array, write the description, then the completion marker last."""
    for f in sorted(folder.iterdir()):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    description = {"kind": kind, "version": CACHE_VERSION, "key": cache_key(kind, fields), "fields": dict(fields),
                   "meta": dict(meta)}
    cpt.io.write_json_atomic(folder / _DESCRIPTION, description, sort_keys=True)
    sizes = {f.name: f.stat().st_size for f in sorted(folder.iterdir()) if f.name != _COMPLETE}
    cpt.io.write_json_atomic(folder / _COMPLETE, {"files": sizes}, sort_keys=True)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
