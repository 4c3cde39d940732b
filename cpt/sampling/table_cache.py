"""A DocumentTable in the index cache: fixed-width arrays built shard by shard, memory-mapped.

Arrays of an entry: `lengths` (int64), `source_of` (int32), `local_index` (int64), and per
metadata column `col.<name>` (numbers) or `codes.<name>` (int32; the distinct strings are in the
entry's description). The key is every shard's path and fingerprint plus the columns read, so a
re-tagged or re-scored shard (new sidecar sha256) or another column set is another entry.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from cpt.sampling import mapped
from cpt.sampling.columns import Categorical
from cpt.sampling.documents import read_columns, shard_fingerprint
from cpt.sampling.index_cache import Builder, IndexCache


def table_fields(prefixes: Sequence[str], columns: Sequence[str] | None) -> dict[str, Any]:
    """The key of a table: every shard's path and fingerprint (each shard opened, so validated,
    one at a time and let go: nothing per document is kept), and the columns read."""
    from cpt import shards
    from cpt.sampling.reading import shard_tokens

    sources = []
    for prefix in prefixes:
        shard = shards.open(prefix)
        path = str(Path(str(shard.prefix)).resolve())
        sources.append([path, shard_fingerprint(shard)])
        shard_tokens(path, shard)  # the loader's reader: this process validates each shard once
    return {"sources": sources, "columns": None if columns is None else sorted(set(columns))}


def cached_table(cls: type, prefixes: Sequence[str], columns: Sequence[str] | None, cache: IndexCache):
    """The table of the shards at `prefixes` from `cache`, built there first if it is missing."""
    entry = cache.get("table", table_fields(prefixes, columns), lambda b: _build(b, prefixes, columns))
    meta = entry.meta
    cols: dict[str, Any] = {}
    for name, kind in meta["columns"].items():
        if kind == "categorical":
            cats = np.empty(len(meta["categories"][name]), dtype=object)
            cats[:] = meta["categories"][name]
            cols[name] = Categorical(entry.array(f"codes.{name}"), cats)
        else:
            cols[name] = entry.array(f"col.{name}")
    return cls(entry.array("lengths"), cols, tuple(meta["sources"]), entry.array("source_of"),
               entry.array("local_index"), tuple(meta["fingerprints"]))


def _build(b: Builder, prefixes: Sequence[str], columns: Sequence[str] | None) -> None:
    from cpt import shards as shards_mod

    counts = [shards_mod.open(p).n_documents for p in prefixes]
    total = int(sum(counts))
    lengths = b.create("lengths", (total,), np.int64)
    source_of = b.create("source_of", (total,), np.int32)
    local_index = b.create("local_index", (total,), np.int64)
    kinds: dict[str, str] = {}
    arrays: dict[str, np.ndarray] = {}
    categories: dict[str, dict[Any, int]] = {}
    lo = 0
    sources, fingerprints, first = [], [], None
    for k, prefix in enumerate(prefixes):
        shard = shards_mod.open(prefix)  # one at a time: its per-document arrays go with it
        sources.append(str(Path(str(shard.prefix)).resolve()))  # readable from any working directory
        fingerprints.append(shard_fingerprint(shard))
        first = first or shard.prefix
        n = counts[k]
        lengths[lo:lo + n] = shard.doc_lengths
        source_of[lo:lo + n] = k
        local_index[lo:lo + n] = np.arange(n, dtype=np.int64)
        meta = read_columns(shard, columns)
        if k and sorted(meta) != sorted(kinds):
            raise ValueError(f"shard {shard.prefix}: metadata columns {sorted(meta)} differ from "
                             f"{first}'s {sorted(kinds)}; every shard of a stream needs the same columns")
        for name, values in meta.items():
            if k == 0:
                kinds[name] = "categorical" if isinstance(values, Categorical) else "numeric"
                if isinstance(values, Categorical):
                    categories[name] = {}
                    arrays[name] = b.create(f"codes.{name}", (total,), np.int32)
                else:
                    arrays[name] = b.create(f"col.{name}", (total,), values.dtype)
            _fill(shard, name, kinds[name], values, arrays[name][lo:lo + n], categories.get(name))
        del meta, shard
        for arr in (lengths, source_of, local_index, *arrays.values()):
            mapped.let_go(arr[lo:lo + n])  # written: the page cache has it, this process need not map it
        lo += n
    for arr in (lengths, source_of, local_index, *arrays.values()):
        arr.flush()
    b.meta.update(
        sources=sources, fingerprints=fingerprints,
        columns=kinds, categories={name: list(index) for name, index in categories.items()},
    )


def _fill(shard: Any, name: str, kind: str, values: Any, out: np.ndarray, index: dict | None) -> None:
    if kind == "categorical":
        if not isinstance(values, Categorical):
            raise ValueError(f"shard {shard.prefix}: metadata column {name!r} holds numbers here, strings elsewhere")
        remap = np.array([index.setdefault(v, len(index)) for v in values.categories], dtype=np.int32)
        out[:] = remap[values.codes] if len(remap) else 0
        return
    if isinstance(values, Categorical) or not np.can_cast(values.dtype, out.dtype, casting="same_kind"):
        raise ValueError(f"shard {shard.prefix}: metadata column {name!r} has type {values.dtype}, "
                         f"{out.dtype} in the first shard of the stream")
    out[:] = values
