"""Document identity: the one `doc_id` every tool gives a document.

A document is named by where it sits: its `source` (the file's path relative to the corpus root,
POSIX separators) and its `line` (the 1-based line of a jsonl file, the row of a parquet file, 1
for a txt file). `doc_id` is the blake2b-64 hash of the two, an unsigned 64-bit integer: the
shards' metadata stores it as `uint64`, and its text form (what annotation tables, synthetic
records and `cpt trace` print) is that integer in decimal. Hashing the path relative to a root,
not the file name, keeps `a/web.jsonl` and `b/web.jsonl` apart, and keeps ids stable when the
corpus moves.

The corpus root is declared (`--corpus-root`) or, by default, the parent folder of each input
argument, the rule `cpt preprocess` has always used - so shards written before this module existed
carry the same ids, and readers take a shard's stored ids as they are.

Synthetic documents (QA pairs from `cpt synth`) have their own identity as records of the synth
output file; their provenance - the `source_doc_id` of the document their snippet came from, the
generator, the prompt version and the sample index - travels as the fields `PROVENANCE_FIELDS`,
kept in the shard metadata by `cpt preprocess --keep-fields`.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

PROVENANCE_FIELDS = ("source_doc_id", "generator", "prompt_version", "sample_index")
"""Fields of a synthetic record that name where it came from (kept as shard metadata columns)."""


def doc_id(source: str, line: int) -> int:
    """The id of the document at `line` of `source` (a path relative to the corpus root)."""
    return int.from_bytes(hashlib.blake2b(f"{source}\0{line}".encode(), digest_size=8).digest(), "little")


def doc_id_text(source: str, line: int) -> str:
    """`doc_id` in its text form (decimal), for string-keyed tables and records."""
    return str(doc_id(source, line))


def parse_doc_id(text: str | int) -> int:
    """A doc id given as text (decimal, or 0x-prefixed hex) or int; ValueError names the value."""
    if isinstance(text, int):
        value = text
    else:
        s = str(text).strip()
        try:
            value = int(s, 16) if s.lower().startswith("0x") else int(s)
        except ValueError:
            raise ValueError(f"doc id {text!r}: expected an unsigned 64-bit integer (decimal or 0x hex)") from None
    if not 0 <= value < 1 << 64:
        raise ValueError(f"doc id {text!r}: out of the unsigned 64-bit range")
    return value


def source_of(path: str | Path, root: str | Path) -> str:
    """`path` relative to the corpus `root`, with POSIX separators; a path outside the root is refused."""
    rel = os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        raise ValueError(f"{path}: not inside the corpus root {root} (--corpus-root)")
    return Path(rel).as_posix()


__all__ = ["PROVENANCE_FIELDS", "doc_id", "doc_id_text", "parse_doc_id", "source_of"]
