"""Concatenate shards, in the order given: tokens, index, metadata, skip logs and counts.

The `.bin` bytes are copied as they are, the lengths concatenated, the metadata rewritten in the
fixed row groups, so merging the outputs of `--shard-index 0..n-1` gives the same bytes as one run
over the whole input. `cpt preprocess` itself assembles its output with this function.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow.parquet as pq

from cpt.io import atomic_open
from cpt.shards.format import ShardError, bin_path, idx_path, write_idx
from cpt.shards.manifest import manifest_path
from cpt.shards.metadata import meta_path
from cpt.shards.reader import Shard, open_shard
from cpt.shards.writer import ShardWriter

# Manifest keys that describe one part of a split run; dropped when parts are merged.
PART_KEYS = ("part",)


def skipped_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.skipped.jsonl")


def _sum_stats(stats: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Add up parts' counters: integers are summed, per-reason dicts summed key by key."""
    total: dict[str, Any] = {"read": 0, "written": 0, "skipped": 0, "blank_lines": 0, "skipped_by_reason": {}}
    for s in stats:
        for key, value in s.items():
            if isinstance(value, dict):
                bucket = total.setdefault(key, {})
                for k, n in value.items():
                    bucket[k] = bucket.get(k, 0) + n
            elif isinstance(value, int):
                total[key] = total.get(key, 0) + value
    return {k: dict(sorted(v.items())) if isinstance(v, dict) else v for k, v in total.items()}


def _check_compatible(shards: Sequence[Shard]) -> pq.ParquetSchema:
    first = shards[0]
    schema = pq.read_schema(meta_path(first.prefix))
    for s in shards[1:]:
        if s.dtype != first.dtype:
            raise ShardError(f"cannot merge {s.prefix} ({s.dtype.name}) with {first.prefix} ({first.dtype.name})")
        if (s.tokenizer_identity or {}).get("sha256") != (first.tokenizer_identity or {}).get("sha256"):
            raise ShardError(f"cannot merge {s.prefix} with {first.prefix}: they were made by different tokenizers")
        if s.manifest.get("options") != first.manifest.get("options"):
            raise ShardError(f"cannot merge {s.prefix} with {first.prefix}: preprocessing options differ")
        other = pq.read_schema(meta_path(s.prefix))
        if not other.equals(schema):
            diff = sorted(set(other.names) ^ set(schema.names)) or [
                n for n in schema.names if schema.field(n).type != other.field(n).type
            ]
            raise ShardError(f"cannot merge {s.prefix} with {first.prefix}: metadata columns differ ({', '.join(diff)})")
    return schema


def merge_shards(
    prefixes: Sequence[str | Path],
    output_prefix: str | Path,
    extra: dict[str, Any] | None = None,
    progress=None,
) -> dict[str, Any]:
    """Merge our shards (validated, same tokenizer/options/metadata columns) into `output_prefix`."""
    if not prefixes:
        raise ShardError("merge: no input shards")
    shards = [open_shard(p) for p in prefixes]
    schema = _check_compatible(shards)
    for s in shards:
        if s.index.n_sequences != s.n_documents:
            raise ShardError(f"cannot merge {s.prefix}: documents of several sequences are not supported")
    writer = ShardWriter(output_prefix, shards[0].dtype, schema)
    try:
        for s in shards:
            batches = pq.ParquetFile(meta_path(s.prefix)).iter_batches(batch_size=65536)
            writer.add_bin_file(bin_path(s.prefix), s.index.sequence_lengths, batches)
            if progress is not None:
                progress(s)
        _merge_skipped([s.prefix for s in shards], output_prefix)
        base = {k: v for k, v in shards[0].manifest.items() if k in ("tokenizer", "options")}
        inputs: list[Any] = []
        for s in shards:
            for item in s.manifest.get("inputs", []):
                if item not in inputs:
                    inputs.append(item)
        base["inputs"] = inputs
        base["stats"] = _sum_stats([s.manifest.get("stats", {}) for s in shards])
        base.update(extra or {})
        return writer.finish(base)
    except BaseException:
        writer.abort()
        raise


def _merge_skipped(prefixes: Sequence[Path], output_prefix: str | Path) -> None:
    """Concatenate the inputs' skip logs (always written, empty when nothing was skipped)."""
    out = skipped_path(output_prefix)
    with atomic_open(out, "wb") as dst:
        for p in prefixes:
            src = skipped_path(p)
            if src.is_file():
                with open(src, "rb") as f:
                    shutil.copyfileobj(f, dst)


def merge_plain(prefixes: Sequence[str | Path], output_prefix: str | Path) -> int:
    """Merge plain Megatron shards (no manifest/metadata), like Megatron's merge_datasets.py.

    Keeps multi-sequence documents; writes only `.bin/.idx`. Returns the document count.
    """
    shards = [open_shard(p, require_manifest=False) for p in prefixes]
    dtype = shards[0].dtype
    for s in shards[1:]:
        if s.dtype != dtype:
            raise ShardError(f"cannot merge {s.prefix} ({s.dtype.name}) with {shards[0].prefix} ({dtype.name})")
    out_bin, out_idx = bin_path(output_prefix), idx_path(output_prefix)
    lengths, docs, base = [], [np.zeros(1, np.int64)], 0
    manifest_path(output_prefix).unlink(missing_ok=True)
    with atomic_open(out_bin, "wb") as dst:  # .bin first, .idx (what readers open first) last
        for s in shards:
            with open(bin_path(s.prefix), "rb") as f:
                shutil.copyfileobj(f, dst, 1 << 22)
            lengths.append(np.asarray(s.index.sequence_lengths))
            docs.append(np.asarray(s.index.document_indices[1:]) + base)
            base += s.index.n_sequences
    with atomic_open(out_idx, "wb") as f:
        write_idx(f, dtype, np.concatenate(lengths), np.concatenate(docs))
    return sum(s.n_documents for s in shards)
