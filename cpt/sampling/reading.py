"""Reading the tokens of located samples from shards (what a loader worker does with Pieces).

Kept apart from Stream so that workers need only the Pieces the main process sent and an open
shard per source; no blender or stream state is needed to read.

Tokens are read with `pread` of exactly each piece's bytes, not through a memory map of the `.bin`:
a sample's documents lie at random places of the corpus, and a page fault on a mapped file reads
around the faulting page (the device's whole read-ahead window, often megabytes), so a map would
pull a multiple of what a step needs into the page cache, evicting the index cache's pages, and
leave the read pages mapped into the rank. Before reading, every piece of the call is announced
to the kernel (`posix_fadvise` WILLNEED), so the reads of a micro-batch are in flight together
instead of one after the other.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Callable

import numpy as np

from cpt.sampling import mapped
from cpt.sampling.stream import Pieces

_ADVISE = hasattr(os, "posix_fadvise") and sys.platform.startswith("linux")


def read_samples(pieces: Pieces, shard_for: Callable[[str], Any], sample_tokens: int) -> np.ndarray:
    """Tokens of every sample as an int64 array (samples, sample_tokens).

    shard_for(source) returns a `ShardTokens` (read with pread, see above) or any object whose
    [document] is that document's token array, such as the Shard of `cpt.shards.open(source)`;
    it is called once per source of the call.
    """
    n = len(pieces.sample_offsets) - 1
    out = np.empty((n, sample_tokens), dtype=np.int64)
    readers = {int(u): shard_for(pieces.sources[int(u)]) for u in np.unique(pieces.source)}
    where = _file_offsets(pieces, readers)
    for k in range(n):
        col = 0
        for j in range(pieces.sample_offsets[k], pieces.sample_offsets[k + 1]):
            start, stop = int(pieces.start[j]), int(pieces.stop[j])
            reader = readers[int(pieces.source[j])]
            if where[j] >= 0:
                part = reader.read_at(int(where[j]), stop - start)
            else:
                part = reader[int(pieces.document[j])][start: stop]
            out[k, col: col + len(part)] = part
            col += len(part)
        if col != sample_tokens:
            raise ValueError(f"sample {k} has {col} tokens in its pieces, expected {sample_tokens}")
    return out


def _file_offsets(pieces: Pieces, readers: dict[int, Any]) -> np.ndarray:
    """Byte offset in its `.bin` of each piece's first token (-1: read through [document]), each
    range announced to the kernel before any is read."""
    where = np.full(len(pieces.start), -1, dtype=np.int64)
    for u, reader in readers.items():
        if isinstance(reader, ShardTokens) and reader.direct:
            m = np.flatnonzero(pieces.source == u)
            where[m] = reader.offsets(pieces.document[m], pieces.start[m], pieces.stop[m])
            reader.advise(where[m], pieces.stop[m] - pieces.start[m])
    return where


class ShardTokens:
    """`[document]` -> token array of a shard, from its memory-mapped index alone; `offsets` and
    `read_at` read any token range with pread.

    A loader keeps one per shard for the whole run: unlike the Shard it is made from (validated by
    `cpt.shards.open`), it builds no per-document offsets, so a rank's memory does not grow with
    the corpus. Shards with several sequences per document read through the Shard itself.
    """

    def __init__(self, shard: Any) -> None:
        from cpt.shards.format import bin_path

        index = shard.index
        one_sequence = len(index.document_indices) == len(index.sequence_lengths) + 1
        self._shard = None if one_sequence else shard
        self.direct = one_sequence and index.n_sequences > 0
        self._pointers = mapped.track(index.sequence_pointers)
        self._lengths = mapped.track(index.sequence_lengths)
        self.dtype = np.dtype(shard.dtype)
        self.path = str(bin_path(shard.prefix))
        self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)) if self.direct else -1

    def __del__(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1

    def lookup_arrays(self) -> list[np.ndarray]:
        """The index arrays a read looks up (memory-mapped; see cpt.sampling.mapped.release)."""
        return [self._pointers, self._lengths]

    def __getitem__(self, document: int) -> np.ndarray:
        if self._shard is not None:
            return self._shard[document]
        if not self.direct:
            return np.zeros(0, self.dtype)
        length = int(self._lengths[document])
        return self.read_at(int(self.offsets(np.array([document]), np.zeros(1, np.int64),
                                             np.array([length]))[0]), length)

    def offsets(self, documents: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        """Byte offsets of tokens `start` of `documents`; refuses a range past its document's end
        (pread would read on into the next document)."""
        documents = np.asarray(documents, dtype=np.int64)
        lengths = self._lengths[documents]
        bad = np.flatnonzero((np.asarray(stop) > lengths) | (np.asarray(start) < 0))
        if bad.size:
            b = int(bad[0])
            raise ValueError(f"{self.path}: tokens [{int(start[b])}, {int(stop[b])}) of document "
                             f"{int(documents[b])}, which has {int(lengths[b])}")
        return self._pointers[documents].astype(np.int64) + np.asarray(start, np.int64) * self.dtype.itemsize

    def advise(self, offsets: np.ndarray, tokens: np.ndarray) -> None:
        """Tell the kernel these ranges are read soon (it reads them ahead, all at once)."""
        if not _ADVISE:
            return
        for off, n in zip(offsets.tolist(), (np.asarray(tokens) * self.dtype.itemsize).tolist()):
            if n > 0:
                os.posix_fadvise(self._fd, off, n, os.POSIX_FADV_WILLNEED)

    def read_at(self, offset: int, tokens: int) -> np.ndarray:
        """`tokens` tokens from byte `offset` of the `.bin` (one pread; a short read is an error)."""
        out = np.empty(tokens, self.dtype)
        view, done = memoryview(out).cast("B"), 0
        while done < out.nbytes:
            got = os.preadv(self._fd, [view[done:]], offset + done)
            if got <= 0:
                raise ValueError(f"{self.path}: ends at byte {offset + done}, expected tokens up to byte "
                                 f"{offset + out.nbytes} (the file shrank after it was opened?)")
            done += got
        return out


_READERS: dict[str, tuple[tuple[int, int], ShardTokens]] = {}


def shard_tokens(prefix: str, shard: Any = None) -> ShardTokens:
    """The process's reader of the shard at `prefix` (validated once: `cpt.shards.open`, or the
    already opened `shard`); reopened when the shard's .idx was replaced since (inode or mtime)."""
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
