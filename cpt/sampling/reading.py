"""Reading the tokens of located samples from shards (what a loader worker does with Pieces).

Kept apart from Stream so that workers need only the Pieces the main process sent and an open
shard per source; no blender or stream state is needed to read.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cpt.sampling import mapped
from cpt.sampling.stream import Pieces


def read_samples(pieces: Pieces, shard_for: Callable[[str], Any], sample_tokens: int) -> np.ndarray:
    """Tokens of every sample as an int64 array (samples, sample_tokens).

    shard_for(source) returns an object whose [document] is that document's token array, such as
    the Shard of `cpt.shards.open(source)` (cache them: this is called once per piece).
    """
    n = len(pieces.sample_offsets) - 1
    out = np.empty((n, sample_tokens), dtype=np.int64)
    for k in range(n):
        col = 0
        for j in range(pieces.sample_offsets[k], pieces.sample_offsets[k + 1]):
            doc = shard_for(pieces.sources[pieces.source[j]])[int(pieces.document[j])]
            part = doc[int(pieces.start[j]): int(pieces.stop[j])]
            out[k, col: col + len(part)] = part
            col += len(part)
        if col != sample_tokens:
            raise ValueError(f"sample {k} has {col} tokens in its pieces, expected {sample_tokens}")
    return out


class ShardTokens:
    """`[document]` -> token array of a shard, from its memory-mapped index alone.

    A loader keeps one per shard for the whole run: unlike the Shard it is made from (validated by
    `cpt.shards.open`), it builds no per-document offsets, so a rank's memory does not grow with
    the corpus. Shards with several sequences per document read through the Shard itself.
    """

    def __init__(self, shard: Any) -> None:
        index = shard.index
        self._one_sequence = len(index.document_indices) == len(index.sequence_lengths) + 1
        self._shard = None if self._one_sequence else shard
        self._tokens = mapped.track(shard.tokens) if index.n_sequences else None
        self._pointers = mapped.track(index.sequence_pointers)
        self._lengths = mapped.track(index.sequence_lengths)
        self._item = shard.dtype.itemsize

    def __getitem__(self, document: int) -> np.ndarray:
        if self._shard is not None:
            return self._shard[document]
        start = int(self._pointers[document]) // self._item
        return self._tokens[start: start + int(self._lengths[document])]


_READERS: dict[str, tuple[tuple[int, int], ShardTokens]] = {}


def shard_tokens(prefix: str, shard: Any = None) -> ShardTokens:
    """The process's reader of the shard at `prefix` (validated once: `cpt.shards.open`, or the
    already opened `shard`); reopened when the shard's .idx was replaced since (inode or mtime)."""
    import os

    st = os.stat(f"{prefix}.idx")
    stamp = (st.st_ino, st.st_mtime_ns)
    known = _READERS.get(prefix)
    if known is not None and known[0] == stamp:
        return known[1]
    if shard is None:
        from cpt import shards

        shard = shards.open(prefix)
    reader = ShardTokens(shard)
    _READERS[prefix] = (stamp, reader)
    return reader
