"""Metadata filters: `lang == "zh" and topic == "math"` evaluated over columns, without eval().

The expression is parsed with `ast` and only this grammar is accepted: column names, string /
number / bool / None constants, lists or tuples of constants, comparisons (==, !=, <, <=, >, >=,
in, not in; chains allowed), `and`, `or`, `not`, parentheses. Anything else is refused with a
message naming the construct, and an unknown column is refused naming the columns there are.

`doc_hash` is a column every table with a `doc_id` has: a uniform number in [0, 1) per document,
hashed from its id alone (cpt.sampling.holdout.hash_unit with a seed of its own, independent of
the held-out split). `doc_hash < 0.1` is a seeded one-in-ten sample of the documents that never
depends on their order, on the other filters or on which shards are read: the same documents in
every run and every tool that applies the filter (training, `cpt eval`, `cpt trace`). It is read
from `doc_id`, so a metadata column of that name is never used.

A dictionary-encoded column (`cpt.sampling.columns.Categorical`) is compared once per distinct
value and the answer mapped through its codes: the same result as comparing every document.
"""
from __future__ import annotations

import ast
from typing import Any, Callable, Mapping

import numpy as np

from cpt.sampling import mapped
from cpt.sampling.columns import Categorical
from cpt.sampling.holdout import hash_unit

DOC_HASH_SEED = 0x6A09E667F3BCC908
"""Seed of the `doc_hash` column (the fraction of sqrt(2)): unlike a held-out seed, no recipe sets it."""
DERIVED: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "doc_hash": ("doc_id", lambda doc_id: hash_unit(np.asarray(doc_id), DOC_HASH_SEED)),
}
"""Columns computed from a stored one: name -> (the column read, how)."""

_COMPARE: dict[type, Callable[[np.ndarray, object], np.ndarray]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
    ast.In: lambda a, b: np.isin(a, np.asarray(list(b), dtype=object if a.dtype == object else None)),
    ast.NotIn: lambda a, b: ~np.isin(a, np.asarray(list(b), dtype=object if a.dtype == object else None)),
}


class FilterError(ValueError):
    """A filter expression that cannot be parsed or applied."""


def select(expression: str | None, columns: Mapping[str, np.ndarray], n_rows: int) -> np.ndarray:
    """Boolean mask of the rows for which `expression` holds (all rows when it is None or empty)."""
    if expression is None or not expression.strip():
        return np.ones(n_rows, dtype=bool)
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as e:
        raise FilterError(f"filter {expression!r} is not a valid expression: {e.msg}") from None
    mask = _Evaluator(expression, columns, n_rows).visit(tree.body)
    if not isinstance(mask, np.ndarray) or mask.dtype != bool:
        raise FilterError(f"filter {expression!r} must be a condition (a comparison), not a bare value")
    return mask


SELECT_CHUNK = 1 << 22  # rows per chunk of select_rows: its temporaries never scale with the table


def select_rows(expression: str | None, columns: Mapping[str, np.ndarray], n_rows: int,
                chunk: int | None = None) -> np.ndarray:
    """Rows (int64, ascending) for which `expression` holds: `flatnonzero(select(...))`, evaluated a
    chunk of rows at a time (a condition is per row), so a 100M-row table needs no table-sized masks."""
    if expression is None or not expression.strip():
        return np.arange(n_rows, dtype=np.int64)
    chunk = chunk or SELECT_CHUNK
    parts = [np.zeros(0, np.int64)]
    for lo in range(0, max(n_rows, 1), chunk):  # at least once: a bad filter fails on an empty table too
        hi = min(lo + chunk, n_rows)
        part = {name: _rows_of(col, lo, hi) for name, col in columns.items()}
        parts.append(np.flatnonzero(select(expression, part, hi - lo)).astype(np.int64) + lo)
        # a memory-mapped column's chunk goes back to the page cache alone once read
        mapped.release([getattr(col, "codes", col) for col in part.values()])
    return np.concatenate(parts)


def _rows_of(col: Any, lo: int, hi: int) -> Any:
    return Categorical(col.codes[lo:hi], col.categories) if isinstance(col, Categorical) else col[lo:hi]


def filter_columns(expression: str | None) -> set[str]:
    """The stored column names an expression reads (a derived column: the one it is computed from;
    empty when the expression is None or does not parse)."""
    if expression is None or not expression.strip():
        return set()
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return set()
    return {DERIVED[n.id][0] if n.id in DERIVED else n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


class _Evaluator:
    def __init__(self, expression: str, columns: Mapping[str, np.ndarray], n_rows: int):
        self.expression, self.columns, self.n_rows = expression, columns, n_rows

    def fail(self, node: ast.AST, what: str) -> None:
        raise FilterError(f"filter {self.expression!r}: {what} (at column {getattr(node, 'col_offset', 0)})")

    def visit(self, node: ast.AST):
        if isinstance(node, ast.BoolOp):
            parts = [self.condition(v) for v in node.values]
            out = parts[0]
            for p in parts[1:]:
                out = (out & p) if isinstance(node.op, ast.And) else (out | p)
            return out
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return ~self.condition(node.operand)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Name) and node.id in DERIVED:
            return self.derived(node)
        if isinstance(node, ast.Name):
            if node.id not in self.columns:
                self.fail(node, f"unknown column {node.id!r}; the metadata has {sorted(self.columns)}")
            col = self.columns[node.id]
            return col if isinstance(col, Categorical) else np.asarray(col)
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float, bool))):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return tuple(self.constant(e) for e in node.elts)
        self.fail(node, f"{type(node).__name__} is not allowed (only columns, constants, comparisons, and/or/not)")

    def derived(self, node: ast.Name) -> np.ndarray:
        source, compute = DERIVED[node.id]
        if source not in self.columns:
            self.fail(node, f"{node.id!r} is computed from a {source!r} column, which the metadata lacks "
                            f"(it has {sorted(self.columns)})")
        return compute(self.columns[source])

    def constant(self, node: ast.AST):
        value = self.visit(node)
        if _is_column(value):
            self.fail(node, "list elements must be constants")
        return value

    def condition(self, node: ast.AST) -> np.ndarray:
        value = self.visit(node)
        if not isinstance(value, np.ndarray) or value.dtype != bool:
            self.fail(node, "and/or/not need conditions on both sides")
        return value

    def compare(self, node: ast.Compare) -> np.ndarray:
        out = np.ones(self.n_rows, dtype=bool)
        left = self.visit(node.left)
        for op, right_node in zip(node.ops, node.comparators):
            right = self.visit(right_node)
            if type(op) not in _COMPARE:
                self.fail(node, f"operator {type(op).__name__} is not allowed")
            if isinstance(op, (ast.In, ast.NotIn)) and not isinstance(right, tuple):
                self.fail(node, "`in` needs a list of constants on its right")
            a, b = (left, right) if _is_column(left) else (right, left)
            if not _is_column(a):
                self.fail(node, "a comparison needs a column on one side")
            if not _is_column(left) and isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
                op = {ast.Lt: ast.Gt(), ast.LtE: ast.GtE(), ast.Gt: ast.Lt(), ast.GtE: ast.LtE()}[type(op)]
            try:
                out &= _apply(_COMPARE[type(op)], a, b)
            except TypeError as e:
                self.fail(node, f"cannot compare this column with {b!r}: {e}")
            left = right
        return out


def _is_column(value) -> bool:
    return isinstance(value, (np.ndarray, Categorical))


def _apply(compare: Callable, a, b) -> np.ndarray:
    """compare(column, other) per document; a Categorical against a constant: once per category."""
    if isinstance(a, Categorical) and not _is_column(b):
        return a.map(np.asarray(compare(a.categories, b), dtype=bool).reshape(len(a.categories)))
    a = np.asarray(a)
    b = np.asarray(b) if isinstance(b, Categorical) else b
    return np.asarray(compare(a, b), dtype=bool)
