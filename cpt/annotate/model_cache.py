"""The annotator (its loaded model) a `cpt tag` / `cpt score` run builds, kept for the next run in
this process.

A launch's worker runs more than one thing in one process: the warm-up that loads the model while
the driver plans, then a slice (local and Ray executors), and on Ray further slices in turn when
there are more slices than CPUs. Loading the model - the sentence encoder and classifier head for
tag, the causal LM and its tokenizer for score, with their imports - takes seconds every time;
through `load` (or a `Shared` factory) it is loaded once per process and taken again by each run
that builds the same.

The key is everything that decides the loaded object: the factory itself (a frozen dataclass:
model folder, backend, device, dtype, lengths, encoder ...), the size and mtime of every file under
the folders it reads (its `sources()`: a classifier retrained in place or a new checkpoint step is
loaded again), the threads the process gives a task (OMP_NUM_THREADS: the USE encoder fixes its
thread count when built) and the GPUs it may see (CUDA_VISIBLE_DEVICES, which Ray sets per task).
A failed load is not kept: the next run tries again and fails the same way.

Memory: only the most recent annotator of each kind (factory type) is kept. A long-lived process
(a Ray worker, a Python session calling `cpt.cli.main` again and again) may see many models in
turn; keeping every one would hold them all (hundreds of MB to GBs each, on a GPU its memory) for
the process's life, while a run only ever needs its own, and the slices of one launch all need the
same. The entry of a kind is dropped before its replacement loads, so the cache never holds two
models of one kind, not even while loading.
"""
from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterator, Protocol

from cpt.annotate.runner import Annotator


class CachedFactory(Protocol):
    """What the cache needs of a factory: hashable, equal for equal settings (a frozen dataclass),
    building the annotator when called, and naming the paths the annotator is read from."""

    columns: tuple[str, ...]

    def __call__(self) -> Annotator: ...

    def __hash__(self) -> int: ...

    def sources(self) -> tuple[str, ...]:
        """Files or folders the annotator is loaded from (model, tokenizer, taxonomy)."""
        ...


@dataclass(frozen=True, slots=True)
class Load:
    """One `load`: what kind of annotator, whether it was loaded already, and the seconds it took."""

    kind: str
    reused: bool
    seconds: float


class ModelCache:
    """The most recent annotator per kind, with the key it was built under (see the module docstring)."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[Hashable, Annotator]] = {}

    def load(self, factory: CachedFactory) -> Annotator:
        t0 = time.perf_counter()
        kind = type(factory).__qualname__
        key = cache_key(factory)
        held = self.entries.get(kind)
        reused = held is not None and held[0] == key
        if reused:
            annotator = held[1]
        else:
            self.entries.pop(kind, None)  # drop the old model before the new one loads
            annotator = factory()
            self.entries[kind] = (key, annotator)
        _record(Load(kind, reused, time.perf_counter() - t0))
        return annotator


def cache_key(factory: CachedFactory) -> Hashable:
    """The factory, the stamp of the files it loads from, and the process settings a load fixes."""
    return (factory, tuple(_stamp(p) for p in factory.sources()),
            os.environ.get("OMP_NUM_THREADS"), os.environ.get("CUDA_VISIBLE_DEVICES"))


def _stamp(source: str) -> tuple:
    """(absolute path, (relative name, size, mtime_ns) of every file under it); stat only, no reading:
    a model's weights are GBs, and a rewrite changes its size or mtime."""
    path = Path(source).absolute()
    if not path.is_dir():
        return (str(path), _file_stamp(path, path.name))
    files = []
    for folder, _, names in os.walk(path):
        for name in names:
            files.append(_file_stamp(Path(folder) / name, os.path.relpath(Path(folder) / name, path)))
    return (str(path), tuple(sorted(files)))


def _file_stamp(path: Path, name: str) -> tuple:
    try:
        st = path.stat()
    except OSError:
        return (name, None, None)  # missing: the factory's own check names it
    return (name, st.st_size, st.st_mtime_ns)


_CACHE = ModelCache()
_recorders: list[list[Load]] = []


def load(factory: CachedFactory) -> Annotator:
    """The annotator `factory` builds, from this process's cache when built there already."""
    return _CACHE.load(factory)


@dataclass(frozen=True)
class Shared:
    """A factory whose annotator comes from the cache of the process that calls it (picklable: a
    pool worker of `--workers N` keeps its own)."""

    factory: CachedFactory

    @property
    def columns(self) -> tuple[str, ...]:
        return self.factory.columns

    def __call__(self) -> Annotator:
        return load(self.factory)


def _record(event: Load) -> None:
    for loads in _recorders:
        loads.append(event)


@contextlib.contextmanager
def recording() -> Iterator[list[Load]]:
    """The loads made in this process while the block runs (a launched slice reports them)."""
    loads: list[Load] = []
    _recorders.append(loads)
    try:
        yield loads
    finally:
        _recorders.remove(loads)


def load_report(loads: list[Load]) -> dict[str, Any]:
    """What a launched slice or warm-up adds to its result: whether the model it took was loaded
    already (None: it took none, e.g. a part committed earlier) and the seconds taking it cost."""
    return {"reused_model": all(x.reused for x in loads) if loads else None,
            "prepare_seconds": {"model": round(sum(x.seconds for x in loads), 3)} if loads else {}}


__all__ = ["CachedFactory", "Load", "ModelCache", "Shared", "cache_key", "load", "load_report", "recording"]
