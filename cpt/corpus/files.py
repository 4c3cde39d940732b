"""Finding the input files: single files, globs and folders (recursively, in sorted order).

Each file gets a format from its name (jsonl, jsonl.gz, jsonl.zst, parquet, txt; `.json` files are
read as JSON lines, as Megatron does) or `unsupported`, which the reader reports as a bad-input
case. Hidden files and folders (a leading dot) are not read; the summary lists them
(`ignored_files`), as it does the run's own outputs when they lie inside an input folder.
`source` is the path relative to the declared corpus root (`root`), or by default to each input
argument's parent folder, so it stays the same when the corpus moves; it is what `doc_id` hashes
(`cpt.corpus.identity`).
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from cpt.corpus.identity import source_of

FORMATS = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".jsonl.gz": "jsonl.gz", ".json.gz": "jsonl.gz",
    ".jsonl.zst": "jsonl.zst", ".json.zst": "jsonl.zst",
    ".parquet": "parquet",
    ".txt": "txt",
}


@dataclass(frozen=True)
class InputFile:
    path: str
    """Absolute path."""
    source: str
    """Path relative to the input argument's parent folder (what metadata records)."""
    format: str
    """jsonl, jsonl.gz, jsonl.zst, parquet, txt or unsupported."""
    size: int
    """Bytes on disk (-1 when the file cannot be stat'ed: the reader reports it)."""
    mtime_ns: int


def format_of(name: str) -> str:
    lower = name.lower()
    for suffix in sorted(FORMATS, key=len, reverse=True):
        if lower.endswith(suffix):
            return FORMATS[suffix]
    return "unsupported"


def _entry(path: Path, root_parent: Path) -> InputFile:
    try:
        st = path.stat()
        size, mtime = st.st_size, st.st_mtime_ns
    except OSError:
        size, mtime = -1, 0
    return InputFile(str(path), source_of(path, root_parent), format_of(path.name), size, mtime)


def list_inputs(inputs: Sequence[str | Path], root: str | Path | None = None) -> tuple[list[InputFile], list[str]]:
    """Files to read, in a deterministic order, and the hidden paths that were left out.

    `root`: the corpus root sources are relative to (every input must lie inside it); None: each
    input argument's parent folder.
    """
    files: list[InputFile] = []
    hidden: list[str] = []
    seen: set[str] = set()
    for arg in inputs:
        matches = sorted(glob.glob(str(arg))) if glob.has_magic(str(arg)) else [str(arg)]
        if not matches:
            raise FileNotFoundError(f"input {arg}: no such file or folder")
        for m in matches:
            top = Path(m).absolute()
            if not top.exists() and not top.is_symlink():
                raise FileNotFoundError(f"input {m}: no such file or folder")
            for f in _walk(top, hidden, Path(root).absolute() if root is not None else top.parent):
                if f.path not in seen:
                    seen.add(f.path)
                    files.append(f)
    return files, hidden


def _walk(root: Path, hidden: list[str], parent: Path) -> list[InputFile]:
    if not root.is_dir():
        return [_entry(root, parent)]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        for d in [d for d in dirnames if d.startswith(".")]:
            hidden.append(os.path.join(dirpath, d))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                hidden.append(os.path.join(dirpath, name))
                continue
            out.append(_entry(Path(dirpath) / name, parent))
    return out
