"""Drives one annotator over a stream of documents: chunks, worker processes, checkpoints, progress.

An annotator is anything with `columns` and `__call__(docs) -> list[Result]` (the topic tagger,
the perplexity scorer). The runner streams documents in blocks of `chunk_size`, skips the blocks a
previous run already checkpointed, sends blocks to worker processes when asked (each builds its
own annotator from a picklable factory), appends each finished block to the checkpoint in input
order, and
returns every result keyed by doc_id. Results never depend on the worker count, on resuming, or
on sharding; batches are formed inside a block, so `chunk_size` is part of a run's settings.
"""
from __future__ import annotations

import itertools
import multiprocessing as mp
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence

from cpt.annotate.docs import Doc
from cpt.annotate.store import Result, ResultStore
from cpt.launch.progress import report


class Annotator(Protocol):
    columns: tuple[str, ...]
    """Metadata columns this annotator fills."""

    def __call__(self, docs: Sequence[Doc]) -> list[Result]:
        """One Result per document, in the same order (skipped documents carry a reason)."""
        ...


class Ready:
    """A factory returning an annotator built already (one process: the model is loaded once)."""

    def __init__(self, annotator: Annotator):
        self.annotator, self.columns = annotator, annotator.columns

    def __call__(self) -> Annotator:
        return self.annotator


class DuplicateDocError(ValueError):
    """Two documents share a doc_id, so their results could not be told apart."""


@dataclass
class RunStats:
    read: int = 0
    resumed: int = 0
    annotated: int = 0
    skipped: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"read": self.read, "resumed_from_checkpoint": self.resumed, "annotated": self.annotated,
                "skipped": dict(sorted(self.skipped.items())), "seconds": round(self.seconds, 3)}


_worker_annotator: Annotator | None = None


def _init_worker(factory: Callable[[], Annotator], threads: int) -> None:
    import torch

    global _worker_annotator
    torch.set_num_threads(threads)
    _worker_annotator = factory()


def _run_in_worker(docs: list[Doc]) -> list[Result]:
    assert _worker_annotator is not None
    return _worker_annotator(docs)


def _chunks(docs: Iterable[Doc], size: int) -> Iterator[list[Doc]]:
    it = iter(docs)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


class Progress:
    """A one-line progress report on stderr, at most every `interval` seconds."""

    def __init__(self, what: str, interval: float = 5.0, stream=sys.stderr):
        self.what, self.interval, self.stream = what, interval, stream
        self.start = self.last = time.perf_counter()

    def update(self, stats: RunStats, force: bool = False) -> None:
        now = time.perf_counter()
        if not force and now - self.last < self.interval:
            return
        self.last = now
        rate = stats.annotated / max(now - self.start, 1e-9)
        print(f"[{self.what}] read {stats.read} annotated {stats.annotated} "
              f"skipped {sum(stats.skipped.values())} resumed {stats.resumed} ({rate:.1f} docs/s)",
              file=self.stream, flush=True)


class _Pass:
    """One pass over the input: numbers documents (refusing a repeated doc_id), cuts blocks, skips
    the blocks already checkpointed, and records finished blocks into the store and the stats."""

    def __init__(self, docs: Iterable[Doc], store: ResultStore, chunk_size: int, progress: Progress | None):
        self.docs, self.store, self.chunk_size, self.progress = docs, store, chunk_size, progress
        self.stats = RunStats()
        self.done = store.open()
        self.order: list[Doc] = []
        self.seen: set[str] = set()

    def _numbered(self) -> Iterator[Doc]:
        for doc in self.docs:
            if doc.doc_id in self.seen:
                raise DuplicateDocError(f"doc_id {doc.doc_id!r} occurs twice (again at {doc.source or '?'})")
            self.seen.add(doc.doc_id)
            self.order.append(doc)
            self.stats.read += 1
            yield doc

    def pending(self) -> Iterator[list[Doc]]:
        # Blocks are cut from the whole input, done or not, and a block with any document left is
        # redone whole: every block holds the same documents on every run, resumed or sharded
        # (`cpt.annotate.scaleout` slices on block boundaries), so the batches - and the floating
        # point sums - are the same too.
        for block in _chunks(self._numbered(), self.chunk_size):
            if all(d.doc_id in self.done for d in block):
                self.stats.resumed += len(block)
            else:
                yield block

    def record(self, results: list[Result]) -> None:
        self.store.append(results)
        for r in results:
            self.done[r.doc_id] = r
            if r.skip:
                self.stats.skipped[r.skip] += 1
            else:
                self.stats.annotated += 1
        report(self.stats.read, self.stats.read, total=True)  # a launched task's counts, the line on or off
        if self.progress:
            self.progress.update(self.stats)

    def final_stats(self, seconds: float) -> RunStats:
        """Counts over the whole input, documents resumed from the checkpoint included."""
        stats = self.stats
        stats.seconds = seconds
        report(stats.read, stats.read, total=True)
        if self.progress:
            self.progress.update(stats, force=True)
        stats.skipped = Counter(r.skip for d in self.order if (r := self.done[d.doc_id]).skip)
        stats.annotated = sum(1 for d in self.order if not self.done[d.doc_id].skip)
        return stats


def _annotate_blocks(run: _Pass, factory: Callable[[], Annotator], workers: int) -> None:
    """Annotate the pending blocks in this process or in `workers` spawned ones, in input order."""
    if workers == 1:
        annotator = factory()
        for block in run.pending():
            run.record(annotator(block))
        return
    import torch

    threads = max(1, torch.get_num_threads() // workers)
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(factory, threads)) as pool:
        for results in pool.imap(_run_in_worker, run.pending()):
            run.record(results)


def run_annotator(docs: Iterable[Doc], factory: Callable[[], Annotator], store: ResultStore,
                  chunk_size: int = 256, workers: int = 1,
                  progress: Progress | None = None) -> tuple[list[Doc], dict[str, Result], RunStats]:
    """Annotate every document not yet checkpointed; return (docs in order, results by id, stats).

    `factory` builds the annotator (in each worker process when `workers > 1`; it must pickle).
    """
    if chunk_size < 1 or workers < 1:
        raise ValueError(f"chunk_size and workers must be >= 1 (got {chunk_size}, {workers})")
    start = time.perf_counter()
    run = _Pass(docs, store, chunk_size, progress)
    try:
        _annotate_blocks(run, factory, workers)
    finally:
        store.close()
    return run.order, run.done, run.final_stats(time.perf_counter() - start)
