"""The per-document metadata sidecar `PREFIX.meta.parquet`.

One row per document, in shard order: `doc_id` (`cpt.corpus.identity`: 64-bit hash of source path and line),
`source` (input file, relative to the input's parent folder), `line` (1-based line of a jsonl file,
0-based row of a parquet file, 0 for a text file), `offset` (byte offset of the line in an
uncompressed jsonl file, else -1), `lang` (zh / en / code / other), `n_tokens`, then any kept
input fields (strings) and the columns annotators add (`topic`, `topic_conf`, `ppl`).

Rows are written in fixed row groups so the file's bytes depend only on its rows, never on how the
work was split across workers, chunks or shards.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpt.corpus.identity import doc_id  # noqa: F401  (the one document identity; re-exported)
from cpt.io import atomic_path

ROW_GROUP = 65536
BASE_FIELDS = [
    pa.field("doc_id", pa.uint64()),
    pa.field("source", pa.string()),
    pa.field("line", pa.int64()),
    pa.field("offset", pa.int64()),
    pa.field("lang", pa.string()),
    pa.field("n_tokens", pa.int64()),
]
RESERVED = {f.name for f in BASE_FIELDS}


def meta_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.meta.parquet")


def schema_for(keep_fields: Sequence[str] = ()) -> pa.Schema:
    return pa.schema(BASE_FIELDS + [pa.field(k, pa.string()) for k in keep_fields])


class MetaWriter:
    """Streams record batches into a parquet file in exactly ROW_GROUP-row groups."""

    def __init__(self, path: Path, schema: pa.Schema):
        self.path = Path(path)
        self.schema = schema
        self._writer = pq.ParquetWriter(str(path), schema, compression="zstd", write_statistics=False)
        self._pending: list[pa.Table] = []
        self._n_pending = 0
        self.n_rows = 0

    def write(self, table: pa.Table) -> None:
        if table.num_rows == 0:
            return
        self._pending.append(table.select(self.schema.names).cast(self.schema))
        self._n_pending += table.num_rows
        self.n_rows += table.num_rows
        while self._n_pending >= ROW_GROUP:
            self._flush(ROW_GROUP)

    def _flush(self, n: int) -> None:
        table = pa.concat_tables(self._pending).combine_chunks()
        self._writer.write_table(table.slice(0, n), row_group_size=ROW_GROUP)
        rest = table.slice(n)
        self._pending = [rest] if rest.num_rows else []
        self._n_pending = rest.num_rows

    def close(self) -> None:
        if self._n_pending:
            self._flush(self._n_pending)
        self._writer.close()


def write_table(path: Path, table: pa.Table) -> None:
    """Write a whole metadata table with the same layout MetaWriter produces."""
    writer = MetaWriter(path, table.schema)
    writer.write(table)
    writer.close()


def read_metadata(prefix: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """The metadata table of a shard (all columns, or the ones named)."""
    return pq.read_table(meta_path(prefix), columns=list(columns) if columns else None)


def iter_metadata(prefix: str | Path, batch_size: int = ROW_GROUP) -> Iterable[pa.RecordBatch]:
    """Stream the metadata in batches, for shards too large to hold as one table."""
    yield from pq.ParquetFile(meta_path(prefix)).iter_batches(batch_size=batch_size)


def update_metadata(prefix: str | Path, columns: Mapping[str, Sequence | np.ndarray | pa.Array]) -> None:
    """Add or replace metadata columns (e.g. `topic`, `topic_conf`, `ppl`) with an atomic rewrite.

    Each array must have one value per document, in shard order. The shard is validated first; the
    new parquet is written under a temporary name and renamed over the old one, then the manifest is
    rewritten (also atomically) with the new checksum and column list, so a crash leaves either the
    old or the new sidecar, never a torn one. The read-modify-write holds an exclusive lock on
    `PREFIX.meta.lock`, so a tagger and a scorer updating the same shard at once both keep their
    columns. Base columns (doc_id, source, ...) cannot be replaced.
    """
    import fcntl

    with open(f"{prefix}.meta.lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        _update_locked(prefix, columns)


def _update_locked(prefix: str | Path, columns: Mapping[str, Sequence | np.ndarray | pa.Array]) -> None:
    from cpt.shards.manifest import file_entry, read_manifest, write_manifest
    from cpt.shards.reader import open_shard

    shard = open_shard(prefix)
    table = shard.metadata()
    for name, values in columns.items():
        if name in RESERVED:
            raise ValueError(f"update_metadata({prefix}): {name!r} is a base column and cannot be replaced")
        array = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(np.asarray(values) if not isinstance(values, list) else values)
        if len(array) != table.num_rows:
            raise ValueError(
                f"update_metadata({prefix}): column {name!r} has {len(array)} values, the shard has {table.num_rows} documents"
            )
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, array)
        else:
            table = table.append_column(name, array)
    path = meta_path(prefix)
    with atomic_path(path) as tmp:
        write_table(tmp, table)
    manifest = read_manifest(prefix)
    manifest["files"]["meta"] = file_entry(path)
    manifest["meta_columns"] = table.column_names
    write_manifest(prefix, manifest)
