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
