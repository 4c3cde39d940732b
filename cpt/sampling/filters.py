"""Metadata filters: `lang == "zh" and topic == "math"` evaluated over columns, without eval().

The expression is parsed with `ast` and only this grammar is accepted: column names, string /
number / bool / None constants, lists or tuples of constants, comparisons (==, !=, <, <=, >, >=,
in, not in; chains allowed), `and`, `or`, `not`, parentheses. Anything else is refused with a
message naming the construct, and an unknown column is refused naming the columns there are.
"""
from __future__ import annotations

import ast
from typing import Callable, Mapping

import numpy as np

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
        if isinstance(node, ast.Name):
            if node.id not in self.columns:
                self.fail(node, f"unknown column {node.id!r}; the metadata has {sorted(self.columns)}")
            return np.asarray(self.columns[node.id])
        if isinstance(node, ast.Constant) and (node.value is None or isinstance(node.value, (str, int, float, bool))):
            return node.value
        if isinstance(node, (ast.List, ast.Tuple)):
            return tuple(self.constant(e) for e in node.elts)
        self.fail(node, f"{type(node).__name__} is not allowed (only columns, constants, comparisons, and/or/not)")

    def constant(self, node: ast.AST):
        value = self.visit(node)
        if isinstance(value, np.ndarray):
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
            a, b = (left, right) if isinstance(left, np.ndarray) else (right, left)
            if not isinstance(a, np.ndarray):
                self.fail(node, "a comparison needs a column on one side")
            if not isinstance(left, np.ndarray) and isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)):
                op = {ast.Lt: ast.Gt(), ast.LtE: ast.GtE(), ast.Gt: ast.Lt(), ast.GtE: ast.LtE()}[type(op)]
            try:
                out &= np.asarray(_COMPARE[type(op)](a, b), dtype=bool)
            except TypeError as e:
                self.fail(node, f"cannot compare this column with {b!r}: {e}")
            left = right
        return out
