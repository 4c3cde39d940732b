"""The consumed-documents ledger: which documents of a stream's current epoch are already trained.

A ledger is one bit per document of the stream's table (the rows of its shard set), set for every
document the stream trained in the epoch in progress, plus the document its last sample cut (its
table row and the first token not yet trained). It is a pure function of the stream and how many
samples it gave (`consumed`); it is saved with the data state because after a recipe edit the
stream it came from may no longer be buildable (a re-tag changes which documents a filter selects).
A recipe edit turns the ledgers into each new stream's `StreamHead`: the rest of the epoch without
what was trained.

Stored as packed bits, zlib-compressed, base64 text (JSON-able, one bit per document before
compression).
"""
from __future__ import annotations

import base64
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

if TYPE_CHECKING:
    from cpt.sampling.stream import Stream, StreamHead


@dataclass(frozen=True)
class Ledger:
    """Documents of `epoch` a stream has trained (`bits`, a bool per table row) and the one it cut."""

    epoch: int
    bits: np.ndarray
    partial: int | None = None  # table row of the document the last sample cut, or None
    offset: int = 0  # its first token not trained yet

    def to_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "documents": len(self.bits), "bits": encode_bits(self.bits),
                "partial": None if self.partial is None else [self.partial, self.offset]}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Ledger":
        partial = d.get("partial")
        return cls(int(d["epoch"]), decode_bits(d["bits"], int(d["documents"])),
                   None if partial is None else int(partial[0]), 0 if partial is None else int(partial[1]))


def encode_bits(bits: np.ndarray) -> str:
    return base64.b64encode(zlib.compress(np.packbits(np.asarray(bits, bool)).tobytes(), 6)).decode("ascii")


def decode_bits(text: str, n: int) -> np.ndarray:
    packed = np.frombuffer(zlib.decompress(base64.b64decode(text)), np.uint8)
    if len(packed) != (n + 7) // 8:
        raise ValueError(f"ledger: {len(packed)} bytes of bits for {n} documents")
    return np.unpackbits(packed, count=n).astype(bool)


def consumed(stream: "Stream", index: int) -> Ledger:
    """The ledger of `stream` after its samples [0, index): the documents of the epoch in progress
    that those samples trained, and the document the last one cut. A document whose only token read
    is the last sample's label (the extra token) is not counted: the next sample trains on it."""
    bits = np.zeros(len(stream.table), bool)
    if index == 0:
        pos, off = stream.cursor(0)
    else:
        _, after = stream.boundaries_many([index - 1])
        pos, off = int(after[0, 0]), int(after[0, 1])
    epoch, j = stream.epoch_at(pos)
    if stream.config.on_exhausted == "stop" and epoch > 0:  # a `stop` stream's one epoch is all trained
        bits[stream.rows] = True
        return Ledger(0, bits)
    skip = 0
    if stream.head is not None and epoch == stream.head.epoch:
        rows = stream._head_rows
        bits[stream.rows] = stream.head.excluded[stream.rows]  # trained in this epoch before the edit
        skip = int(stream._head_skip[j]) if j < len(rows) else 0
    else:
        rows = stream.rows[stream._order(epoch)]
    bits[rows[:j]] = True
    if off + skip > 0:
        bits[rows[j]] = True
        return Ledger(epoch, bits, int(rows[j]), off + skip)
    return Ledger(epoch, bits)


def head_to_dict(head: "StreamHead") -> dict[str, Any]:
    return {"epoch": head.epoch, "documents": len(head.excluded), "bits": encode_bits(head.excluded),
            "partials": [list(p) for p in head.partials]}


def head_from_dict(d: Mapping[str, Any]) -> "StreamHead":
    from cpt.sampling.stream import StreamHead

    return StreamHead(int(d["epoch"]), decode_bits(d["bits"], int(d["documents"])),
                      tuple((int(r), int(o)) for r, o in d.get("partials", ())))
