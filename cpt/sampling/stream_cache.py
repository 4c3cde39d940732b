"""A Stream's indices in the index cache: selection, lengths, epoch-0 order, first-epoch packing.

The entry is keyed by the table's fingerprint (every shard's tokens and metadata) and the whole
StreamConfig (filter, order, seed, sequence length, split, holdout, ...), plus the packing segment
size; its arrays are exactly what the Stream computes without a cache (it is built by that code),
so cached and uncached streams give the same samples.

Arrays: `rows` (int64 table rows, stream order of the table), `lengths` (int64), `orders` (one row
per cached epoch: the ppl order, or the seed's permutation of that epoch), `bounds` (int64
(m + 1, 2): (flat position, offset) of boundaries 0..m, covering the cached epochs), `cursors`
(int64 (c, 2): the boundary at the start of every packing segment, k * seg_len, covering all the
samples the run is expected to read, however many epochs that is): sample i is then packed from
the cursor of its segment, never from sample 0 (what a deep resume or `cpt trace` of a late step
needs), at 16 bytes per segment.

How many epochs: at least what the caller expects the run to read from the stream (a sample count
hint, e.g. twice the stream's share of the training samples), rounded up to a power of two and at
most MAX_EPOCHS; an
entry covering fewer is rebuilt (same key, replaced under the lock). Samples past the cached epochs
are packed in memory, as without a cache.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from cpt.sampling import mapped
from cpt.sampling.index_cache import Builder, IndexCache

if TYPE_CHECKING:
    from cpt.sampling.stream import Stream


def stream_fields(table: Any, config: Any) -> dict[str, Any]:
    """What a stream's cache key is made of: its documents, its config and the packing segment size."""
    from cpt.sampling import stream as stream_mod

    return {"table": table.fingerprint, "config": config.identity(), "segment": stream_mod.SEGMENT}


MAX_EPOCHS = 16  # a small stream read for hundreds of epochs packs its later epochs in memory


def epochs_for(samples: int | None, tokens_per_epoch: int, seq_length: int) -> int:
    """Epochs to cache for an expected `samples` reads: a power of two, at least one, at most MAX_EPOCHS."""
    per_epoch = max(tokens_per_epoch // seq_length, 1)
    need = min(max(1, -(-int(samples or 0) // per_epoch)), MAX_EPOCHS)
    return 1 << (need - 1).bit_length()


def open_cached(stream: "Stream", cache: IndexCache, samples: int | None = None) -> None:
    """Fill `stream` from its cache entry (building the entry first when it is missing or covers
    fewer epochs than `samples` expected reads need)."""
    def enough(entry) -> bool:
        m = entry.meta
        return (m.get("epochs", 0) >= epochs_for(samples, m["tokens_per_epoch"], stream.config.seq_length)
                and m.get("cursor_samples", 0) >= _cursor_samples(samples, m["seg_len"]))

    entry = cache.get("stream", stream_fields(stream.table, stream.config), lambda b: _build(b, stream, samples),
                      accept=enough)
    meta = entry.meta
    stream.cache_hit = entry.hit
    stream.rows = entry.array("rows")
    stream._lengths = entry.array("lengths")
    stream.tokens_per_epoch = int(meta["tokens_per_epoch"])
    stream._seg_len = int(meta["seg_len"])
    orders = entry.array("orders")
    stream._fixed_order = orders[0] if stream.config.order != "shuffle" else None
    if stream.config.order == "shuffle":
        stream._stored_orders = {e: orders[e] for e in range(len(orders))}
    bounds = entry.array("bounds")[: int(meta["rows_used"])]
    stream._bounds, stream._n_cached_segments = bounds, int(meta["n_segments"])
    stream._cursor_table, stream._cursors = entry.array("cursors"), []
    stream._epochs.clear()  # a build's permutations: the entry's orders replace them (later epochs are re-made)


def _build(b: Builder, stream: "Stream", samples: int | None) -> None:
    stream._select()
    epochs = epochs_for(samples, stream.tokens_per_epoch, stream.config.seq_length)
    n_seg = _segments_to_cache(stream, epochs)
    bounds = b.create("bounds", (n_seg * stream._seg_len + 1 if n_seg else 1, 2), np.int64)
    bounds[0] = (0, 0)
    end = 1
    for k in range(n_seg):  # segment k is boundaries k*L .. k*L + len - 1; they overlap by one row
        seg = stream._segment(k)
        bounds[end: end + len(seg) - 1] = seg[1:]
        mapped.let_go(bounds[end: end + len(seg) - 1])  # written: the page cache holds it
        end += len(seg) - 1
        stream._segments.clear()
    last_epoch = int(bounds[end - 1, 0]) // max(stream.num_documents, 1)
    n_orders = last_epoch + 1 if stream.config.order == "shuffle" else 1
    orders = b.create("orders", (n_orders, stream.num_documents), np.int64)
    for e in range(n_orders):
        orders[e] = stream._order(e)
        mapped.let_go(orders[e])
    b.save("cursors", _cursors(stream, _cursor_samples(samples, stream._seg_len)))
    b.save("rows", stream.rows)
    b.save("lengths", stream._lengths)
    b.meta.update(name=stream.name, documents=int(len(stream.rows)), tokens_per_epoch=stream.tokens_per_epoch,
                  seg_len=stream._seg_len, n_segments=n_seg, samples=int(end - 1), epochs=epochs, rows_used=end,
                  cursor_samples=_cursor_samples(samples, stream._seg_len))


def _cursor_samples(samples: int | None, seg_len: int) -> int:
    """Samples the cursors cover for an expected `samples` reads: whole segments, at least one."""
    return max(1, -(-int(samples or 0) // seg_len)) * seg_len


def _cursors(stream: "Stream", samples: int) -> np.ndarray:
    """The cursor at the start of every segment up to `samples` (fewer for a `stop` stream)."""
    k = stream._known_cursors() - 1  # the bounds of the cached epochs gave these
    while k * stream._seg_len < samples:
        stream._segment(k)  # appends cursor k + 1 when the segment is whole
        stream._segments.clear()
        if stream._known_cursors() != k + 2:
            break  # a `stop` stream's last, partial segment
        k += 1
    return np.array([stream.cursor(j) for j in range(stream._known_cursors())], np.int64).reshape(-1, 2)


def _segments_to_cache(stream: "Stream", epochs: int) -> int:
    """Segments covering `epochs` epochs (all of a `stop` stream's samples)."""
    L = stream._seg_len
    cap = stream.capacity
    samples = cap if cap is not None else epochs * stream.tokens_per_epoch // stream.config.seq_length + 1
    if stream.tokens_per_epoch == 0:
        return 0
    return -(-samples // L)
