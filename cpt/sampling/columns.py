"""Metadata columns without a Python object per document.

Numbers stay NumPy arrays (memory-mapped when they come from the index cache). Strings (`lang`,
`topic`, `source`, ...) are dictionary-encoded: an int32 code per document and the few distinct
values once. A filter compares the distinct values and maps the answer through the codes, so
`topic == "math"` over 100M documents touches 100M int32 codes and a handful of strings.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np


@dataclass(frozen=True, eq=False)
class Categorical:
    """A dictionary-encoded column: `categories[codes[i]]` is the value of document i."""

    codes: np.ndarray  # int32, one per document
    categories: np.ndarray  # object array of the distinct values (None for a missing value)

    def __len__(self) -> int:
        return len(self.codes)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(object)

    @property
    def shape(self) -> tuple[int]:
        return (len(self.codes),)

    def __getitem__(self, index: Any) -> Any:
        """Decoded values: one value for an int, an object array for a slice, mask or index array."""
        return self.categories[self.codes[index]]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.categories[np.asarray(self.codes)]
        return out if dtype is None else out.astype(dtype)

    def tolist(self) -> list:
        return np.asarray(self).tolist()

    def map(self, per_category: np.ndarray) -> np.ndarray:
        """A per-document array from one value per category (how filters are evaluated)."""
        return np.asarray(per_category)[self.codes]

    def _compare(self, other: Any, op: Any) -> np.ndarray:
        if isinstance(other, (Categorical, np.ndarray, list, tuple)):
            return np.asarray(op(np.asarray(self), np.asarray(other)), dtype=bool)
        return self.map(np.asarray(op(self.categories, other), dtype=bool).reshape(len(self.categories)))

    __hash__ = None  # compared element-wise, like an array

    def __eq__(self, other: Any) -> np.ndarray:  # type: ignore[override]
        return self._compare(other, operator.eq)

    def __ne__(self, other: Any) -> np.ndarray:  # type: ignore[override]
        return self._compare(other, operator.ne)

    def __lt__(self, other: Any) -> np.ndarray:
        return self._compare(other, operator.lt)

    def __le__(self, other: Any) -> np.ndarray:
        return self._compare(other, operator.le)

    def __gt__(self, other: Any) -> np.ndarray:
        return self._compare(other, operator.gt)

    def __ge__(self, other: Any) -> np.ndarray:
        return self._compare(other, operator.ge)

    @classmethod
    def encode(cls, values: Sequence | np.ndarray) -> "Categorical":
        """Encode any sequence of strings (or None); categories in order of first appearance."""
        arr = np.asarray(values, dtype=object)
        index: dict[Any, int] = {}
        codes = np.fromiter((index.setdefault(v, len(index)) for v in arr), dtype=np.int32, count=len(arr))
        return cls(codes, _objects(list(index)))

    @classmethod
    def concat(cls, parts: Sequence["Categorical"]) -> "Categorical":
        """One column from several, the categories merged in order of first appearance."""
        index: dict[Any, int] = {}
        codes = []
        for p in parts:
            remap = np.array([index.setdefault(v, len(index)) for v in p.categories], dtype=np.int32)
            codes.append(remap[p.codes] if len(p.categories) else np.zeros(0, np.int32))
        return cls(np.concatenate(codes) if codes else np.zeros(0, np.int32), _objects(list(index)))


def _objects(values: list) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


def is_string_column(values: Any) -> bool:
    return isinstance(values, Categorical) or np.asarray(values).dtype.kind in "USO"


def as_column(values: Any) -> np.ndarray | Categorical:
    """Numbers as an array, strings dictionary-encoded."""
    if isinstance(values, Categorical):
        return values
    arr = np.asarray(values)
    if arr.dtype.kind in "USO":
        return Categorical.encode(values)
    return arr


def concat_columns(parts: Sequence[Any]) -> np.ndarray | Categorical:
    if any(isinstance(p, Categorical) for p in parts):
        return Categorical.concat([p if isinstance(p, Categorical) else Categorical.encode(p) for p in parts])
    return np.concatenate(parts)


def take(column: Any, rows: np.ndarray) -> np.ndarray:
    """Values of `rows` as a plain array (decoded for a Categorical)."""
    return column[rows] if isinstance(column, Categorical) else np.asarray(column)[rows]
