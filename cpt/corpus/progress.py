"""A small progress line for long steps: bytes done of total, docs/s, tokens/s and ETA.

On a terminal it redraws one line (at most 4 times a second); otherwise (logs, CI) it prints a line
every 10 seconds, so logs stay short.
"""
from __future__ import annotations

import sys
import time


def _si(x: float) -> str:
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= div:
            return f"{x / div:.1f}{unit}"
    return f"{x:.0f}"


def _hms(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    def __init__(self, label: str, total_bytes: int, enabled: bool = True, stream=None):
        self.label = label
        self.total = max(int(total_bytes), 1)
        self.stream = stream or sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.start = time.perf_counter()
        self.bytes = self.docs = self.tokens = 0
        self._last = 0.0

    def update(self, nbytes: int = 0, docs: int = 0, tokens: int = 0) -> None:
        self.bytes += nbytes
        self.docs += docs
        self.tokens += tokens
        now = time.perf_counter()
        if self.enabled and now - self._last >= (0.25 if self.tty else 10.0):
            self._last = now
            self._draw(now, end="\r" if self.tty else "\n")

    def _draw(self, now: float, end: str) -> None:
        elapsed = max(now - self.start, 1e-9)
        done = min(self.bytes / self.total, 1.0)
        eta = elapsed * (1 - done) / done if done > 0 else float("nan")
        line = (
            f"[{self.label}] {done * 100:5.1f}% {_si(self.bytes)}B/{_si(self.total)}B  "
            f"{_si(self.docs)} docs {_si(self.docs / elapsed)}/s  {_si(self.tokens / elapsed)} tok/s  "
            f"elapsed {_hms(elapsed)} ETA {_hms(eta) if eta == eta else '?'}"
        )
        print(line, end=end, file=self.stream, flush=True)

    def close(self) -> None:
        if self.enabled:
            self._draw(time.perf_counter(), end="\n")
