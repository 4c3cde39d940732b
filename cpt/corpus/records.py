"""Validated records from one segment of an input file, with their exact location.

Every input line/row/file yields exactly one `Record`: either the texts of the requested keys, or an
`error` (reason, detail) naming why it cannot be used. The caller decides (fail or skip-and-log);
nothing is dropped here. Reasons: bad_json, invalid_utf8, missing_text, empty_text,
non_string_text, too_large, empty_file, unreadable, unsupported_format. Blank lines of a jsonl file
are not records (they are counted by the caller through `blank_lines`).
"""
from __future__ import annotations

import gzip
import io
import json
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

from cpt.corpus.plan import Segment

REASONS = (
    "bad_json", "invalid_utf8", "missing_text", "empty_text", "non_string_text", "too_large",
    "empty_file", "unreadable", "unsupported_format", "no_tokens",
)


class CorpusError(ValueError):
    """A bad record under --on-error fail: the message is `source:line: reason: detail`."""


@dataclass(slots=True)
class Record:
    source: str
    line: int
    offset: int
    texts: list[str] | None = None
    lang: str | None = None
    fields: list[str | None] | None = None
    error: tuple[str, str] | None = None
    nbytes: int = 0
    """Input bytes this record took (for progress and throughput)."""

    def location(self) -> str:
        return f"{self.source}:{self.line}"


class _Bad(Exception):
    def __init__(self, reason: str, detail: str):
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


@dataclass
class Fields:
    """Which fields to take from each record."""

    keys: Sequence[str]
    lang_field: str | None = "lang"
    keep_fields: Sequence[str] = ()
    max_doc_bytes: int = 16 << 20


def check_text(obj: dict, key: str, surrogates: bool = False) -> str:
    """The text of `key`, or _Bad. `surrogates`: the source may hold lone surrogates (JSON \\ud8xx escapes)."""
    value = obj.get(key)
    if value is None:
        raise _Bad("missing_text", f"no {key!r} field")
    if not isinstance(value, str):
        raise _Bad("non_string_text", f"field {key!r} is {type(value).__name__}, not a string")
    if not value or value.isspace():
        raise _Bad("empty_text", f"field {key!r} is empty")
    if surrogates and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _Bad("invalid_utf8", f"field {key!r} has a lone surrogate at character {e.start}") from None
    return value


def _keep(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _from_obj(obj: Any, f: Fields, rec: Record, surrogates: bool = False) -> Record:
    if not isinstance(obj, dict):
        raise _Bad("bad_json", f"a record must be a JSON object, got {type(obj).__name__}")
    rec.texts = [check_text(obj, k, surrogates) for k in f.keys]
    lang = obj.get(f.lang_field) if f.lang_field else None
    rec.lang = lang if isinstance(lang, str) and lang.strip() else None
    rec.fields = [_keep(obj.get(k)) for k in f.keep_fields]
    return rec


_DECODER = json.JSONDecoder()
_WHITESPACE = json.decoder.WHITESPACE.match


def _parse_line(raw: bytes, f: Fields, rec: Record) -> Record:
    """One jsonl line -> record. Same acceptance as `json.loads` on the strictly decoded line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _Bad("invalid_utf8", f"byte {e.start} of the line: {e.reason}") from None
    try:  # json.loads without its wrappers: this runs once per document
        obj, end = _DECODER.raw_decode(text, _WHITESPACE(text, 0).end())
        if _WHITESPACE(text, end).end() != len(text):
            raise json.JSONDecodeError("Extra data", text, end)
    except ValueError as e:
        raise _Bad("bad_json", str(e)) from None
    # a lone surrogate can only come from a \uD800-\uDFFF escape; check only lines that have one
    surrogates = b"\\ud" in raw or b"\\uD" in raw
    if type(obj) is dict and len(f.keys) == 1 and not f.keep_fields and not surrogates:
        value = obj.get(f.keys[0])
        if type(value) is str and value and not value.isspace():  # the common case, checked inline
            rec.texts = [value]
            lang = obj.get(f.lang_field) if f.lang_field else None
            rec.lang = lang if type(lang) is str and lang.strip() else None
            rec.fields = []
            return rec
    return _from_obj(obj, f, rec, surrogates)


def iter_records(seg: Segment, f: Fields, counters: dict[str, int] | None = None) -> Iterator[Record]:
    """Records of a segment, in order. `counters["blank_lines"]` counts blank jsonl lines."""
    counters = counters if counters is not None else {}
    fmt = seg.file.format
    if fmt == "unsupported":
        yield Record(seg.file.source, 0, -1, error=("unsupported_format", "not jsonl/json(.gz/.zst), parquet or txt"))
    elif fmt == "txt":
        yield from _txt(seg, f)
    elif fmt == "parquet":
        yield from _parquet(seg, f)
    else:
        yield from _jsonl(seg, f, counters)


def _open_lines(seg: Segment):
    fmt = seg.file.format
    if fmt == "jsonl.gz":
        return gzip.open(seg.file.path, "rb")
    if fmt == "jsonl.zst":
        import zstandard

        raw = open(seg.file.path, "rb")
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(raw, closefd=True), 1 << 20)
    return open(seg.file.path, "rb", buffering=1 << 20)


def _read_line(fh, limit: int) -> tuple[bytes, int, bool]:
    """One line, at most `limit + 1` bytes kept; returns (kept bytes, full length, too_large)."""
    raw = fh.readline(limit + 1)
    if len(raw) <= limit or raw.endswith(b"\n"):
        return raw, len(raw), len(raw.rstrip(b"\r\n")) > limit
    total = len(raw)
    while True:
        rest = fh.readline(1 << 20)
        total += len(rest)
        if not rest or rest.endswith(b"\n"):
            return b"", total, True


def _jsonl(seg: Segment, f: Fields, counters: dict[str, int]) -> Iterator[Record]:
    src, whole = seg.file.source, seg.end == -1
    seekable = seg.file.format == "jsonl"
    try:
        fh = _open_lines(seg)
    except OSError as e:
        yield Record(src, 0, -1, error=("unreadable", f"{type(e).__name__}: {e.strerror or e}"))
        return
    line, pos, n = seg.first_line, seg.start, 0
    with fh:
        if seg.start:
            fh.seek(seg.start)
        while whole or pos < seg.end:
            try:
                raw, length, too_large = _read_line(fh, f.max_doc_bytes)
            except (OSError, EOFError, ValueError) as e:  # corrupt compressed stream
                yield Record(src, line, -1, error=("unreadable", f"cannot read past this line: {e}"))
                return
            if length == 0:
                break
            rec = Record(src, line, pos if seekable else -1, nbytes=length)
            if too_large:
                rec.error = ("too_large", f"record of {length} bytes exceeds --max-doc-bytes {f.max_doc_bytes}")
                n += 1
                yield rec
            elif raw.strip():
                n += 1
                try:
                    yield _parse_line(raw, f, rec)
                except _Bad as bad:
                    rec.error = (bad.reason, bad.detail)
                    rec.texts = None
                    yield rec
            else:
                counters["blank_lines"] = counters.get("blank_lines", 0) + 1
            line += 1
            pos += length
    if n == 0 and whole:
        yield Record(src, 0, -1, error=("empty_file", "no records in the file"))


def _txt(seg: Segment, f: Fields) -> Iterator[Record]:
    src = seg.file.source
    rec = Record(src, 0, -1, nbytes=max(seg.file.size, 0))
    try:
        with open(seg.file.path, "rb") as fh:
            data = fh.read(f.max_doc_bytes + 1)
    except OSError as e:
        rec.error = ("unreadable", f"{type(e).__name__}: {e.strerror or e}")
        yield rec
        return
    if not data:
        rec.error = ("empty_file", "the file is empty")
    elif len(data) > f.max_doc_bytes:
        rec.error = ("too_large", f"file exceeds --max-doc-bytes {f.max_doc_bytes}")
    else:
        try:
            obj = {k: data.decode("utf-8") for k in f.keys}
            _from_obj(obj, Fields(f.keys, None, ()), rec)
            rec.fields = [None] * len(f.keep_fields)
        except UnicodeDecodeError as e:
            rec.error = ("invalid_utf8", f"byte {e.start}: {e.reason}")
        except _Bad as bad:
            rec.error = (bad.reason, bad.detail)
            rec.texts = None
    yield rec


def _parquet(seg: Segment, f: Fields) -> Iterator[Record]:
    import pyarrow.parquet as pq

    src = seg.file.source
    try:
        pf = pq.ParquetFile(seg.file.path)
    except Exception as e:  # noqa: BLE001 - OSError or ArrowInvalid for a corrupt file
        yield Record(src, 0, -1, error=("unreadable", f"{type(e).__name__}: {e}"))
        return
    names = set(pf.schema_arrow.names)
    wanted = [c for c in dict.fromkeys([*f.keys, f.lang_field, *f.keep_fields]) if c and c in names]
    groups = range(seg.start, pf.num_row_groups if seg.end == -1 else seg.end)
    row = seg.first_line
    if seg.end == -1 and pf.metadata.num_rows == 0:
        yield Record(src, 0, -1, error=("empty_file", "the parquet file has no rows"))
        return
    rows = sum(pf.metadata.row_group(g).num_rows for g in groups)
    per_row = seg.size // max(rows, 1)
    try:
        batches = pf.iter_batches(row_groups=list(groups), columns=wanted, batch_size=8192)
        for batch in batches:
            cols = {name: batch.column(name).to_pylist() for name in wanted}
            for i in range(batch.num_rows):
                obj = {name: values[i] for name, values in cols.items()}
                rec = Record(src, row, -1, nbytes=per_row)
                try:
                    yield _from_obj(obj, f, rec)
                except _Bad as bad:
                    rec.error = (bad.reason, bad.detail)
                    rec.texts = None
                    yield rec
                row += 1
    except OSError as e:
        yield Record(src, row, -1, error=("unreadable", f"cannot read past this row: {e}"))
