"""DocumentTable: what a Stream needs to know about documents — lengths and metadata columns.

Kept apart from the shard format so that streams are testable from plain arrays; `from_shards`
is the adapter from `cpt.shards` (issue 9). Each document remembers its source (shard prefix) and
its index there, so a sample can be read back as (prefix, document, token range) pieces.

Columnar: numbers are arrays, strings dictionary-encoded (`Categorical`), no Python object per
document. With an `IndexCache`, `from_shards` reads the sidecars once into fixed-width arrays in
the cache (shard by shard, so the build never holds more than one shard's metadata) and every
process memory-maps them: the ranks of a node share one copy through the page cache.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from cpt.sampling.columns import Categorical, as_column, concat_columns


@dataclass(frozen=True)
class DocumentTable:
    """Documents of one or more sources, in source order."""

    lengths: np.ndarray  # int64 tokens per document
    columns: Mapping[str, np.ndarray | Categorical]  # metadata columns, one value per document
    sources: tuple[str, ...]  # source names (shard prefixes)
    source_of: np.ndarray  # int32 index into `sources`, per document
    local_index: np.ndarray  # int64 document index within its source
    fingerprints: tuple[str, ...] = field(default=())  # one per source: what its content hashes to

    def __post_init__(self) -> None:
        n = len(self.lengths)
        for name, col in self.columns.items():
            if len(col) != n:
                raise ValueError(f"metadata column {name!r} has {len(col)} values for {n} documents")
        if len(self.source_of) != n or len(self.local_index) != n:
            raise ValueError("source_of and local_index need one value per document")
        # values are checked where they come in (from_columns; shards by cpt.shards.open), never here:
        # a scan of a memory-mapped cache array would map all its pages into every rank

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def fingerprint(self) -> str:
        """Hash of the sources' fingerprints: changes when any source's tokens or metadata change."""
        return hashlib.sha256("\n".join(self.fingerprints).encode()).hexdigest()[:16]

    @classmethod
    def from_columns(
        cls, lengths: Sequence[int] | np.ndarray, columns: Mapping[str, Sequence] | None = None, source: str = "memory"
    ) -> "DocumentTable":
        """One in-memory source: `lengths` and metadata columns (lists or arrays)."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if np.any(lengths < 0):
            raise ValueError("document lengths must be non-negative")
        cols = {k: as_column(v) for k, v in (columns or {}).items()}
        h = hashlib.sha256(lengths.tobytes())
        for k in sorted(cols):
            h.update(k.encode() + b"\0" + repr(cols[k].tolist()).encode())
        n = len(lengths)
        return cls(lengths, cols, (source,), np.zeros(n, np.int32), np.arange(n, dtype=np.int64), (h.hexdigest(),))

    @classmethod
    def concat(cls, tables: Sequence["DocumentTable"]) -> "DocumentTable":
        """Documents of several tables, one after the other; a column must be in every table."""
        if not tables:
            raise ValueError("concat needs at least one table")
        names = set(tables[0].columns)
        for t in tables[1:]:
            if set(t.columns) != names:
                raise ValueError(f"tables have different metadata columns: {sorted(names)} vs {sorted(t.columns)}")
        offsets = np.cumsum([0] + [len(t.sources) for t in tables[:-1]])
        return cls(
            np.concatenate([t.lengths for t in tables]),
            {k: concat_columns([t.columns[k] for t in tables]) for k in names},
            tuple(s for t in tables for s in t.sources),
            np.concatenate([t.source_of + off for t, off in zip(tables, offsets)]).astype(np.int32),
            np.concatenate([t.local_index for t in tables]),
            tuple(f for t in tables for f in t.fingerprints),
        )

    @classmethod
    def from_shards(cls, prefixes: Sequence[str], columns: Sequence[str] | None = None,
                    cache: Any = None) -> "DocumentTable":
        """The documents of cpt shards: lengths from the index, metadata from the sidecar.

        The fingerprint of each shard is the sha256 of its .bin and .meta.parquet from the manifest,
        so re-tagging a shard (new metadata) changes it too. columns: the metadata columns to read
        (None: all). cache: an `IndexCache`; the table is then read from (or built into) it and
        memory-mapped.
        """
        from cpt import shards

        if cache is not None:
            from cpt.sampling.table_cache import cached_table

            return cached_table(cls, prefixes, columns, cache)
        tables = []
        for prefix in prefixes:
            shard = shards.open(prefix)
            cols = read_columns(shard, columns)
            n = shard.n_documents
            tables.append(
                cls(np.asarray(shard.doc_lengths, np.int64), cols, (str(shard.prefix),), np.zeros(n, np.int32),
                    np.arange(n, dtype=np.int64), (shard_fingerprint(shard),))
            )
        return cls.concat(tables)


def read_columns(shard: Any, columns: Sequence[str] | None) -> dict[str, Any]:
    """The sidecar columns named (all for None, none for an empty list), as `arrow_column`s."""
    if columns is not None and not len(columns):
        return {}
    meta = shard.metadata(columns)
    return {name: arrow_column(meta.column(name)) for name in meta.column_names}


def shard_fingerprint(shard: Any) -> str:
    """What a shard's tokens and metadata hash to, from its manifest (sha256 of .bin and .meta.parquet)."""
    files = (shard.manifest or {}).get("files", {})
    return "/".join(str(files.get(k, {}).get("sha256")) for k in ("bin", "meta"))


def arrow_column(column: Any) -> np.ndarray | Categorical:
    """A pyarrow column as a NumPy array, or dictionary-encoded when it holds strings."""
    import pyarrow as pa

    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        enc = column.combine_chunks().dictionary_encode() if column.num_chunks else pa.array([], pa.string()).dictionary_encode()
        categories = enc.dictionary.to_pylist()
        if enc.indices.null_count:
            categories.append(None)  # the missing value, after the strings
        codes = enc.indices.fill_null(len(categories) - 1).to_numpy(zero_copy_only=False).astype(np.int32)
        cats = np.empty(len(categories), dtype=object)
        cats[:] = categories
        return Categorical(codes, cats)
    return np.asarray(column.to_numpy(zero_copy_only=False))
