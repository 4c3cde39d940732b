"""Where science snippets come from: raw jsonl documents, or shards made by `cpt preprocess`.

Shards keep token ids, not text; `cpt.shards.document_text` re-reads each document from the input
the shard was made from (the manifest records where), and the metadata gives its `doc_id` and, once
`cpt tag` has run, its `topic`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from cpt.synth.snippets import Document, read_jsonl


def documents_from_jsonl(paths: Iterable[Path], text_key: str = "text",
                         root: str | Path | None = None) -> Iterator[Document]:
    """Documents of jsonl files found as `cpt preprocess` finds them (`cpt.corpus.list_inputs`,
    sources relative to `root` or each input's parent), so both give a document the same doc_id."""
    from cpt.corpus.files import list_inputs

    for arg in paths:
        files, _ = list_inputs([arg], root)
        for f in files:
            if f.format == "jsonl" or not Path(arg).is_dir():  # a folder's other files are not documents
                yield from read_jsonl(Path(f.path), text_key=text_key, source=f.source)


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
