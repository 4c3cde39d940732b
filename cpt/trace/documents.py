"""What a (shard prefix, document index) is: its metadata row, read once per shard.

Columns trace reports when the shard has them: the identity (`doc_id`, `source`, `line`), the
annotators' `topic` and `ppl`, and a synthetic document's provenance (`cpt.corpus.identity.
PROVENANCE_FIELDS`). Old shards keep their stored ids as they are.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow.parquet as pq

from cpt.corpus.identity import PROVENANCE_FIELDS
from cpt.shards.metadata import meta_path

WANTED = ("doc_id", "source", "line", "lang", "topic", "ppl", *PROVENANCE_FIELDS)


class DocumentInfo:
    """Metadata rows of the shards a trace touches (each sidecar read once, only the wanted columns)."""

    def __init__(self) -> None:
        self._columns: dict[str, dict[str, list]] = {}
        self._ids: dict[str, np.ndarray] = {}

    def _load(self, prefix: str) -> dict[str, list]:
        cols = self._columns.get(prefix)
        if cols is None:
            path = meta_path(prefix)
            names = [c for c in WANTED if c in pq.read_schema(path).names]
            cols = self._columns[prefix] = pq.read_table(path, columns=names).to_pydict()
        return cols

    def describe(self, prefix: str, document: int) -> dict[str, Any]:
        """The wanted metadata of one document; `doc_id` in its text form (decimal)."""
        cols = self._load(prefix)
        row = {name: values[document] for name, values in cols.items()}
        if row.get("doc_id") is not None:
            row["doc_id"] = str(row["doc_id"])
        synthetic = {k: row.pop(k) for k in PROVENANCE_FIELDS if k in row}
        if any(v is not None for v in synthetic.values()):
            row["synthetic"] = synthetic
        return row

    def find(self, prefix: str, doc_id: int) -> np.ndarray:
        """Indices of the documents of `prefix` whose doc_id is `doc_id`."""
        ids = self._ids.get(prefix)
        if ids is None:
            ids = self._ids[prefix] = pq.read_table(meta_path(prefix), columns=["doc_id"]).column(
                "doc_id").to_numpy().astype(np.uint64)
        return np.flatnonzero(ids == np.uint64(doc_id))
