"""Re-read a document's text from the input it came from (for annotators: tagger, scorer).

The metadata keeps each document's `source` (relative to one of the manifest's `inputs` folders),
`line` and, for uncompressed jsonl, the byte `offset`; so the text is found with one seek (jsonl),
one row-group read (parquet), a file read (txt) or a scan of the lines (compressed jsonl). Decoding
the tokens gives the same text for lossless tokenizers, but this path needs no tokenizer at all.
"""
from __future__ import annotations

import json
from pathlib import Path

from cpt.corpus.files import format_of
from cpt.corpus.plan import Segment
from cpt.corpus.records import _open_lines
from cpt.shards.format import ShardError


def _locate(shard, source: str) -> Path:
    for base in (shard.manifest or {}).get("inputs", []):
        path = Path(base) / source
        if path.exists():
            return path
    raise ShardError(f"{shard.prefix}: source {source!r} is not found under the manifest's inputs (moved?)")


def document_text(shard, i: int) -> str:
    """The raw text of document `i` of `shard` (the field the shard was made from)."""
    row = shard.metadata(["source", "line", "offset"]).slice(i, 1).to_pylist()[0]
    key = shard.manifest["options"]["json_key"]
    path = _locate(shard, row["source"])
    fmt = format_of(path.name)
    if fmt == "txt":
        return path.read_bytes().decode("utf-8")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        start = 0
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            if row["line"] < start + n:
                return pf.read_row_group(g, columns=[key])[key][row["line"] - start].as_py()
            start += n
        raise ShardError(f"{path}: row {row['line']} is past the end of the file")
    if row["offset"] >= 0:
        with open(path, "rb") as f:
            f.seek(row["offset"])
            return json.loads(f.readline())[key]
    from cpt.corpus.files import InputFile

    with _open_lines(Segment(InputFile(str(path), row["source"], fmt, -1, 0))) as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == row["line"]:
                return json.loads(raw)[key]
    raise ShardError(f"{path}: line {row['line']} is past the end of the file")


class _Cursor:
    """An open source file read forward in shard order (documents of one file are in file order)."""

    def __init__(self, path: Path, source: str):
        from cpt.corpus.files import InputFile

        self.path, self.fmt = path, format_of(path.name)
        self.handle = None
        self.line = 0
        self.parquet = None
        self.group: tuple[int, int, list] | None = None  # (first row, row count, values)
        if self.fmt in ("jsonl", "jsonl.gz", "jsonl.zst"):
            self.handle = _open_lines(Segment(InputFile(str(path), source, self.fmt, -1, 0)))

    def text(self, row: dict, key: str) -> str:
        if self.fmt == "txt":
            return self.path.read_bytes().decode("utf-8")
        if self.fmt == "parquet":
            return self._parquet_row(row["line"], key)
        if self.fmt == "jsonl" and row["offset"] >= 0:
            self.handle.seek(row["offset"])
            return json.loads(self.handle.readline())[key]
        while self.line < row["line"]:
            raw = self.handle.readline()
            if not raw:
                raise ShardError(f"{self.path}: line {row['line']} is past the end of the file")
            self.line += 1
        return json.loads(raw)[key]

    def _parquet_row(self, index: int, key: str) -> str:
        import pyarrow.parquet as pq

        if self.parquet is None:
            self.parquet = pq.ParquetFile(self.path)
        if self.group is None or not self.group[0] <= index < self.group[0] + self.group[1]:
            start = 0
            for g in range(self.parquet.num_row_groups):
                n = self.parquet.metadata.row_group(g).num_rows
                if index < start + n:
                    values = self.parquet.read_row_group(g, columns=[key])[key].to_pylist()
                    self.group = (start, n, values)
                    break
                start += n
            else:
                raise ShardError(f"{self.path}: row {index} is past the end of the file")
        return self.group[2][index - self.group[0]]

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()


def document_texts(shard, start: int = 0, stop: int | None = None):
    """Yield the raw texts of documents start..stop-1 in shard order, each source opened once.

    For annotating a whole shard: compressed jsonl is read forward once instead of re-scanned per
    document as `document_text` must.
    """
    table = shard.metadata(["source", "line", "offset"])
    stop = table.num_rows if stop is None else min(stop, table.num_rows)
    key = shard.manifest["options"]["json_key"]
    cursor: _Cursor | None = None
    try:
        for row in table.slice(start, max(stop - start, 0)).to_pylist():
            if cursor is None or cursor.source != row["source"] or (cursor.fmt != "jsonl" and cursor.line > row["line"]):
                if cursor is not None:
                    cursor.close()
                cursor = _Cursor(_locate(shard, row["source"]), row["source"])
                cursor.source = row["source"]
            yield cursor.text(row, key)
    finally:
        if cursor is not None:
            cursor.close()
