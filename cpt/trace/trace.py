"""`trace_step` and `trace_doc`: a step's samples, and a document's steps, replayed (see cpt.trace)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np

from cpt.corpus.identity import parse_doc_id
from cpt.sampling.parallel import DataParallelLayout
from cpt.trace.documents import DocumentInfo
from cpt.trace.stages import Stage, TraceError, stage_of

_CHUNK = 1 << 20  # samples replayed at a time by trace_doc


@dataclass
class SampleTrace:
    """One training sample: where it sits in the run and which document tokens make it."""

    stage: str
    step: int
    sample: int
    """Run-wide global sample index (consumed samples before it)."""
    position: int
    """Index in its stage's sample sequence (what the stage's Blender numbers)."""
    dp_rank: int
    micro_batch: int
    stream: str
    index: int
    """Index of the sample within its stream (stream offsets of earlier stages included)."""
    pieces: list[dict[str, Any]] = field(default_factory=list)
    """Token ranges [start, stop) of shard documents, in order, each with the document's metadata."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _layout(stage: Stage, step: int, dp_size: int | None) -> DataParallelLayout:
    t = stage.recipe.training
    return DataParallelLayout(global_batch_size=t.global_batch_size, micro_batch_size=t.micro_batch_size,
                              dp_size=dp_size or stage.dp_size_at(step))


def _ranks(layout: DataParallelLayout) -> tuple[np.ndarray, np.ndarray]:
    """Per position of a global batch: the DP rank and micro-batch that trains on it."""
    rank, micro = np.empty(layout.global_batch_size, np.int64), np.empty(layout.global_batch_size, np.int64)
    for r in range(layout.dp_size):
        pos = layout.positions(r)
        rank[pos], micro[pos] = r, np.arange(len(pos)) // layout.micro_batch_size
    return rank, micro


def trace_step(stages: Sequence[Stage], step: int, dp_rank: int | None = None,
               dp_size: int | None = None, info: DocumentInfo | None = None) -> list[SampleTrace]:
    """The samples of `step` (1-based, counted across stages), all or those of one DP rank, in the
    order that rank fetched them. `dp_size` overrides the size the checkpoints record."""
    stage = stage_of(stages, step)
    layout = _layout(stage, step, dp_size)
    rank, micro = _ranks(layout)
    order = layout.positions(dp_rank) if dp_rank is not None else np.arange(layout.global_batch_size)
    first = stage.position(step)
    data = stage.data_at(first)
    stream_ids, within = data.sample_ids(first + order)
    info = info or DocumentInfo()
    names = data.stream_names
    out = [SampleTrace(stage.name, step, stage.start_samples + first + int(p), first + int(p), int(rank[p]),
                       int(micro[p]), names[int(s)], int(i)) for p, s, i in zip(order, stream_ids, within)]
    for k in np.unique(stream_ids):
        sel = np.flatnonzero(stream_ids == k)
        pieces = data.streams[int(k)].pieces(within[sel])
        for j, row in enumerate(sel):
            out[row].pieces = [{"shard": p.source, "document": p.document, "start": p.start, "stop": p.stop,
                                **info.describe(p.source, p.document)} for p in pieces.for_sample(j)]
    return out


def _consumed(stage: Stage, start: int, stop: int | None, data) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(first position, stream ids, indices within stream) of one segment's checkpointed samples, in chunks."""
    total = (stage.last_step - stage.start_step) * stage.global_batch_size
    end = total if stop is None else min(stop, total)
    for lo in range(start, end, _CHUNK):
        positions = np.arange(lo, min(lo + _CHUNK, end), dtype=np.int64)
        stream, within = data.sample_ids(positions)
        yield lo, stream, within


def trace_doc(stages: Sequence[Stage], doc_id: str | int, info: DocumentInfo | None = None) -> list[dict[str, Any]]:
    """Every sample that read document `doc_id`, in run order: stage, step, sample, stream, tokens."""
    target = parse_doc_id(doc_id)
    info = info or DocumentInfo()
    hits: list[dict[str, Any]] = []
    known = False
    for stage in stages:
        for start, stop, data in stage.parts():
            places = _places(data, target, info)
            known = known or bool(places)
            if places:
                hits += _hits_in_segment(stage, start, stop, data, places)
    if not known:
        raise TraceError(f"doc id {doc_id}: in none of the stages' stream shards")
    return sorted(hits, key=lambda h: (h["sample"], h["start"]))


def _places(data, target: int, info: DocumentInfo) -> dict[int, dict[str, set[int]]]:
    """{stream id: {shard prefix: document indices}} where document `target` is in a segment's streams."""
    places = {}
    for k, stream in enumerate(data.streams):
        found = {prefix: set(info.find(prefix, target).tolist()) for prefix in stream.table.sources}
        found = {p: d for p, d in found.items() if d}
        if found:
            places[k] = found
    return places


def _hits_in_segment(stage: Stage, start: int, stop: int | None, data,
                     places: dict[int, dict[str, set[int]]]) -> list[dict[str, Any]]:
    hits = []
    for lo, stream, within in _consumed(stage, start, stop, data):
        for k, docs in places.items():
            sel = np.flatnonzero(stream == k)
            if not len(sel):
                continue
            pieces = data.streams[k].pieces(within[sel])
            wanted = np.zeros(len(pieces.document), bool)
            for prefix, local in docs.items():
                src = pieces.sources.index(prefix) if prefix in pieces.sources else -1
                wanted |= (pieces.source == src) & np.isin(pieces.document, list(local))
            for j in np.flatnonzero(wanted):
                sample = int(np.searchsorted(pieces.sample_offsets, j, side="right") - 1)
                position = lo + int(sel[sample])
                hits.append({"stage": stage.name, "step": stage.start_step + position // stage.global_batch_size + 1,
                             "sample": stage.start_samples + position, "position": position,
                             "stream": data.stream_names[k], "index": int(within[sel[sample]]),
                             "shard": pieces.sources[int(pieces.source[j])], "document": int(pieces.document[j]),
                             "start": int(pieces.start[j]), "stop": int(pieces.stop[j])})
    return hits
