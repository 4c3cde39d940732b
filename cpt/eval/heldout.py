"""The held-out documents of each recipe stream, chosen by the rule training uses.

A document of a stream is held out when `held_out(doc_id, share, valid_holdout_seed)` is True
(cpt.sampling.holdout: a hash of the document id, independent of order and filter; share: the
stream's own `valid_holdout`, else `data.valid_holdout`, and a stream with share 0 has none) and
the stream's metadata filter selects it. Training draws only the other side, so the perplexity on
these documents measures text the model has not seen, stream by stream.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from cpt.config import StreamSpec, holdout_share
from cpt.sampling.documents import DocumentTable
from cpt.sampling.filters import filter_columns, select
from cpt.sampling.holdout import held_out


@dataclass(frozen=True)
class StreamDocuments:
    """The held-out documents of one stream, as (shard prefix, document index) pairs, in shard order."""

    name: str
    filter: str | None
    prefixes: tuple[str, ...]
    """Shard prefix of each document."""
    indices: tuple[int, ...]
    """Document index within its shard, per document."""
    matching: int
    """Documents the stream's filter selects (both sides of the split)."""
    held_out: int
    """Of those, held out (before any --max-documents cap)."""

    def keys(self) -> list[tuple[str, int]]:
        return list(zip(self.prefixes, self.indices))


def heldout_documents(streams: Sequence[StreamSpec], fraction: float, seed: int,
                      max_documents: int | None = None) -> list[StreamDocuments]:
    """Per stream, its held-out documents in shard order (capped: `max_documents` evenly spaced ones)."""
    if not streams:
        raise ValueError("the recipe has no data.streams: per-stream perplexity needs streams "
                         "(name, prefixes, filter); a data.blend recipe has none")
    shares = {spec.name: holdout_share(spec, fraction) for spec in streams}
    if not any(0.0 < share <= 1.0 for share in shares.values()):
        raise ValueError(f"held-out share is {fraction}: no document is held out; set data.valid_holdout "
                         "in the recipe (or pass --valid-holdout, the share training held out)")
    if max_documents is not None and max_documents < 1:
        raise ValueError(f"--max-documents must be >= 1, got {max_documents}")
    tables: dict[tuple[str, ...], DocumentTable] = {}
    out = []
    for spec in streams:
        if not shares[spec.name]:
            continue  # valid_holdout 0: the stream trains on all its documents, nothing is held out
        key = tuple(spec.prefixes)
        if key not in tables:  # only the columns the filters and the held-out hash read
            tables[key] = DocumentTable.from_shards(list(key), _columns(streams, key))
        table = tables[key]
        if "doc_id" not in table.columns:
            raise ValueError(f"stream {spec.name!r}: shards {list(key)} have no 'doc_id' metadata column "
                             "(made by an old cpt preprocess?)")
        try:
            matching = select(spec.filter, table.columns, len(table))
        except ValueError as exc:
            raise ValueError(f"stream {spec.name!r}: {exc}") from None
        rows = np.flatnonzero(matching & held_out(table.columns["doc_id"], shares[spec.name], seed))
        n_held = len(rows)
        if max_documents is not None and n_held > max_documents:
            # evenly spaced over the held-out documents: every shard of the stream stays represented
            rows = rows[(np.arange(max_documents) * n_held) // max_documents]
        out.append(StreamDocuments(
            spec.name, spec.filter, tuple(table.sources[table.source_of[r]] for r in rows),
            tuple(int(table.local_index[r]) for r in rows), int(matching.sum()), n_held))
    return out


def _columns(streams: Sequence[StreamSpec], prefixes: tuple[str, ...]) -> list[str]:
    """doc_id and the columns the filters of the streams over `prefixes` name, those the sidecar has
    (a filter naming a missing column is reported by the filter itself)."""
    import pyarrow.parquet as pq

    from cpt.shards.metadata import meta_path

    wanted = {"doc_id"}
    for spec in streams:
        if tuple(spec.prefixes) == prefixes:
            wanted |= filter_columns(spec.filter)
    return sorted(wanted & set(pq.read_schema(meta_path(prefixes[0])).names))
