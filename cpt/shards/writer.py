"""Streaming writer of one shard: `.bin` appended as documents arrive, `.idx`/metadata at the end.

Everything is written under temporary names; `finish` removes any old manifest, renames the data
files into place, and writes the new manifest last, so a reader sees either a complete shard or
none (the manifest is the commit marker). Memory held: 4 bytes per document for the lengths plus at
most one metadata row group.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa

from cpt.io import PendingFiles, write_behind
from cpt.shards.format import bin_path, idx_path, write_idx
from cpt.shards.manifest import FORMAT, FORMAT_VERSION, file_entry, manifest_path, tool_version, write_manifest
from cpt.shards.metadata import MetaWriter, meta_path


class ShardWriter:
    def __init__(self, prefix: str | Path, dtype: np.dtype, schema: pa.Schema):
        self.prefix = Path(prefix)
        self.prefix.parent.mkdir(parents=True, exist_ok=True)
        self.dtype = np.dtype(dtype)
        # .idx renamed last: it is what a reader opens first
        self._files = PendingFiles({"bin": bin_path(prefix), "meta": meta_path(prefix), "idx": idx_path(prefix)})
        self._tmp = self._files.tmp
        self._bin: BinaryIO = open(self._tmp["bin"], "wb")
        self._bin_hash = hashlib.sha256()
        self._lengths: list[np.ndarray] = []
        self._meta = MetaWriter(self._tmp["meta"], schema)
        self.n_documents = 0
        self.n_tokens = 0

    def add(self, tokens: np.ndarray, lengths: np.ndarray, meta: pa.Table) -> None:
        """Append documents: their tokens back to back, one length per document, one metadata row each."""
        lengths = np.asarray(lengths, dtype=np.int64)
        if meta.num_rows != len(lengths) or int(lengths.sum()) != len(tokens):
            raise ValueError("ShardWriter.add: tokens, lengths and metadata rows disagree")
        data = np.ascontiguousarray(tokens, dtype=self.dtype)
        self._write_bin(memoryview(data).cast("B"))
        self._lengths.append(lengths.astype(np.int32))
        self._meta.write(meta)
        self.n_documents += len(lengths)
        self.n_tokens += len(tokens)

    def add_bin_file(self, path: Path, lengths: np.ndarray, meta_batches) -> None:
        """Append another shard's `.bin` bytes as they are (the merge path: no decode, no re-encode)."""
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):
                self._write_bin(block)
        lengths = np.asarray(lengths, dtype=np.int32)
        self._lengths.append(np.array(lengths))
        for batch in meta_batches:
            self._meta.write(pa.Table.from_batches([batch]))
        self.n_documents += len(lengths)
        self.n_tokens += int(lengths.sum(dtype=np.int64))

    def write_behind(self) -> None:
        """Write the `.bin` bytes appended so far through to disk now, so that `finish` flushes only
        the rest: a merge that streams while other work runs calls it between parts."""
        write_behind(self._bin)

    def _write_bin(self, data) -> None:
        self._bin.write(data)
        self._bin_hash.update(data)

    def finish(self, extra: dict[str, Any], durable: bool = True) -> dict[str, Any]:
        """Write the index, rename everything into place, write the manifest last; return it.

        durable=False skips the fsyncs: for intermediate parts, which a SIGKILL cannot tear (the page
        cache survives the process) and which the final merge re-validates.
        """
        self._bin.close()
        self._meta.close()
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, np.int32)
        with open(self._tmp["idx"], "wb") as f:
            write_idx(f, self.dtype, lengths)
        manifest_path(self.prefix).unlink(missing_ok=True)
        self._files.commit(durable)
        files = {key: file_entry(path, self._bin_hash.hexdigest() if key == "bin" else None)
                 for key, path in sorted(self._files.finals.items())}
        manifest = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "tool": tool_version(),
            "complete": True,
            "dtype": self.dtype.name,
            "n_documents": self.n_documents,
            "n_sequences": self.n_documents,
            "n_tokens": self.n_tokens,
            "meta_columns": self._meta.schema.names,
            "files": files,
            **extra,
        }
        write_manifest(self.prefix, manifest, durable=durable)
        return manifest

    def abort(self) -> None:
        """Close and delete the temporary files (the old shard, if any, is untouched)."""
        for closer in (self._bin.close, self._meta.close):
            try:
                closer()
            except Exception:  # noqa: BLE001 - best effort on the error path
                pass
        self._files.abort()
