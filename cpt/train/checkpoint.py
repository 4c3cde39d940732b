"""Checkpoint folders: written under a temporary name, committed by a marker, then made `latest`.

Layout under `<output_dir>/checkpoints/`:

    step_00000010/          a complete checkpoint (engine files + trainer_state.json + COMPLETE)
    step_00000020.partial/  a save in progress or one that died: never read, removed on next save
    latest                  text file naming the newest complete folder (replaced atomically)

A folder without `COMPLETE` is ignored, whatever else it holds (torchtitan's rule), so a run killed
mid-save resumes from the previous checkpoint.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any, Callable, Optional

COMPLETE = "COMPLETE"
LATEST = "latest"


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


class CheckpointManager:
    """Decides where checkpoints go and which one to resume from. File operations that must happen
    once are done by the logging rank; `barrier` keeps the ranks in step."""

    def __init__(self, root: str | Path, is_writer: bool, barrier: Callable[[], None]) -> None:
        self.root = Path(root)
        self.is_writer = is_writer
        self.barrier = barrier

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Call `write(folder)` on every rank with a temporary folder, then commit it."""
        final = self.root / step_dir_name(step)
        partial = self.root / (step_dir_name(step) + ".partial")
        if self.is_writer:
            self.root.mkdir(parents=True, exist_ok=True)
            if partial.exists():
                shutil.rmtree(partial)
        self.barrier()
        write(partial)
        self.barrier()
        if self.is_writer:
            (partial / COMPLETE).write_text(f"{step}\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(partial, final)
            tmp = self.root / (LATEST + ".tmp")
            tmp.write_text(final.name + "\n")
            os.replace(tmp, self.root / LATEST)
        self.barrier()
        return final

    def latest(self) -> Optional[Path]:
        """The newest complete checkpoint folder, or None."""
        return find_latest(self.root)


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


def find_latest(root: str | Path) -> Optional[Path]:
    """`latest` if it names a complete folder, else the highest complete step folder."""
    root = Path(root)
    pointer = root / LATEST
    if pointer.is_file():
        named = root / pointer.read_text().strip()
        if is_complete(named):
            return named
    candidates = sorted(p for p in root.glob("step_*") if p.is_dir() and is_complete(p))
    return candidates[-1] if candidates else None


def resolve_load_path(path: str | Path) -> Path:
    """A checkpoint folder, or a run/checkpoints folder whose latest complete checkpoint is meant.

    Raises FileNotFoundError naming the path when nothing complete is there."""
    path = Path(path)
    if is_complete(path):
        return path
    for root in (path, path / "checkpoints"):
        found = find_latest(root)
        if found is not None:
            return found
    if path.exists() and not is_complete(path) and (path / "trainer_state.json").exists():
        raise FileNotFoundError(f"{path}: checkpoint is incomplete (no {COMPLETE} marker)")
    raise FileNotFoundError(f"{path}: no complete checkpoint found")


def trainer_state_summary(state: dict[str, Any]) -> str:
    return f"step {state.get('step')} ({state.get('consumed_tokens')} tokens)"
