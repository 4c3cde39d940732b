"""Concatenate shards, in the order given: tokens, index, metadata, skip logs and counts.

The `.bin` bytes are copied as they are, the lengths concatenated, the metadata rewritten in the
fixed row groups, so merging the outputs of `--shard-index 0..n-1` gives the same bytes as one run
over the whole input. `cpt preprocess` itself assembles its output with this function.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, BinaryIO, Sequence

import numpy as np
import pyarrow.parquet as pq

from cpt.io import PendingFiles, atomic_open
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


def _check_compatible(first: Shard, schema: pq.ParquetSchema, s: Shard) -> None:
    """`s` may follow `first` (whose metadata schema is `schema`) in one merged shard."""
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


class ShardMerger:
    """Merge our shards into `output_prefix` one at a time, as they become available (a launch's
    driver assembles chunks while later slices still run). Everything goes to temporary files; the
    output appears only in `finish` (skip log, then data files, then the manifest: the commit
    marker), so an aborted or killed merge leaves no output that reads as complete. `merge_shards`
    is this class fed all parts at once: one code path, so streaming cannot change a byte."""

    def __init__(self, output_prefix: str | Path, extra: dict[str, Any] | None = None) -> None:
        self.output_prefix, self.extra = output_prefix, dict(extra or {})
        self.first: Shard | None = None
        self.schema: pq.ParquetSchema | None = None
        self.writer: ShardWriter | None = None
        self.skipped: PendingFiles | None = None
        self._skip_out: BinaryIO | None = None
        self.inputs: list[Any] = []
        self.stats: list[dict[str, Any]] = []

    def add(self, prefix: str | Path) -> Shard:
        """Validate part `prefix` (same dtype, tokenizer, options, metadata columns as the first)
        and append it; return it opened."""
        s = open_shard(prefix)
        if self.first is None:
            self.first, self.schema = s, pq.read_schema(meta_path(s.prefix))
        else:
            _check_compatible(self.first, self.schema, s)
        if s.index.n_sequences != s.n_documents:
            raise ShardError(f"cannot merge {s.prefix}: documents of several sequences are not supported")
        if self.writer is None:
            self.writer = ShardWriter(self.output_prefix, s.dtype, self.schema)
            self.skipped = PendingFiles({"skipped": skipped_path(self.output_prefix)})
            self._skip_out = open(self.skipped.tmp["skipped"], "wb")
        batches = pq.ParquetFile(meta_path(s.prefix)).iter_batches(batch_size=65536)
        self.writer.add_bin_file(bin_path(s.prefix), s.index.sequence_lengths, batches)
        src = skipped_path(s.prefix)
        if src.is_file():
            with open(src, "rb") as f:
                shutil.copyfileobj(f, self._skip_out)
        for item in s.manifest.get("inputs", []):
            if item not in self.inputs:
                self.inputs.append(item)
        self.stats.append(s.manifest.get("stats", {}))
        return s

    def write_behind(self) -> None:
        """Write the tokens merged so far through to disk now (`ShardWriter.write_behind`)."""
        if self.writer is not None:
            self.writer.write_behind()

    def finish(self) -> dict[str, Any]:
        """Commit the merged shard (the skip log first, the manifest last); return its manifest."""
        if self.writer is None:
            raise ShardError("merge: no input shards")
        self._skip_out.close()
        self.skipped.commit()
        base = {k: v for k, v in self.first.manifest.items() if k in ("tokenizer", "options")}
        base["inputs"] = self.inputs
        base["stats"] = _sum_stats(self.stats)
        base.update(self.extra)
        manifest = self.writer.finish(base)
        self.writer = None
        return manifest

    def abort(self) -> None:
        """Delete the temporary files; whatever was at `output_prefix` before is untouched."""
        if self._skip_out is not None:
            self._skip_out.close()
        if self.skipped is not None:
            self.skipped.abort()
        if self.writer is not None:
            self.writer.abort()
            self.writer = None


def merge_shards(
    prefixes: Sequence[str | Path],
    output_prefix: str | Path,
    extra: dict[str, Any] | None = None,
    progress=None,
) -> dict[str, Any]:
    """Merge our shards (validated, same tokenizer/options/metadata columns) into `output_prefix`."""
    if not prefixes:
        raise ShardError("merge: no input shards")
    merger = ShardMerger(output_prefix, extra)
    try:
        for p in prefixes:
            s = merger.add(p)
            if progress is not None:
                progress(s)
        return merger.finish()
    except BaseException:
        merger.abort()
        raise


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
