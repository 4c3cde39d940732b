"""Atomic file writes: a reader sees the old file or the complete new one, never a torn one.

Every write goes to a temporary file in the destination's folder (same file system, so the rename
is atomic), is flushed and fsynced, gets the permissions an ordinary `open(path, "w")` would give
(mkstemp's are 0600), and is renamed over the destination. On any error the temporary file is
removed and the destination is untouched. This is the commit step of every output that marks
completion (summaries, manifests, annotation tables): written last, it is trusted only when whole.

`atomic_path` is for writers that want a file name rather than a file object (pyarrow's
`write_table`, numpy's `save`); the others cover bytes, text, JSON and JSON lines.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Literal


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_behind(f: IO[bytes]) -> None:
    """Write what was written to the open file `f` so far through to disk now (fdatasync): for a
    file streamed over a long time whose commit (fsync, rename) must be quick when it comes; the
    commit then flushes only what came after."""
    f.flush()
    getattr(os, "fdatasync", os.fsync)(f.fileno())  # macOS has fsync only


def fsync_dir(path: str | Path) -> None:
    """Make a folder's entries (files created, renamed or removed in it) durable: after a rename
    that commits something, the rename itself survives a crash only once its folder is fsynced."""
    fd = os.open(str(path), os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def publish_dir(src: str | Path, final: str | Path) -> None:
    """Rename a fully written (and fsynced) folder `src` to `final` and make the rename durable; an
    existing `final` is removed first through `remove_dir` (a rerun of the same output wins)."""
    src, final = Path(src), Path(final)
    if final.exists():
        remove_dir(final)
    os.replace(src, final)
    fsync_dir(final.parent)


def remove_dir(path: str | Path) -> None:
    """Remove a committed folder so that no reader ever sees it half-deleted: rename it out of its
    namespace (`NAME.deleting`, atomic), then delete. A `.deleting` left by a kill is removed first."""
    path = Path(path)
    doomed = path.with_name(path.name + ".deleting")
    if doomed.exists():
        shutil.rmtree(doomed)
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def fsync_tree(path: str | Path) -> int:
    """fsync every file and folder under `path` (files written by other code, e.g. a checkpoint's
    shards, before a marker declares them complete). Returns the number of files."""
    n = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            _fsync(os.path.join(folder, name))
            n += 1
        fsync_dir(folder)
    return n


@contextlib.contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error, fsync it
    (`durable`) and rename it over `path`. The caller writes and closes the file itself."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        if durable:
            _fsync(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


DirExists = Literal["replace", "error", "keep"]


@contextlib.contextmanager
def atomic_dir(path: str | Path, exist: DirExists = "replace") -> Iterator[Path]:
    """Yield a temporary folder beside `path`; when the block ends without error, it becomes `path`,
    so a reader never sees a half-written folder.

    `exist` says what happens when `path` is there at commit time: "replace" removes it first,
    "error" raises FileExistsError (checked before the block too, so no work is wasted), "keep"
    keeps it and drops the new folder (another builder of the same content committed first).
    """
    import shutil

    if exist not in ("replace", "error", "keep"):
        raise ValueError(f"atomic_dir: exist must be 'replace', 'error' or 'keep', got {exist!r}")
    path = Path(path)
    if exist == "error" and path.exists():
        raise FileExistsError(f"{path}: already exists")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        yield tmp
        commit_dir(tmp, path, exist)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def commit_dir(tmp: str | Path, path: str | Path, exist: DirExists = "replace") -> bool:
    """Make the finished folder `tmp` become `path` by one rename (a reader sees all of it or none);
    `exist` as in `atomic_dir`. False where `exist="keep"` found a folder committed there first
    (before or during the rename: `tmp` is then removed); True where `tmp` became `path`. A file
    at `path` is never taken for a committed folder: the rename fails with its error."""
    import shutil

    tmp, path = Path(tmp), Path(path)
    if path.exists():
        if exist == "error":
            raise FileExistsError(f"{path}: already exists")
        if exist == "keep" and path.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        if exist == "replace":
            shutil.rmtree(path)
        # "keep" over a file: the rename below fails and says so (nothing was committed there)
    try:
        os.replace(tmp, path)
        return True
    except OSError:
        if exist != "keep" or not path.is_dir():  # not a concurrent builder that committed first
            raise
    shutil.rmtree(tmp, ignore_errors=True)
    return False


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", durable: bool = True,
                encoding: str | None = "utf-8") -> Iterator[IO]:
    """`open()` for writing (`w` text or `wb` binary) whose result appears at `path` only when
    the block ends without error."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode must be 'w' or 'wb', got {mode!r}")
    with atomic_path(path, durable) as tmp:
        with open(tmp, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()


class PendingFiles:
    """Several files written under temporary names beside their destinations - by writers that
    stream into them over many calls - and renamed into place together by `commit`, in the order
    given (put the file readers open first last). `abort` deletes them; destinations are untouched
    until `commit`. The caller writes its commit marker (a manifest) after `commit`."""

    def __init__(self, finals: dict[str, str | Path]) -> None:
        self.finals = {key: Path(path) for key, path in finals.items()}
        self.tmp: dict[str, Path] = {}
        try:
            for key, final in self.finals.items():
                final.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
                os.close(fd)
                self.tmp[key] = Path(tmp)
        except BaseException:
            self.abort()
            raise

    def commit(self, durable: bool = True) -> None:
        """fsync each file (`durable`), give it ordinary permissions and rename it into place."""
        mode = 0o666 & ~_umask()
        for key, tmp in self.tmp.items():
            if durable:
                _fsync(str(tmp))
            os.chmod(tmp, mode)
        for key, tmp in self.tmp.items():
            os.replace(tmp, self.finals[key])
        self.tmp = {}

    def abort(self) -> None:
        for tmp in self.tmp.values():
            tmp.unlink(missing_ok=True)
        self.tmp = {}


def write_bytes_atomic(path: str | Path, data: bytes, durable: bool = True) -> None:
    with atomic_open(path, "wb", durable) as f:
        f.write(data)


def write_text_atomic(path: str | Path, text: str, durable: bool = True) -> None:
    with atomic_open(path, "w", durable) as f:
        f.write(text)


def write_json_atomic(path: str | Path, obj: Any, indent: int | None = 2, sort_keys: bool = False,
                      durable: bool = True, ensure_ascii: bool = False) -> None:
    """One JSON document and a final newline (UTF-8, not ASCII-escaped unless `ensure_ascii`)."""
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, ensure_ascii=ensure_ascii)
    write_text_atomic(path, text + "\n", durable)


def write_jsonl_atomic(path: str | Path, records: Iterable[Any], durable: bool = True) -> int:
    """One JSON value per line (UTF-8, not ASCII-escaped), streamed; returns the number of lines."""
    n = 0
    with atomic_open(path, "w", durable) as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


__all__ = ["PendingFiles", "atomic_dir", "commit_dir", "atomic_open", "atomic_path", "write_bytes_atomic", "write_json_atomic", "write_jsonl_atomic",
           "write_text_atomic", "write_behind"]
