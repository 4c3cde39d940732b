"""Documents in, passages ("snippets") of a configurable length out.

A snippet is what one prompt is grounded in: whole paragraphs packed up to `max_chars`, a paragraph
longer than that cut at sentence ends. Its id `doc_id#index` is stable for a given document text and
length settings, so a resumed run rebuilds exactly the same work list and keys.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from cpt.corpus.identity import doc_id_text


@dataclass(frozen=True, slots=True)
class Document:
    """A source document as synthesis sees it."""

    doc_id: str
    text: str
    source: str
    """File (or shard prefix) it came from."""
    topic: str | None = None
    """The topic tagger's label, when the document carries one."""


@dataclass(frozen=True, slots=True)
class Snippet:
    """A passage of one document, the unit a prompt is built from."""

    snippet_id: str
    doc_id: str
    text: str
    topic: str | None = None


class InputError(ValueError):
    """A bad input record; the message names file, line and field."""


def iter_json_objects(path: Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line of a jsonl file.

    A line that is not a JSON object raises `InputError` naming file and line: silently dropping
    input would make counts lie.
    """
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_jsonl(path: Path, text_key: str = "text", id_key: str | None = None,
               source: str | None = None) -> Iterator[Document]:
    """Documents of a jsonl file, `topic` used when present. Their id is the corpus doc_id of
    `source` (the path relative to the corpus root; default: the file name) and line, the one
    `cpt preprocess` gives the same document; `id_key` names an input field to use instead."""
    source = source if source is not None else Path(path).name
    for lineno, row in iter_json_objects(path):
        text = row.get(text_key)
        if not isinstance(text, str):
            raise InputError(f"{path}:{lineno}: field {text_key!r} is missing or not a string")
        if id_key and row.get(id_key) is None:
            raise InputError(f"{path}:{lineno}: field {id_key!r} (the document id) is missing")
        doc_id = str(row[id_key]) if id_key else doc_id_text(source, lineno)
        topic = row.get("topic")
        yield Document(doc_id, text, str(path), topic if isinstance(topic, str) else None)


_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+")


def _pieces(paragraph: str, max_chars: int) -> Iterator[str]:
    """A paragraph as pieces no longer than `max_chars`, cut at sentence ends (hard cut if needed)."""
    if len(paragraph) <= max_chars:
        yield paragraph
        return
    buf = ""
    for sentence in _SENTENCE_END.split(paragraph):
        while len(sentence) > max_chars:
            if buf:
                yield buf
                buf = ""
            yield sentence[:max_chars]
            sentence = sentence[max_chars:]
        if buf and len(buf) + 1 + len(sentence) > max_chars:
            yield buf
            buf = sentence
        else:
            buf = f"{buf} {sentence}" if buf else sentence
    if buf:
        yield buf


def split_document(doc: Document, max_chars: int = 1500, min_chars: int = 200,
                   max_snippets: int | None = None) -> list[Snippet]:
    """Pack a document's paragraphs into snippets of `min_chars`..`max_chars` characters."""
    if not 0 < min_chars <= max_chars:
        raise ValueError(f"need 0 < min_chars ({min_chars}) <= max_chars ({max_chars})")
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", doc.text)]
    out: list[str] = []
    buf = ""
    for para in filter(None, paragraphs):
        for piece in _pieces(para, max_chars):
            if buf and len(buf) + 2 + len(piece) > max_chars:
                out.append(buf)
                buf = piece
            else:
                buf = f"{buf}\n\n{piece}" if buf else piece
    if buf:
        out.append(buf)
    kept = [t for t in out if len(t) >= min_chars]
    if max_snippets is not None:
        kept = kept[:max_snippets]
    return [Snippet(f"{doc.doc_id}#{i}", doc.doc_id, t, doc.topic) for i, t in enumerate(kept)]


def snippets_of(docs: Iterable[Document], max_chars: int = 1500, min_chars: int = 200,
                max_snippets_per_doc: int | None = None) -> Iterator[Snippet]:
    """Snippets of many documents, in input order."""
    for doc in docs:
        yield from split_document(doc, max_chars, min_chars, max_snippets_per_doc)
