"""Reading the tokens of located samples from shards (what a loader worker does with Pieces).

Kept apart from Stream so that workers need only the Pieces the main process sent and an open
shard per source; no blender or stream state is needed to read.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

from cpt.sampling.stream import Pieces


def read_samples(pieces: Pieces, shard_for: Callable[[str], Any], sample_tokens: int) -> np.ndarray:
    """Tokens of every sample as an int64 array (samples, sample_tokens).

    shard_for(source) returns an object whose [document] is that document's token array, such as
    the Shard of `cpt.shards.open(source)` (cache them: this is called once per piece).
    """
    n = len(pieces.sample_offsets) - 1
    out = np.empty((n, sample_tokens), dtype=np.int64)
    for k in range(n):
        col = 0
        for j in range(pieces.sample_offsets[k], pieces.sample_offsets[k + 1]):
            doc = shard_for(pieces.sources[pieces.source[j]])[int(pieces.document[j])]
            part = doc[int(pieces.start[j]): int(pieces.stop[j])]
            out[k, col: col + len(part)] = part
            col += len(part)
        if col != sample_tokens:
            raise ValueError(f"sample {k} has {col} tokens in its pieces, expected {sample_tokens}")
    return out
