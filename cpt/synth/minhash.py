"""MinHash signatures with LSH banding, for near-duplicate detection of QA pairs.

Texts become sets of word n-gram shingles; each shingle is hashed to 32 bits (blake2b), and
`num_perm` universal hash functions `(a*x + b) mod (2**61 - 1)` give the signature. With
a, b, x < 2**32 the products stay below 2**64, so the arithmetic is exact in uint64. LSH splits the
signature into bands; texts sharing any band are candidates, and a candidate counts as a near
duplicate when the estimated Jaccard similarity (share of equal signature entries) reaches the
threshold. Seeded, so the same texts give the same decisions on every run.
"""
from __future__ import annotations

import hashlib
import re

import numpy as np

_PRIME = np.uint64((1 << 61) - 1)
_WORD_RE = re.compile(r"\w+")


def shingles(text: str, n: int = 3) -> set[str]:
    """Lower-cased word n-grams (the whole text as one shingle when it has fewer than n words)."""
    words = _WORD_RE.findall(text.lower())
    if len(words) < n:
        return {" ".join(words)} if words else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


class MinHashLSH:
    """An index of kept texts answering "is this a near duplicate of one of them?"."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, bands: int = 32,
                 ngram: int = 3, seed: int = 1) -> None:
        if num_perm % bands:
            raise ValueError(f"num_perm ({num_perm}) must be a multiple of bands ({bands})")
        if not 0 < threshold <= 1:
            raise ValueError(f"near-duplicate threshold must be in (0, 1], got {threshold}")
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, 1 << 32, size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, 1 << 32, size=num_perm, dtype=np.uint64)
        self.threshold = threshold
        self.bands = bands
        self.rows = num_perm // bands
        self.ngram = ngram
        self.buckets: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
        self.signatures: list[np.ndarray] = []

    def signature(self, text: str) -> np.ndarray:
        """The MinHash signature (uint64, `num_perm` entries) of the text's shingles."""
        sh = shingles(text, self.ngram)
        if not sh:
            return np.full(self.a.shape, np.iinfo(np.uint64).max, dtype=np.uint64)
        x = np.array([int.from_bytes(hashlib.blake2b(s.encode(), digest_size=4).digest(), "little")
                      for s in sh], dtype=np.uint64)
        return ((np.outer(x, self.a) + self.b) % _PRIME).min(axis=0)

    def query(self, sig: np.ndarray) -> float:
        """Highest estimated Jaccard similarity with any indexed text sharing a band (0 if none)."""
        best = 0.0
        seen: set[int] = set()
        for band, table in enumerate(self.buckets):
            for idx in table.get(self._band_key(sig, band), ()):
                if idx not in seen:
                    seen.add(idx)
                    best = max(best, float(np.mean(self.signatures[idx] == sig)))
        return best

    def add(self, sig: np.ndarray) -> None:
        idx = len(self.signatures)
        self.signatures.append(sig)
        for band, table in enumerate(self.buckets):
            table.setdefault(self._band_key(sig, band), []).append(idx)

    def is_near_duplicate(self, text: str) -> bool:
        """True if `text` is near an indexed one; otherwise index it and return False."""
        sig = self.signature(text)
        if self.query(sig) >= self.threshold:
            return True
        self.add(sig)
        return False

    def _band_key(self, sig: np.ndarray, band: int) -> bytes:
        return sig[band * self.rows:(band + 1) * self.rows].tobytes()
