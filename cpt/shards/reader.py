"""Open a shard after checking it end to end; refuse a bad or incomplete one with one clear message.

`open_shard(prefix, expect_tokenizer=...)` checks the `.idx` header (magic, version, dtype), its size
against the counts it declares, the `.bin` size against the lengths, the manifest (present and
complete, counts and file sizes equal), the metadata row count, and the tokenizer identity. Token
arrays are memory-mapped; the metadata is read only when asked for, as a pyarrow table.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cpt.shards.format import Index, ShardError, bin_path, idx_path, read_idx
from cpt.shards.manifest import FORMAT, manifest_path, read_manifest, sha256_file
from cpt.shards.metadata import meta_path, read_metadata


def _expected_sha(expect: Any) -> tuple[str, str]:
    """(sha256, description) of what the caller expects: a Tokenizer, an identity dict or a hash."""
    if isinstance(expect, str):
        return expect, expect[:12]
    if isinstance(expect, dict):
        return expect["sha256"], f"{expect.get('name')} ({expect['sha256'][:12]})"
    return expect.sha256, f"{expect.name} ({expect.sha256[:12]})"


class Shard:
    """A validated shard: documents as memory-mapped token arrays, plus manifest and metadata."""

    def __init__(self, prefix: Path, index: Index, manifest: dict[str, Any] | None):
        self.prefix = prefix
        self.index = index
        self.manifest = manifest
        self.dtype = index.dtype

    def __len__(self) -> int:
        return self.index.n_documents

    @property
    def n_documents(self) -> int:
        return self.index.n_documents

    @cached_property
    def tokens(self) -> np.ndarray:
        """All tokens of the shard, back to back (memory-mapped)."""
        if self.n_tokens == 0:
            return np.zeros(0, dtype=self.dtype)
        return np.memmap(bin_path(self.prefix), dtype=self.dtype, mode="r")

    @cached_property
    def doc_lengths(self) -> np.ndarray:
        """Tokens per document (int64; equals the sequence lengths when each document is one sequence)."""
        lengths = self.index.sequence_lengths
        docs = self.index.document_indices
        if len(docs) == len(lengths) + 1:
            return np.asarray(lengths, dtype=np.int64)
        per = np.zeros(len(docs) - 1, dtype=np.int64)
        nonempty = docs[1:] > docs[:-1]
        per[nonempty] = np.add.reduceat(np.asarray(lengths, np.int64), docs[:-1][nonempty])
        return per

    @cached_property
    def doc_offsets(self) -> np.ndarray:
        """Token offset of each document's first token (int64, length n_documents + 1)."""
        out = np.zeros(self.n_documents + 1, dtype=np.int64)
        np.cumsum(self.doc_lengths, out=out[1:])
        return out

    @property
    def n_tokens(self) -> int:
        # counted when the index was checked: opening a 100M-document shard set must not touch its pages again
        if self.index.n_tokens is not None:
            return self.index.n_tokens
        return int(self.index.sequence_lengths.sum(dtype=np.int64))

    def __getitem__(self, i: int) -> np.ndarray:
        if not -len(self) <= i < len(self):
            raise IndexError(f"document {i} out of range for {len(self)} documents in {self.prefix}")
        i %= len(self)
        return self.tokens[self.doc_offsets[i]: self.doc_offsets[i + 1]]

    def metadata(self, columns: Sequence[str] | None = None) -> pa.Table:
        """The metadata sidecar as a pyarrow table (all columns, or those named)."""
        return read_metadata(self.prefix, columns)

    @property
    def tokenizer_identity(self) -> dict[str, Any] | None:
        return (self.manifest or {}).get("tokenizer")

    def __repr__(self) -> str:
        return f"Shard({str(self.prefix)!r}, documents={len(self)}, tokens={self.n_tokens}, dtype={self.dtype.name})"


def open_shard(
    prefix: str | Path,
    expect_tokenizer: Any = None,
    require_manifest: bool = True,
    verify_checksums: bool = False,
) -> Shard:
    """Validate and open `PREFIX.bin/.idx` (+ manifest and metadata).

    expect_tokenizer: a Tokenizer, a tokenizer identity dict or its sha256; a shard made by another
    tokenizer is refused. require_manifest=False opens plain Megatron shards (no manifest, no
    metadata) after the format checks. verify_checksums re-hashes every file (reads them fully).
    """
    prefix = Path(str(prefix))
    for suffix in (".bin", ".idx", ".manifest.json", ".meta.parquet"):
        if prefix.name.endswith(suffix):
            prefix = prefix.with_name(prefix.name[: -len(suffix)])
    mpath = manifest_path(prefix)
    manifest = None
    if mpath.is_file():
        try:
            manifest = read_manifest(prefix)
        except ValueError as e:
            raise ShardError(f"refusing shard {prefix}: {mpath.name} is not valid JSON ({e})") from None
    elif require_manifest:
        raise ShardError(
            f"refusing shard {prefix}: {mpath.name} is missing, so the shard is incomplete (the writer did not "
            "finish) or not made by cpt (open it with require_manifest=False to read a plain Megatron shard)"
        )
    index = read_idx(prefix)
    shard = Shard(prefix, index, manifest)
    if manifest is not None:
        _check_manifest(shard, manifest, verify_checksums)
    if expect_tokenizer is not None:
        _check_tokenizer(shard, expect_tokenizer)
    return shard


def _check_manifest(shard: Shard, manifest: dict[str, Any], verify: bool) -> None:
    prefix = shard.prefix

    def refuse(reason: str) -> None:
        raise ShardError(f"refusing shard {prefix}: {reason}")

    if manifest.get("format") != FORMAT or not manifest.get("complete"):
        refuse(f"{manifest_path(prefix).name} is not a complete {FORMAT} manifest")
    if manifest.get("dtype") != shard.dtype.name:
        refuse(f"manifest says dtype {manifest.get('dtype')}, the index has {shard.dtype.name}")
    counts = {
        "n_documents": shard.n_documents,
        "n_sequences": shard.index.n_sequences,
        "n_tokens": shard.n_tokens,
    }
    for key, actual in counts.items():
        if manifest.get(key) != actual:
            refuse(f"manifest says {key}={manifest.get(key)}, the files hold {actual}")
    paths = {"bin": bin_path(prefix), "idx": idx_path(prefix), "meta": meta_path(prefix)}
    for key, path in paths.items():
        entry = manifest.get("files", {}).get(key)
        if entry is None:
            refuse(f"manifest lists no {key} file")
        if not path.is_file():
            refuse(f"{path.name} is missing")
        size = path.stat().st_size
        if size != entry["size"]:
            refuse(f"{path.name} is {size} bytes, the manifest says {entry['size']}")
        if verify and sha256_file(path) != entry["sha256"]:
            refuse(f"{path.name} does not match the manifest's sha256 (corrupted)")
    rows = pq.ParquetFile(paths["meta"]).metadata.num_rows
    if rows != shard.n_documents:
        refuse(f"{paths['meta'].name} has {rows} rows for {shard.n_documents} documents")


def _check_tokenizer(shard: Shard, expect: Any) -> None:
    want, described = _expected_sha(expect)
    have = shard.tokenizer_identity
    if have is None:
        raise ShardError(f"refusing shard {shard.prefix}: it records no tokenizer, expected {described}")
    if have.get("sha256") != want:
        raise ShardError(
            f"refusing shard {shard.prefix}: tokenizer mismatch: made with {have.get('name')} "
            f"({str(have.get('sha256'))[:12]}), expected {described}"
        )
