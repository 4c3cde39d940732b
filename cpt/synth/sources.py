"""Where science snippets come from: raw jsonl documents, or shards made by `cpt preprocess`.

Shards keep token ids, not text; `cpt.shards.document_text` re-reads each document from the input
the shard was made from (the manifest records where), and the metadata gives its `doc_id` and, once
`cpt tag` has run, its `topic`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from cpt.synth.snippets import Document, read_jsonl


def documents_from_jsonl(paths: Iterable[Path], text_key: str = "text") -> Iterator[Document]:
    for path in paths:
        yield from read_jsonl(Path(path), text_key=text_key)


def documents_from_shards(prefixes: Iterable[str]) -> Iterator[Document]:
    """Documents of each shard in order, with `doc_id` and `topic` from its metadata."""
    from cpt import shards

    for prefix in prefixes:
        shard = shards.open(prefix)
        table = shard.metadata()
        ids = table.column("doc_id").to_pylist()
        topics = table.column("topic").to_pylist() if "topic" in table.column_names else [None] * len(ids)
        for i, (doc_id, topic) in enumerate(zip(ids, topics)):
            yield Document(str(doc_id), shards.document_text(shard, i), str(prefix), topic)
