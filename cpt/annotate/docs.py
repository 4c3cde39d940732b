"""Documents as the annotators see them: (doc_id, text, lang), read from raw jsonl corpora.

The annotators work on any iterable of `Doc`, so they are testable without shards; this module
reads raw corpora (jsonl, jsonl.gz), and `cpt.annotate.sidecar` reads documents back from shards.
A document's id is the corpus-wide `doc_id` of `cpt.corpus.identity` (its path relative to the
corpus root, and its line), so a raw-corpus table and the shards `cpt preprocess` makes of the same
files agree; `id_key` names an input field to use instead.
"""
from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable, Iterator

from cpt.corpus.identity import doc_id_text


@dataclass(frozen=True, slots=True)
class Doc:
    doc_id: str
    """Stable identity; annotation results are keyed by it."""
    text: str
    """The document text (may be empty: annotators count and skip such documents)."""
    lang: str = ""
    """Language code when known; empty means 'detect'."""
    source: str = ""
    """Where the document came from (file:line), for error messages and raw outputs."""


class CorpusError(ValueError):
    """A corpus record cannot be read; the message gives file:line."""


def detect_lang(text: str) -> str:
    """`zh` when at least 20% of the non-space characters are CJK ideographs, else `en`.

    A quick rule for routing documents to per-language topics; the data layer's `lang` column,
    when present, takes precedence.
    """
    chars = [c for c in text[:2000] if not c.isspace()]
    if not chars:
        return "en"
    cjk = sum(1 for c in chars if "\u4e00" <= c <= "\u9fff" or "\u3400" <= c <= "\u4dbf")
    return "zh" if cjk / len(chars) >= 0.2 else "en"


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open("r", encoding="utf-8")


def _records(path: Path) -> Iterator[tuple[str, int, dict]]:
    """(file:line, line number, record) of each non-blank line; malformed lines are errors."""
    with _open(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise CorpusError(f"{where}: malformed JSON: {e.msg}") from e
            if not isinstance(record, dict):
                raise CorpusError(f"{where}: expected a JSON object")
            yield where, line_no, record


def _text_of(record: dict, text_key: str, where: str) -> str:
    text = record.get(text_key)
    if not isinstance(text, str):
        raise CorpusError(f"{where}: field {text_key!r} is missing or not a string")
    return text


def read_jsonl(path: str | Path, text_key: str = "text", id_key: str | None = None,
               lang_key: str = "lang", source: str | None = None) -> Iterator[Doc]:
    """Documents of one jsonl file. A malformed line or a non-string text is an error (file:line).

    `source`: the file's path relative to the corpus root (default: its name, the root being its folder).
    """
    path = Path(path)
    source = source if source is not None else path.name
    for where, line_no, record in _records(path):
        text = _text_of(record, text_key, where)
        doc_id = _record_id(record, id_key, where) if id_key else doc_id_text(source, line_no)
        lang = record.get(lang_key) if isinstance(record.get(lang_key), str) else ""
        yield Doc(doc_id=doc_id, text=text, lang=lang or detect_lang(text), source=where)


def _record_id(record: dict, id_key: str, where: str) -> str:
    if record.get(id_key) is None:
        raise CorpusError(f"{where}: record lacks the id field {id_key!r}")
    return str(record[id_key])


def read_corpora(paths: Iterable[str | Path], root: str | Path | None = None, **kwargs) -> Iterator[Doc]:
    """Documents of several jsonl files (or folders of them, in sorted order), one after another.

    Files are found as `cpt preprocess` finds them (`cpt.corpus.list_inputs`, sources relative to
    `root` or to each input's parent folder), so both give a document the same doc_id.
    """
    from cpt.corpus.files import list_inputs

    for p in paths:
        try:
            found, _ = list_inputs([p], root)
        except FileNotFoundError:
            raise CorpusError(f"{p} does not exist") from None
        files = [f for f in found if f.path.endswith((".jsonl", ".jsonl.gz")) or not Path(p).is_dir()]
        if not files:
            raise CorpusError(f"{p}: no .jsonl or .jsonl.gz files")
        for f in files:
            yield from read_jsonl(f.path, source=f.source, **kwargs)


def write_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Write records as jsonl (UTF-8, not ASCII-escaped), used by tests and tools."""
    with Path(path).open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


@dataclass(frozen=True, slots=True)
class Labeled:
    text: str
    label: str | None
    """Topic id, or None when the file has no label for this text (bootstrapping needs none)."""
    lang: str


def read_labeled(path: str | Path, text_key: str = "text", label_key: str = "topic",
                 require_labels: bool = True) -> list[Labeled]:
    """(text, topic) examples of a jsonl file; a missing label is an error unless not required."""
    out = []
    for where, _, record in _records(Path(path)):
        text = _text_of(record, text_key, where)
        label = record.get(label_key)
        if label is None and require_labels:
            raise CorpusError(f"{where}: field {label_key!r} is missing (needed unless --bootstrap is used)")
        lang = record.get("lang") if isinstance(record.get("lang"), str) else detect_lang(text)
        out.append(Labeled(text, None if label is None else str(label), lang))
    return out
