"""Deterministic held-out split of documents: the same document is always on the same side.

A document is held out when a 64-bit hash (splitmix64 of its `doc_id`, mixed with a seed) falls
below `fraction` of the range. It depends only on the document and the seed, never on the order,
the filter or the other documents, so a validation stream and its training stream built with the
same seed and fraction never share a document, and adding shards does not move old documents.
"""
from __future__ import annotations

import numpy as np

_M1, _M2, _GOLD = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB), np.uint64(0x9E3779B97F4A7C15)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = x + _GOLD
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
        return z ^ (z >> np.uint64(31))


def hash_unit(doc_ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per document (float64), from its `doc_id` and `seed` alone."""
    if isinstance(doc_ids, np.ndarray):
        ids = doc_ids.astype(np.uint64)
    else:  # Python ints: via float64 they would lose their low bits, so convert each exactly
        ids = np.array([int(d) & 0xFFFFFFFFFFFFFFFF for d in doc_ids], dtype=np.uint64)
    h = _splitmix64(ids ^ _splitmix64(np.full(1, seed, dtype=np.uint64)))
    return (h >> np.uint64(11)).astype(np.float64) * 2.0**-53


def held_out(doc_ids: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask: True for the documents in the held-out share `fraction` (0 <= fraction <= 1)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1], got {fraction}")
    return hash_unit(doc_ids, seed) < fraction
