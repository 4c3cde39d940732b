"""Megatron-core's IndexedDataset `.idx` layout, written and parsed without importing megatron.

Layout (little endian), as `megatron.core.datasets.indexed_dataset._IndexWriter` writes it:
  magic `MMIDIDX\\x00\\x00` (9 bytes) | version u64 = 1 | dtype code u8 |
  sequence count u64 | document-index count u64 |
  sequence lengths int32[S] | sequence pointers int64[S] (byte offsets into .bin) |
  document indices int64[D] (0, then the sequence count after each document)
The `.bin` is the tokens of every sequence, back to back, in the dtype.
Tests check this module against megatron-core's own reader and builder.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
VERSION = 1
HEADER_SIZE = len(MAGIC) + 8 + 1 + 8 + 8  # magic, version, dtype code, sequence count, doc-index count

# megatron.core.datasets.indexed_dataset.DType codes
DTYPE_CODES: dict[int, type] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16,
}
CODE_OF = {np.dtype(v): k for k, v in DTYPE_CODES.items()}


class ShardError(ValueError):
    """A shard is malformed, incomplete or mismatched; the message names the prefix and the reason."""


def optimal_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits with margin (vocab < 65,500, Megatron's rule), else int32."""
    return np.dtype(np.uint16 if vocab_size < 65500 else np.int32)


def bin_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.bin")


def idx_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.idx")


def write_idx(f: BinaryIO, dtype: np.dtype, lengths: np.ndarray, document_indices: np.ndarray | None = None) -> None:
    """Write a complete index for `lengths` (one sequence per document unless indices are given)."""
    dtype = np.dtype(dtype)
    lengths = np.ascontiguousarray(lengths, dtype=np.int32)
    if document_indices is None:
        document_indices = np.arange(len(lengths) + 1, dtype=np.int64)
    pointers = np.zeros(len(lengths), dtype=np.int64)
    if len(lengths) > 1:
        np.cumsum(lengths[:-1].astype(np.int64) * dtype.itemsize, out=pointers[1:])
    f.write(MAGIC)
    f.write(struct.pack("<Q", VERSION))
    f.write(struct.pack("<B", CODE_OF[dtype]))
    f.write(struct.pack("<Q", len(lengths)))
    f.write(struct.pack("<Q", len(document_indices)))
    f.write(lengths.tobytes(order="C"))
    f.write(pointers.tobytes(order="C"))
    f.write(np.ascontiguousarray(document_indices, dtype=np.int64).tobytes(order="C"))


@dataclass
class Index:
    """A parsed, validated `.idx`: arrays are memory-mapped views (cheap for millions of documents)."""

    dtype: np.dtype
    sequence_lengths: np.ndarray
    sequence_pointers: np.ndarray
    document_indices: np.ndarray
    n_tokens: int | None = None  # tokens of the .bin, counted by the check (None: sum the lengths)

    @property
    def n_sequences(self) -> int:
        return len(self.sequence_lengths)

    @property
    def n_documents(self) -> int:
        return len(self.document_indices) - 1


def read_idx(prefix: str | Path) -> Index:
    """Parse and check `PREFIX.idx` against itself and `PREFIX.bin`; raise ShardError on any mismatch."""
    ipath, bpath = idx_path(prefix), bin_path(prefix)
    for p in (ipath, bpath):
        if not p.is_file():
            raise ShardError(f"refusing shard {prefix}: {p.name} is missing")
    size = ipath.stat().st_size
    if size < HEADER_SIZE:
        raise ShardError(f"refusing shard {prefix}: {ipath.name} is {size} bytes, shorter than the header")
    with open(ipath, "rb") as f:
        header = f.read(HEADER_SIZE)
    if header[:9] != MAGIC:
        raise ShardError(f"refusing shard {prefix}: {ipath.name} has magic {header[:9]!r}, expected {MAGIC!r}")
    version, = struct.unpack("<Q", header[9:17])
    if version != VERSION:
        raise ShardError(f"refusing shard {prefix}: {ipath.name} has version {version}, expected {VERSION}")
    code = header[17]
    if code not in DTYPE_CODES:
        raise ShardError(f"refusing shard {prefix}: {ipath.name} has unknown dtype code {code}")
    dtype = np.dtype(DTYPE_CODES[code])
    n_seq, n_doc_idx = struct.unpack("<QQ", header[18:34])
    expected = HEADER_SIZE + 4 * n_seq + 8 * n_seq + 8 * n_doc_idx
    if size != expected:
        extra = " (sequence modes of a multimodal index are not supported)" if size == expected + n_seq else ""
        raise ShardError(
            f"refusing shard {prefix}: {ipath.name} is {size} bytes but its header "
            f"({n_seq} sequences, {n_doc_idx} document indices) implies {expected}{extra}"
        )
    # checked through maps of its own, dropped after: the pages a full check touched stay in the
    # page cache (shared by every process of the node), not in the mappings this process keeps
    n_tokens = _check_consistency(prefix, _map(ipath, dtype, n_seq, n_doc_idx), bpath.stat().st_size)
    return _map(ipath, dtype, n_seq, n_doc_idx, n_tokens)


def _map(ipath: Path, dtype: np.dtype, n_seq: int, n_doc_idx: int, n_tokens: int | None = None) -> Index:
    lengths = np.memmap(ipath, dtype=np.int32, mode="r", offset=HEADER_SIZE, shape=(n_seq,)) if n_seq else np.zeros(0, np.int32)
    off = HEADER_SIZE + 4 * n_seq
    pointers = np.memmap(ipath, dtype=np.int64, mode="r", offset=off, shape=(n_seq,)) if n_seq else np.zeros(0, np.int64)
    off += 8 * n_seq
    docs = np.memmap(ipath, dtype=np.int64, mode="r", offset=off, shape=(n_doc_idx,)) if n_doc_idx else np.zeros(0, np.int64)
    return Index(dtype, lengths, pointers, docs, n_tokens)


_CHECK_CHUNK = 1 << 20  # elements per step of the consistency check: no temporary of the index's size


def _check_consistency(prefix: str | Path, index: Index, bin_size: int) -> int:
    """Check the index against itself and the .bin size, a chunk at a time; return the token count."""
    lengths, pointers, docs = index.sequence_lengths, index.sequence_pointers, index.document_indices
    item = index.dtype.itemsize
    if len(docs) == 0 or docs[0] != 0 or docs[-1] != len(lengths):
        raise ShardError(f"refusing shard {prefix}: document indices do not run from 0 to the sequence count")
    for lo in range(0, len(docs), _CHECK_CHUNK):
        if np.any(np.diff(docs[lo: lo + _CHECK_CHUNK + 1]) < 0):
            raise ShardError(f"refusing shard {prefix}: document indices do not run from 0 to the sequence count")
    total, contiguous = 0, True  # total: bytes of the sequences before the chunk = the next pointer
    for lo in range(0, len(lengths), _CHECK_CHUNK):
        part = np.asarray(lengths[lo: lo + _CHECK_CHUNK], dtype=np.int64)
        if np.any(part < 0):
            raise ShardError(f"refusing shard {prefix}: negative sequence length in the index")
        expected = np.cumsum(part * item) - part * item + total
        contiguous = contiguous and np.array_equal(expected, pointers[lo: lo + _CHECK_CHUNK])
        total += int(part.sum()) * item
    if total != bin_size:
        raise ShardError(
            f"refusing shard {prefix}: .idx/.bin mismatch: the index describes {total} bytes of tokens, "
            f"{bin_path(prefix).name} has {bin_size} (truncated or from another run)"
        )
    if not contiguous:
        raise ShardError(f"refusing shard {prefix}: sequence pointers are not contiguous offsets of the lengths")
    return total // item
