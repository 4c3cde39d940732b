"""Checkpoint folders: written under a temporary name, committed by a marker, then made `latest`;
older ones deleted by a retention rule.

Layout under `<output_dir>/checkpoints/`:

    step_00000010/            a complete checkpoint (engine files + trainer_state.json + COMPLETE)
    step_00000020.partial/    a save in progress or one that died: never read, removed on next save
    step_00000005.deleting/   a checkpoint being deleted: never read, removed on next save
    latest                    text file naming the newest complete folder (replaced atomically; for
                              people and tools: resuming takes the highest complete step folder)

Only a folder named exactly `step_NNNNNNNN` holding `COMPLETE` is a checkpoint (torchtitan's rule),
so a run killed mid-save resumes from the previous checkpoint. The commit order is what makes that
hold after a crash of the machine too: the engine's files are fsynced, then `COMPLETE` is written
(through cpt.io: temp file, fsync, rename), the folder is renamed into place, `latest` replaced, and
each rename made durable by an fsync of its folder.

Retention (`keep_last`, `keep_every`) runs after each commit: it keeps the `keep_last` newest
complete checkpoints, those whose step is a multiple of `keep_every`, always the newest one, and
any checkpoint a reader holds (`reading()`: an export, another stage's `training.load`). A deletion
first renames the folder to `.deleting` (atomic: from then on it is not a checkpoint), then removes
it, so a kill during a deletion never leaves a half-deleted folder that looks complete.

An engine may write asynchronously: `begin()` gives the folder, the engine writes into it and calls
`commit()` on every rank once its files are written (`save()` does both for a synchronous writer).
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from cpt.io import fsync_dir, fsync_tree, publish_dir, remove_dir, write_text_atomic

COMPLETE = "COMPLETE"
LATEST = "latest"
READERS = ".readers"
STEP_DIR = re.compile(r"step_(\d{8})")
# a reader lease from another host counts as live for this long after its last touch
FOREIGN_LEASE_SECONDS = 24 * 3600


def step_dir_name(step: int) -> str:
    return f"step_{step:08d}"


class CheckpointManager:
    """Decides where checkpoints go, commits them, applies retention and says which one to resume
    from. File operations that must happen once are done by the writer (logging) rank; `barrier`
    keeps the ranks in step."""

    def __init__(self, root: str | Path, is_writer: bool, barrier: Callable[[], None],
                 keep_last: int = 0, keep_every: int = 0, log: Optional[Callable[[str], None]] = None) -> None:
        self.root = Path(root)
        self.is_writer = is_writer
        self.barrier = barrier
        self.keep_last = keep_last
        self.keep_every = keep_every
        self.log = log or (lambda message: None)

    def save(self, step: int, write: Callable[[Path], None]) -> Path:
        """Call `write(folder)` on every rank with a temporary folder, then commit it."""
        folder = self.begin(step)
        write(folder)
        return self.commit(step)

    def begin(self, step: int) -> Path:
        """Clear what dead saves and deletions left, and return the temporary folder of `step`'s
        checkpoint (on every rank)."""
        if self.is_writer:
            self.root.mkdir(parents=True, exist_ok=True)
            for leftover in [*self.root.glob("step_*.partial"), *self.root.glob("step_*.deleting")]:
                shutil.rmtree(leftover)
        self.barrier()
        return self.root / (step_dir_name(step) + ".partial")

    def commit(self, step: int) -> Path:
        """Make `step`'s written folder the newest complete checkpoint, then apply retention.
        Called on every rank once the engine's files are all written."""
        final = self.root / step_dir_name(step)
        partial = self.root / (step_dir_name(step) + ".partial")
        self.barrier()
        if self.is_writer:
            fsync_tree(partial)
            write_text_atomic(partial / COMPLETE, f"{step}\n")
            fsync_dir(partial)
            publish_dir(partial, final)  # the same step saved again (a rerun): the new one wins
            write_text_atomic(self.root / LATEST, final.name + "\n")
            fsync_dir(self.root)
            self.apply_retention()
        self.barrier()
        return final

    def apply_retention(self) -> list[Path]:
        """Delete the complete checkpoints the rule does not keep (writer rank); returns them."""
        if not self.keep_last:
            return []
        complete = complete_checkpoints(self.root)
        keep = set(complete[-self.keep_last:]) | set(complete[-1:])
        if self.keep_every:
            keep |= {p for p in complete if _step_of(p) % self.keep_every == 0}
        deleted = []
        for folder in complete:
            if folder in keep:
                continue
            if is_held(folder):
                self.log(f"retention: {folder.name} kept while a reader holds it")
                continue
            remove_dir(folder)
            deleted.append(folder)
        if deleted:
            fsync_dir(self.root)
            self.log(f"retention: deleted {', '.join(p.name for p in deleted)} "
                     f"(keep_last={self.keep_last}, keep_every={self.keep_every})")
        return deleted

    def latest(self) -> Optional[Path]:
        """The newest complete checkpoint folder, or None."""
        return find_latest(self.root)


def _step_of(folder: Path) -> int:
    return int(STEP_DIR.fullmatch(folder.name).group(1))


def is_complete(folder: Path) -> bool:
    return (folder / COMPLETE).is_file()


def complete_checkpoints(root: str | Path) -> list[Path]:
    """Complete checkpoint folders under `root`, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.fullmatch(p.name) and p.is_dir() and is_complete(p)]
    return sorted(found, key=_step_of)


def find_latest(root: str | Path) -> Optional[Path]:
    """The highest complete step folder. `latest` names it too once a commit has finished; a kill
    between the folder's rename and `latest`'s replacement leaves `latest` one behind, so the
    folders, not the pointer, decide (the pointer is for people and tools that read one file)."""
    candidates = complete_checkpoints(root)
    return candidates[-1] if candidates else None


# ------------------------------------------------------------------ readers


def _lease_alive(lease: Path) -> bool:
    try:
        host, pid = lease.name.rsplit("-", 1)
        age = time.time() - lease.stat().st_mtime
    except (ValueError, OSError):
        return False
    if host != socket.gethostname():
        return age < FOREIGN_LEASE_SECONDS
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True


def is_held(folder: Path) -> bool:
    """True while a live process reads this checkpoint (see `reading`)."""
    readers = folder / READERS
    return readers.is_dir() and any(_lease_alive(p) for p in readers.iterdir())


@contextlib.contextmanager
def reading(folder: str | Path) -> Iterator[Path]:
    """Hold a checkpoint while reading it: a training run's retention does not delete it meanwhile.
    The lease is a file named after this host and process; a dead process's lease is ignored.
    Where the folder is not writable, reading goes on without a lease."""
    folder = Path(folder)
    lease = folder / READERS / f"{socket.gethostname()}-{os.getpid()}"
    try:
        lease.parent.mkdir(exist_ok=True)
        lease.touch()
    except OSError:
        lease = None
    try:
        yield folder
    finally:
        if lease is not None:
            with contextlib.suppress(OSError):
                lease.unlink()


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
