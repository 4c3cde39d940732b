"""`PREFIX.manifest.json`: the commit marker of a shard, written last.

It records what a reader must check before trusting the `.bin/.idx/.meta.parquet` beside it: the
dtype, document/sequence/token counts, each file's size and sha256, the tokenizer identity, the
options that produced the shard, and the tool version. Nothing time-dependent goes in it, so the
same input and flags give the same manifest bytes.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

FORMAT = "cpt-shard"
FORMAT_VERSION = 1


def manifest_path(prefix: str | Path) -> Path:
    return Path(f"{prefix}.manifest.json")


def tool_version() -> str:
    try:
        from importlib.metadata import version

        return f"cpt {version('cpt')}"
    except Exception:  # noqa: BLE001 - running from a source tree without metadata
        return "cpt (source)"


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def file_entry(path: str | Path, sha256: str | None = None) -> dict[str, Any]:
    return {"size": os.path.getsize(path), "sha256": sha256 or sha256_file(path)}


def read_manifest(prefix: str | Path) -> dict[str, Any]:
    path = manifest_path(prefix)
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """Write JSON under a temporary name in the same folder, fsync, then rename into place."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.write("\n")
            f.flush()
            if durable:
                os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_manifest(prefix: str | Path, manifest: dict[str, Any], durable: bool = True) -> None:
    write_json_atomic(manifest_path(prefix), manifest, durable)
