"""The data state's bitmaps (stream heads, consumed-documents ledgers) kept out of trainer_state.json.

A data state in memory holds bool arrays of one bit per document of a shard set. Inside the JSON
trainer state they would cost base64 text of every bitmap at every checkpoint; instead a checkpoint
stores them in one binary file beside it (`BITS_FILE`, written through cpt.io by the rank that
writes the trainer state, before the checkpoint is committed) and the JSON refers to each by key:
`{"$bits": KEY, "documents": N}`. An array object met twice (a shard set's shared ledger) is
stored once. The file is an .npz (zip: names, CRC-checked members) of packed bits, each
zlib-compressed (early in an epoch a bitmap is mostly zeros).
"""
from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from cpt.io import atomic_path

BITS_FILE = "data_bits.npz"
_LEVEL = 1  # zlib level: the dense bitmaps late in an epoch barely compress at any level


def split_bits(tree: Any) -> tuple[Any, dict[str, np.ndarray]]:
    """(`tree` with every bool array replaced by a reference, {key: array})."""
    arrays: dict[str, np.ndarray] = {}
    keys: dict[int, str] = {}

    def walk(x: Any) -> Any:
        if isinstance(x, np.ndarray) and x.dtype == bool:
            key = keys.setdefault(id(x), f"b{len(keys)}")
            arrays[key] = x
            return {"$bits": key, "documents": len(x)}
        if isinstance(x, Mapping):
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return x

    return walk(tree), arrays


def join_bits(tree: Any, arrays: Mapping[str, np.ndarray], where: str = BITS_FILE) -> Any:
    """`tree` with every reference replaced by its array (the inverse of split_bits)."""
    def walk(x: Any) -> Any:
        if isinstance(x, Mapping):
            if "$bits" in x:
                key = x["$bits"]
                if key not in arrays:
                    raise ValueError(f"{where}: no bitmap {key!r} (the data state refers to it)")
                if len(arrays[key]) != int(x["documents"]):
                    raise ValueError(f"{where}: bitmap {key!r} has {len(arrays[key])} documents, "
                                     f"the data state says {x['documents']}")
                return arrays[key]
            return {k: walk(v) for k, v in x.items()}
        if isinstance(x, list):
            return [walk(v) for v in x]
        return x

    return walk(tree)


def has_refs(tree: Any) -> bool:
    if isinstance(tree, Mapping):
        return "$bits" in tree or any(has_refs(v) for v in tree.values())
    return isinstance(tree, list) and any(has_refs(v) for v in tree)


def write_bits(path: str | Path, arrays: Mapping[str, np.ndarray]) -> int:
    """Write `arrays` atomically to `path` (see the module docstring); returns the file's bytes."""
    packed = {k: np.frombuffer(zlib.compress(np.packbits(v).tobytes(), _LEVEL), np.uint8) for k, v in arrays.items()}
    sizes = {f"{k}.documents": np.array([len(v)], np.int64) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **packed, **sizes)
    return Path(path).stat().st_size


def read_bits(path: str | Path) -> dict[str, np.ndarray]:
    """The arrays `write_bits` wrote to `path`."""
    out = {}
    with np.load(path) as z:
        for name in z.files:
            if name.endswith(".documents"):
                continue
            n = int(z[f"{name}.documents"][0])
            out[name] = np.unpackbits(np.frombuffer(zlib.decompress(z[name].tobytes()), np.uint8), count=n).astype(bool)
    return out


def load_data_state(state: Mapping[str, Any], folder: str | Path) -> dict[str, Any]:
    """A checkpoint's data state (from its trainer_state.json) with its bitmaps read from `folder`."""
    if not has_refs(state):
        return dict(state)
    path = Path(folder) / BITS_FILE
    if not path.is_file():
        raise ValueError(f"{folder}: the data state refers to bitmaps in {BITS_FILE}, which is missing "
                         "(copy the whole checkpoint folder)")
    return join_bits(state, read_bits(path), str(path))
