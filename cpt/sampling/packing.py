"""Packing segment: documents in stream order -> sample boundaries, as megatron's `build_sample_idx`.

The documents of a stream, in order, form one flat token sequence. Boundary k is flat token
k * seq_length, written as (position of its document in stream order, offset in that document):
the first document whose end reaches flat token k * seq_length + add_extra_token (that is, the
document holding the last token sample k - 1 needs). Sample k reads seq_length + add_extra_token tokens from boundary k. Boundary 0 is (0, 0).
The C++ kernel runs megatron's loop from a cursor over a window of document lengths and stops at
the first boundary that the window cannot complete; the caller moves the window on. The NumPy
reference computes the same boundaries directly with a cumulative sum and a binary search.
"""
from __future__ import annotations

import numpy as np

from cpt.sampling._native import native, use_cpp


def _check(lengths, pos: int, offset: int, seq_length: int, max_samples: int, add_extra_token: int):
    raw = np.asarray(lengths)
    if raw.size and (raw.max() >= 2**31 or raw.min() < 0):
        raise ValueError("document lengths must be in [0, 2**31)")
    lengths = np.ascontiguousarray(raw, dtype=np.int32)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    if seq_length < 1:
        raise ValueError(f"seq_length must be >= 1, got {seq_length}")
    if add_extra_token < 0:
        raise ValueError(f"add_extra_token must be >= 0, got {add_extra_token}")
    if max_samples < 0:
        raise ValueError(f"max_samples must be >= 0, got {max_samples}")
    if not 0 <= pos <= lengths.size or offset < 0 or (pos < lengths.size and offset > lengths[pos]):
        raise ValueError(f"cursor (pos={pos}, offset={offset}) is outside the window of {lengths.size} documents")
    return lengths


def pack_segment(
    lengths,
    pos: int,
    offset: int,
    seq_length: int,
    max_samples: int,
    *,
    base: int = 0,
    add_extra_token: int = 1,
    backend: str = "auto",
) -> tuple[np.ndarray, int, int]:
    """Up to `max_samples` boundaries after the cursor (pos, offset) within the window `lengths`.

    Returns (boundaries int64 (k, 2) as (base + position, offset), position, offset) where the last
    two are the cursor at the last boundary produced (window-relative), from which to continue.
    """
    lengths = _check(lengths, pos, offset, seq_length, max_samples, add_extra_token)
    if not use_cpp(backend):
        return pack_segment_reference(lengths, pos, offset, seq_length, max_samples, base, add_extra_token)
    out = np.empty((max_samples, 2), dtype=np.int64)
    k, pos, offset = native().pack_segment(lengths, int(pos), int(offset), int(seq_length), int(add_extra_token), out, int(base))
    return out[:k], int(pos), int(offset)


def pack_segment_reference(
    lengths, pos: int, offset: int, seq_length: int, max_samples: int, base: int = 0, add_extra_token: int = 1
) -> tuple[np.ndarray, int, int]:
    """NumPy reference: boundary flat positions, then their documents by binary search."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    total = int(starts[-1])
    cursor = int(starts[pos]) + offset if pos < lengths.size else total
    # boundary j (j = 1..) sits at flat token cursor + j*seq_length and needs token ... + extra - 1
    last_needed = cursor + seq_length * np.arange(1, max_samples + 1, dtype=np.int64) + add_extra_token - 1
    k = int(np.searchsorted(last_needed, total, side="left"))  # boundaries whose last token exists
    flat = cursor + seq_length * np.arange(1, k + 1, dtype=np.int64)
    # megatron's loop stops in the first document whose end reaches the last token the sample needs
    docs = np.searchsorted(starts[1:], flat + add_extra_token, side="left")
    out = np.stack([base + docs, flat - starts[docs]], axis=1).astype(np.int64).reshape(k, 2)
    if k:
        pos, offset = int(docs[-1]), int(flat[-1] - starts[docs[-1]])
    return out, pos, offset
