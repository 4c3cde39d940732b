"""A Stream's indices in the index cache: selection, lengths, epoch-0 order, first-epoch packing.

The entry is keyed by the table's fingerprint (every shard's tokens and metadata) and the whole
StreamConfig (filter, order, seed, sequence length, split, holdout, ...), plus the packing segment
size; its arrays are exactly what the Stream computes without a cache (it is built by that code),
so cached and uncached streams give the same samples.

Arrays: `rows` (int64 table rows, stream order of the table), `lengths` (int64), `order` (epoch 0's
order: the ppl order or the seed's permutation), `bounds` (int64 (m + 1, 2): (flat position,
offset) of boundaries 0..m, covering the first epoch).
"""
from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from cpt.sampling.index_cache import Builder, IndexCache

if TYPE_CHECKING:
    from cpt.sampling.stream import Stream


def stream_fields(table: Any, config: Any) -> dict[str, Any]:
    """What a stream's cache key is made of: its documents, its config and the packing segment size."""
    from cpt.sampling import stream as stream_mod

    return {"table": table.fingerprint, "config": asdict(config), "segment": stream_mod.SEGMENT}


def open_cached(stream: "Stream", cache: IndexCache) -> None:
    """Fill `stream` from its cache entry (building the entry first when it is missing)."""
    entry = cache.get("stream", stream_fields(stream.table, stream.config), lambda b: _build(b, stream))
    meta = entry.meta
    stream.cache_hit = entry.hit
    stream.rows = entry.array("rows")
    stream._lengths = entry.array("lengths")
    stream.tokens_per_epoch = int(meta["tokens_per_epoch"])
    stream._seg_len = int(meta["seg_len"])
    order = entry.array("order")
    stream._fixed_order = order if stream.config.order != "shuffle" else None
    if stream.config.order == "shuffle":
        stream._stored_orders[0] = order
    bounds = entry.array("bounds")
    L, n_seg = stream._seg_len, int(meta["n_segments"])
    stream._bounds, stream._n_cached_segments = bounds, n_seg
    n_full = min(n_seg, (len(bounds) - 1) // L)
    stream._cursors = [(int(bounds[j * L, 0]), int(bounds[j * L, 1])) for j in range(n_full + 1)]


def _build(b: Builder, stream: "Stream") -> None:
    stream._select()
    n_seg = _segments_to_cache(stream)
    segs = [stream._segment(k) for k in range(n_seg)]
    bounds = np.concatenate([segs[0]] + [s[1:] for s in segs[1:]]) if segs else np.zeros((1, 2), np.int64)
    b.save("rows", stream.rows)
    b.save("lengths", stream._lengths)
    b.save("order", stream._order(0))
    b.save("bounds", bounds.astype(np.int64))
    b.meta.update(name=stream.name, documents=int(len(stream.rows)), tokens_per_epoch=stream.tokens_per_epoch,
                  seg_len=stream._seg_len, n_segments=n_seg, samples=int(len(bounds) - 1))


def _segments_to_cache(stream: "Stream") -> int:
    """Segments covering the first epoch (all of a `stop` stream's samples)."""
    L = stream._seg_len
    cap = stream.capacity
    samples = cap if cap is not None else stream.tokens_per_epoch // stream.config.seq_length + 1
    if stream.tokens_per_epoch == 0:
        return 0
    return -(-samples // L)
