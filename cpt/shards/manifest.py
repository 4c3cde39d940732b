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
from pathlib import Path
from typing import Any

import cpt.io

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


def write_json_atomic(path: Path, data: Any, durable: bool = True) -> None:
    """Manifests and run summaries: sorted keys, indent 1, ASCII (see `cpt.io` for the atomic write)."""
    cpt.io.write_json_atomic(path, data, indent=1, sort_keys=True, durable=durable, ensure_ascii=True)


def write_manifest(prefix: str | Path, manifest: dict[str, Any], durable: bool = True) -> None:
    write_json_atomic(manifest_path(prefix), manifest, durable)
