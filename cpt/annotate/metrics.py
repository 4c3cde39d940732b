"""Classification metrics reported after training and bootstrapping: accuracy, macro-F1, confusion.

Computed here in NumPy (a dozen lines) rather than pulling scikit-learn into the dependencies.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True, slots=True)
class Report:
    labels: tuple[str, ...]
    """Label order of the confusion matrix rows (true) and columns (predicted)."""
    confusion: np.ndarray
    """int64 [n_labels, n_labels]; rows are true labels, columns predictions."""

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @property
    def accuracy(self) -> float:
        return float(np.trace(self.confusion) / max(self.n, 1))

    @property
    def macro_f1(self) -> float:
        """Mean F1 over the labels that occur in the truth or the predictions."""
        tp = np.diag(self.confusion).astype(float)
        support = self.confusion.sum(axis=1)
        predicted = self.confusion.sum(axis=0)
        present = (support + predicted) > 0
        denom = support + predicted
        f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
        return float(f1[present].mean()) if present.any() else 0.0

    def to_dict(self) -> dict:
        return {"n": self.n, "accuracy": self.accuracy, "macro_f1": self.macro_f1,
                "labels": list(self.labels), "confusion": self.confusion.tolist()}

    def format(self) -> str:
        """The confusion matrix as a text table, with accuracy and macro-F1 on top."""
        width = max(6, *(len(label) for label in self.labels))
        lines = [f"n={self.n} accuracy={self.accuracy:.3f} macro_f1={self.macro_f1:.3f}",
                 " " * width + " | " + " ".join(f"{label[:6]:>6}" for label in self.labels)]
        for label, row in zip(self.labels, self.confusion):
            lines.append(f"{label:>{width}} | " + " ".join(f"{v:>6d}" for v in row))
        return "\n".join(lines)


def evaluate(truth: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Report:
    """Confusion matrix of two label sequences over `labels`; an unknown label is an error."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} true labels but {len(predicted)} predictions")
    index = {label: i for i, label in enumerate(labels)}
    confusion = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(truth, predicted):
        for value in (t, p):
            if value not in index:
                raise ValueError(f"label {value!r} is not one of {list(labels)}")
        confusion[index[t], index[p]] += 1
    return Report(tuple(labels), confusion)
