"""Numbers a person reads at a glance: token counts as 1.2M, shared by the plots and summary.md."""
from __future__ import annotations


def human(value: float, _pos: object = None) -> str:
    """1234567 -> '1.2M': token counts a person reads at a glance."""
    for factor, suffix in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(round(value / factor, 1)) >= 1:  # 999,950 reads '1M', not '1000k'
            text = f"{value / factor:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{value:.3g}"
