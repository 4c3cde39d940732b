"""Where training figures go: a stdout line, `metrics.jsonl`, and TensorBoard (logging rank only).

Every record is one JSON object per line with `kind` ("train" | "eval" | "data" | "mixture" |
"event"), `step`, `time`, the trainer's context (`stage`, `consumed_tokens`) and the figures, so
reports and tests read the run without parsing logs. Nested figures ({stream: value}) go to
TensorBoard as `kind/key/stream`.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Optional

from cpt.io import write_text_atomic


class MetricsLogger:
    def __init__(self, output_dir: str | Path, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.context: dict[str, Any] = {}  # fields every record carries (set by the trainer)
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        out = self._dir = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        path = out / "metrics.jsonl"
        if path.exists():
            _drop_torn_tail(path)
        self._jsonl = open(path, "a", buffering=1)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(out / "tensorboard"))

    def log(self, kind: str, step: int, figures: dict[str, Any], line: Optional[str] = None) -> None:
        if not self.enabled:
            return
        record = {"kind": kind, "step": step, "time": round(time.time(), 3), **self.context, **figures}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in _scalars(figures, kind):
                self._tb.add_scalar(key, value, step)
        if line:
            print(line, file=sys.stdout, flush=True)

    def write_file(self, name: str, text: str) -> None:
        """Write a file into the run folder atomically (logging rank only)."""
        if not self.enabled:
            return
        write_text_atomic(self._dir / name, text)

    def event(self, step: int, message: str, **figures: Any) -> None:
        self.log("event", step, {"message": message, **figures}, line=f"[cpt] {message}")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _scalars(figures: dict[str, Any], prefix: str):
    """(tag, number) pairs of the numeric figures, nested dicts flattened with '/'."""
    for key, value in figures.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}/{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            yield f"{prefix}/{key}", value


def _drop_torn_tail(path: Path) -> None:
    """A process killed mid-write leaves a cut-off last record: cut it off before appending, so a
    resumed run's records never merge with it and the file stays one JSON object per line."""
    with open(path, "rb+") as f:
        size = f.seek(0, 2)
        if size == 0:
            return
        f.seek(max(size - (1 << 20), 0))
        tail = f.read()
        if tail.endswith(b"\n"):
            return
        cut = tail.rfind(b"\n")
        f.truncate(size - len(tail) + cut + 1 if cut >= 0 else (0 if size <= (1 << 20) else size))
