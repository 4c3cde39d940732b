"""One chunk of a preprocessing run: read and check records, tokenize, write one small shard per key.

A chunk is written into `WORK/chunk-NNNNNN.tmp-HOST-PID/` and renamed to `WORK/chunk-NNNNNN/` when
all its files are complete, so a run killed at any point leaves finished chunks (kept on rerun) and
temporary folders (deleted on rerun). A committed chunk is never replaced: a builder that finds one
at its name drops its own copy (the same bytes: a chunk depends only on its records), so a builder
that lost its claim (`cpt.shards.claims`) cannot swap files under an assembly reading them. Bad
records either stop the run (`on_error="fail"`, with file:line and the reason) or are skipped,
counted by reason and logged to `KEY.skipped.jsonl`.
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from cpt.corpus.lang import detect_lang, normalize_lang
from cpt.corpus.plan import Chunk
from cpt.corpus.records import CorpusError, Fields, Record, iter_records
from cpt.io import commit_dir
from cpt.shards.metadata import doc_id, schema_for
from cpt.shards.writer import ShardWriter
from cpt.tokenizers.base import TokenizerSpec

# Test hook: seconds to sleep after each batch, so a test can SIGKILL a run in the middle.
DELAY_ENV = "CPT_PREPROCESS_BATCH_DELAY"


@dataclass
class Job:
    """What every chunk of one run shares (picklable, sent once to each worker)."""

    work_dir: str
    fields: Fields
    tokenizer: TokenizerSpec
    engine: str
    dtype: str
    append_eod: bool
    on_error: str
    manifest: dict[str, dict[str, Any]]
    """Per key: the manifest entries every chunk records (tokenizer, options, inputs)."""
    batch_docs: int = 1024
    batch_bytes: int = 4 << 20


def chunk_dir(work_dir: str | Path, index: int) -> Path:
    return Path(work_dir) / f"chunk-{index:06d}"


@dataclass
class _State:
    encoder: Any = None
    eod: int = 0


_STATE = _State()


def init_worker(job: Job, encoder: Any = None) -> None:
    """Load the tokenizer and pick the engine once per process (or use the caller's encoder)."""
    from cpt.tokenizers.engine import Encoder

    if encoder is None:
        encoder = Encoder(job.tokenizer.build(), job.engine)
    _STATE.encoder = encoder
    _STATE.eod = encoder.tokenizer.eod


@dataclass
class _ChunkStats:
    read: int = 0
    written: int = 0
    skipped: int = 0
    blank_lines: int = 0
    tokens: int = 0
    skipped_by_reason: dict[str, int] = field(default_factory=dict)

    def manifest(self) -> dict[str, Any]:
        return {
            "read": self.read, "written": self.written, "skipped": self.skipped,
            "blank_lines": self.blank_lines, "skipped_by_reason": dict(sorted(self.skipped_by_reason.items())),
        }


class _ChunkBuilder:
    def __init__(self, job: Job, chunk: Chunk, report: Callable[[int, int, int], None] | None):
        self.job, self.chunk, self.report = job, chunk, report
        self.keys = list(job.fields.keys)
        # host and pid: builders on several nodes of a shared file system never share a temporary
        self.tmp = Path(f"{chunk_dir(job.work_dir, chunk.index)}.tmp-{socket.gethostname()}-{os.getpid()}")
        shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp.mkdir(parents=True)
        schema = schema_for(job.fields.keep_fields)
        self.writers = {k: ShardWriter(self.tmp / k, np.dtype(job.dtype), schema) for k in self.keys}
        self.skip_log = open(self.tmp / "skipped.jsonl", "w", encoding="utf-8")
        self.stats = _ChunkStats()
        self.batch: list[Record] = []
        self.batch_bytes = 0
        self.pending_bytes = 0
        self.delay = float(os.environ.get(DELAY_ENV, "0") or 0)

    def bad(self, rec: Record, reason: str, detail: str) -> None:
        if self.job.on_error == "fail":
            raise CorpusError(f"{rec.source}:{rec.line}: {reason}: {detail}")
        self.stats.skipped += 1
        self.stats.skipped_by_reason[reason] = self.stats.skipped_by_reason.get(reason, 0) + 1
        entry = {"source": rec.source, "line": rec.line, "offset": rec.offset, "reason": reason, "detail": detail}
        self.skip_log.write(json.dumps(entry, ensure_ascii=False, sort_keys=True) + "\n")

    def run(self) -> dict[str, Any]:
        counters: dict[str, int] = {}
        for seg in self.chunk.segments:
            for rec in iter_records(seg, self.job.fields, counters):
                self.stats.read += 1
                self.pending_bytes += rec.nbytes
                if rec.error:
                    self.bad(rec, *rec.error)
                    continue
                self.batch.append(rec)
                self.batch_bytes += len(rec.texts[0])
                if len(self.batch) >= self.job.batch_docs or self.batch_bytes >= self.job.batch_bytes:
                    self.flush()
        self.flush()
        self.stats.blank_lines = counters.get("blank_lines", 0)
        return self.finish()

    def flush(self) -> None:
        if self.batch:
            self._encode_batch(self.batch)
        if self.report is not None:
            self.report(self.pending_bytes, len(self.batch), 0)
        self.pending_bytes = 0
        self.batch, self.batch_bytes = [], 0
        if self.delay:
            time.sleep(self.delay)

    def _encode_batch(self, batch: list[Record]) -> None:
        encoded = [_STATE.encoder.encode([r.texts[k] for r in batch]) for k in range(len(self.keys))]
        empty = np.zeros(len(batch), dtype=bool)
        for _, lengths in encoded:
            empty |= lengths == 0
        if empty.any():
            for i in np.flatnonzero(empty):
                self.bad(batch[i], "no_tokens", "the tokenizer produced no tokens")
            keep = ~empty
            batch = [r for r, k in zip(batch, keep) if k]
            encoded = [_select(flat, lengths, keep) for flat, lengths in encoded]
        if not batch:
            return
        ids = np.fromiter((doc_id(r.source, r.line) for r in batch), dtype=np.uint64, count=len(batch))
        langs = [normalize_lang(r.lang) if r.lang else detect_lang(r.texts[0]) for r in batch]
        base = {
            "doc_id": pa.array(ids, pa.uint64()),
            "source": pa.array([r.source for r in batch], pa.string()),
            "line": pa.array([r.line for r in batch], pa.int64()),
            "offset": pa.array([r.offset for r in batch], pa.int64()),
            "lang": pa.array(langs, pa.string()),
        }
        kept = {name: pa.array([r.fields[j] for r in batch], pa.string()) for j, name in enumerate(self.job.fields.keep_fields)}
        n_tokens = 0
        for key, (flat, lengths) in zip(self.keys, encoded):
            if self.job.append_eod:
                flat = np.insert(flat, np.cumsum(lengths), _STATE.eod)
                lengths = lengths + 1
            meta = pa.table({**base, "n_tokens": pa.array(lengths, pa.int64()), **kept})
            self.writers[key].add(flat, lengths, meta)
            n_tokens += len(flat)
        self.stats.written += len(batch)
        self.stats.tokens += n_tokens
        if self.report is not None:
            self.report(0, 0, n_tokens)

    def finish(self) -> dict[str, Any]:
        self.skip_log.close()
        for key, writer in self.writers.items():
            extra = dict(self.job.manifest[key])
            extra["stats"] = self.stats.manifest()
            extra["part"] = {"chunk": self.chunk.index}
            writer.finish(extra, durable=False)
            shutil.copyfile(self.tmp / "skipped.jsonl", self.tmp / f"{key}.skipped.jsonl")
        (self.tmp / "skipped.jsonl").unlink()
        ours = _commit(self.tmp, chunk_dir(self.job.work_dir, self.chunk.index))
        return {"chunk": self.chunk.index, "committed": ours, **self.stats.manifest(), "tokens": self.stats.tokens,
                "bytes": self.chunk.size, "engine": _STATE.encoder.name, "fallbacks": _STATE.encoder.fallbacks,
                "placeholder_redone": _STATE.encoder.redone}

    def abort(self) -> None:
        self.skip_log.close()
        for w in self.writers.values():
            w.abort()
        shutil.rmtree(self.tmp, ignore_errors=True)


def _commit(tmp: Path, final: Path) -> bool:
    """Rename the finished `tmp` folder to `final`; False (and `tmp` removed) where a chunk was
    committed there already (`cpt.io.commit_dir` keeping the first)."""
    return commit_dir(tmp, final, exist="keep")


def committed(work_dir: str | Path, index: int, keys) -> bool:
    """Chunk `index` is committed (its folder appears by one rename, with every key's manifest)."""
    d = chunk_dir(work_dir, index)
    return all((d / f"{k}.manifest.json").is_file() for k in keys)


def _select(flat: np.ndarray, lengths: np.ndarray, keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mask = np.repeat(keep, lengths)
    return flat[mask], lengths[keep]


_REPORT_QUEUE = None


def _queue_report(nbytes: int, docs: int, tokens: int) -> None:
    _REPORT_QUEUE.put((nbytes, docs, tokens))


def init_pool_worker(job: Job, queue) -> None:
    """Pool initializer: keep the encoder inherited through fork, else load one."""
    global _REPORT_QUEUE
    _REPORT_QUEUE = queue
    if _STATE.encoder is None:
        init_worker(job)


def build_chunk(job: Job, chunk: Chunk, report: Callable[[int, int, int], None] | None = None) -> dict[str, Any]:
    """Build one chunk (in this process); returns its counts. Raises CorpusError under on_error=fail."""
    if report is None and _REPORT_QUEUE is not None:
        report = _queue_report
    builder = _ChunkBuilder(job, chunk, report)
    try:
        return builder.run()
    except BaseException:
        builder.abort()
        raise


def build_claimed(job: Job, chunk: Chunk, claims: Any = None,
                  report: Callable[[int, int, int], None] | None = None) -> dict[str, Any] | None:
    """`build_chunk` where this slice holds the chunk's claim (`cpt.shards.claims.Claims`; None: no
    claims, a run of its own) and the chunk is not committed yet; None where it skipped it."""
    if claims is not None and not claims.take(chunk.index):
        return None
    if committed(job.work_dir, chunk.index, job.fields.keys):
        return None
    return build_chunk(job, chunk, report)
