"""The consumed-documents ledger: which documents of a stream's current epoch are already trained.

A ledger is one bit per document of the stream's table (the rows of its shard set), set for every
document the stream trained in the epoch in progress, plus the document its last sample cut (its
table row and the first token not yet trained). It is a pure function of the stream and how many
samples it gave (`consumed`); it is saved with the data state because after a recipe edit the
stream it came from may no longer be buildable (a re-tag changes which documents a filter selects).
A recipe edit turns the ledgers into each new stream's `StreamHead`: the rest of the epoch without
what was trained.

Streams over the same shard set whose filters select disjoint documents (the usual case: one
stream per topic or language) share one bitmap, their union (`shared`): a document belongs to one
of them, so its bit says whether it was trained in the epoch in progress of the stream it belongs
to, and the set costs one bit per document whatever its number of streams. Streams whose filters
overlap keep a bitmap each (a document they share has one bit per stream, their epochs differ).
The bitmaps are bool arrays in memory; a checkpoint stores them packed in a binary file beside the
trainer state (cpt.train.data_bits), written by the one rank that writes the trainer state.
"""
from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from cpt.sampling import mapped

if TYPE_CHECKING:
    from cpt.sampling.stream import Stream, StreamHead


@dataclass(frozen=True)
class Ledger:
    """Documents of `epoch` a stream has trained (`bits`, a bool per table row) and the one it cut."""

    epoch: int
    bits: np.ndarray
    partial: int | None = None  # table row of the document the last sample cut, or None
    offset: int = 0  # its first token not trained yet
    shared: bool = True  # `bits` is the union of the ledgers of every stream over these shards (disjoint filters)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able but for `bits` (the bool array itself: cpt.train.data_bits stores it)."""
        return {"epoch": self.epoch, "documents": len(self.bits), "bits": self.bits, "shared": self.shared,
                "partial": None if self.partial is None else [self.partial, self.offset]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Ledger":
        partial = d.get("partial")
        return cls(int(d["epoch"]), as_bits(d["bits"], int(d["documents"])),
                   None if partial is None else int(partial[0]), 0 if partial is None else int(partial[1]),
                   bool(d.get("shared", True)))


def as_bits(value: Any, n: int) -> np.ndarray:
    """A bool array of `n` documents: as stored in memory, or the base64 text of data state version 3."""
    if isinstance(value, str):
        packed = np.frombuffer(zlib.decompress(base64.b64decode(value)), np.uint8)
        if len(packed) != (n + 7) // 8:
            raise ValueError(f"ledger: {len(packed)} bytes of bits for {n} documents")
        return np.unpackbits(packed, count=n).astype(bool)
    bits = np.asarray(value)
    if bits.dtype != bool or len(bits) != n:
        raise ValueError(f"ledger: {bits.dtype} array of {len(bits)} for {n} documents")
    return bits


def consumed(stream: "Stream", index: int, bits: np.ndarray | None = None) -> Ledger:
    """The ledger of `stream` after its samples [0, index): the documents of the epoch in progress
    that those samples trained, and the document the last one cut. A document whose only token read
    is the last sample's label (the extra token) is not counted: the next sample trains on it.
    `bits`: the shard set's shared bitmap to set them in (streams with disjoint filters), else None."""
    shared = bits is not None
    bits = np.zeros(len(stream.table), bool) if bits is None else bits
    if index == 0:
        pos, off = stream.cursor(0)
    else:
        _, after = stream.boundaries_many([index - 1])
        pos, off = int(after[0, 0]), int(after[0, 1])
    epoch, j = stream.epoch_at(pos)
    if stream.config.on_exhausted == "stop" and epoch > 0:  # a `stop` stream's one epoch is all trained
        bits[stream.rows] = True
        return Ledger(0, bits, shared=shared)
    skip = 0
    if stream.head is not None and epoch == stream.head.epoch:
        rows = stream._head_rows
        bits[stream.rows] = stream.head.excluded[stream.rows]  # trained in this epoch before the edit
        skip = int(stream._head_skip[j]) if j < len(rows) else 0
        bits[rows[:j]] = True
        cut = int(rows[j]) if off + skip > 0 else None
    else:  # marked among the stream's own documents first: a scatter into a small array, then in table order
        order = stream._order(epoch)
        mine = np.zeros(stream.num_documents, bool)
        mine[order[:j]] = True
        bits[stream.rows[mine]] = True
        cut = int(stream.rows[order[j]]) if off > 0 else None
    if cut is not None:
        bits[cut] = True
        return Ledger(epoch, bits, cut, off + skip, shared)
    return Ledger(epoch, bits, shared=shared)


def overlapping_sets(streams: Sequence["Stream"]) -> frozenset[tuple[str, ...]]:
    """The shard sets (tuples of sources) over which two of `streams` select a document in common."""
    counts: dict[tuple[str, ...], np.ndarray] = {}
    out = set()
    with mapped.scanning():  # every stream's rows, whole
        for s in streams:
            key = tuple(s.table.sources)
            seen = counts.setdefault(key, np.zeros(len(s.table), bool))
            if seen[s.rows].any():
                out.add(key)
            seen[s.rows] = True
    return frozenset(out)


def stream_ledgers(streams: Sequence["Stream"], positions: Sequence[int],
                   overlapping: frozenset[tuple[str, ...]]) -> dict[str, Ledger]:
    """{stream: its ledger after `positions[k]` samples}: one shared bitmap per shard set whose
    streams' filters are disjoint, one bitmap per stream over a set in `overlapping`."""
    sets: dict[tuple[str, ...], np.ndarray] = {}
    out = {}
    with mapped.scanning():  # each stream's rows and order of the epoch in progress, whole
        for s, index in zip(streams, positions):
            key = tuple(s.table.sources)
            bits = None if key in overlapping else sets.setdefault(key, np.zeros(len(s.table), bool))
            out[s.name] = consumed(s, int(index), bits)
    return out


def head_to_dict(head: "StreamHead") -> dict[str, Any]:
    return {"epoch": head.epoch, "documents": len(head.excluded), "bits": head.excluded,
            "partials": [list(p) for p in head.partials]}


def head_from_dict(d: Mapping[str, Any]) -> "StreamHead":
    from cpt.sampling.stream import StreamHead

    return StreamHead(int(d["epoch"]), as_bits(d["bits"], int(d["documents"])),
                      tuple((int(r), int(o)) for r, o in d.get("partials", ())))
