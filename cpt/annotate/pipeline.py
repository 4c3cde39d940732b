"""Annotate a raw corpus into a table, or a shard into its metadata sidecar; then summarise.

Raw corpora (jsonl): results go to OUT (.parquet or .jsonl) with doc_id, source, lang, the
annotator's columns and `skip` (the reason a document got no value). Shards: the columns are added
to `PREFIX.meta.parquet` through `cpt.shards.update_metadata` (an atomic rewrite), with null for
skipped documents, reading the documents' text back with `cpt.shards.document_texts`. Either way
the checkpoint lives beside the output (`OUT.partial.jsonl`, `PREFIX.<what>.partial.jsonl`) and a
summary JSON (`... .summary.json`) is written last. A task of a sharded run writes its slice to a
part file instead, and `merge_shard` / `merge_corpus` write the sidecar / table from all parts
(`cpt.annotate.scaleout`).
"""
from __future__ import annotations

import math
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from cpt.annotate.docs import Doc
from cpt.annotate.runner import Annotator, Progress, run_annotator
from cpt.annotate.scaleout import (MergeError, Slice, check_doc_ids, completed_part, doc_range, merge_note,
                                   read_parts)
from cpt.annotate.store import Result, ResultStore, write_table

Factory = Callable[[], Annotator]


def annotate_corpus(docs: Iterable[Doc], factory: Factory, columns: tuple[str, ...], out: str | Path,
                    run_key: dict[str, Any], chunk_size: int = 256, workers: int = 1,
                    progress: bool = True) -> dict[str, Any]:
    """Annotate documents into the table `out`; returns the summary (also written beside it)."""
    if "slice" in run_key and (summary := completed_part(out, run_key)) is not None:
        return summary  # a committed part of a sharded run: nothing left to do
    store = ResultStore(out, run_key)
    order, done, stats = run_annotator(docs, factory, store, chunk_size, workers,
                                       Progress(Path(out).name) if progress else None)
    rows = []
    for d in order:
        r = done[d.doc_id]
        rows.append({"doc_id": d.doc_id, "source": d.source, "lang": d.lang, "skip": r.skip,
                     **{c: (r.values or {}).get(c) for c in columns}})
    summary = make_summary(str(out), rows, columns, stats.to_dict(), run_key)
    store.finalize(rows, ("doc_id", "source", "lang", *columns, "skip"), summary)
    return summary


def annotate_shard(prefix: str | Path, factory: Factory, columns: tuple[str, ...], what: str,
                   run_key: dict[str, Any], chunk_size: int = 256, workers: int = 1,
                   progress: bool = True, part: Slice = Slice()) -> dict[str, Any]:
    """Annotate every document of a shard and add `columns` to its metadata sidecar.

    With a `part` of several, annotate only that task's slice and write it to its part file (see
    `cpt.annotate.scaleout`); `merge_shard` later writes the sidecar from all parts.
    """
    import cpt.shards as shards

    shard = shards.open(prefix)
    meta = shard.metadata(["doc_id", "lang", "n_tokens"]).to_pydict()
    start, stop = 0, len(meta["doc_id"])
    base = Path(f"{shard.prefix}.{what}")
    out = base
    if not part.whole:
        start, stop = doc_range(meta["n_tokens"], chunk_size, part)
        out = part.part_path(base)
        run_key = {**run_key, "slice": [part.index, part.count]}
        if (summary := completed_part(out, run_key)) is not None:
            return summary  # committed by an earlier attempt or run: nothing left to do
    store = ResultStore(out, {**run_key, "shard": str(shard.prefix)})

    def docs() -> Iterator[Doc]:
        texts = shards.document_texts(shard, start, stop)  # streams the sources, each file opened once
        for i, text in enumerate(texts, start):
            yield Doc(str(meta["doc_id"][i]), text, meta["lang"][i] or "", f"{shard.prefix}#{i}")

    label = f"{Path(shard.prefix).name} {what}" + ("" if part.whole else f" {part.index}/{part.count}")
    order, done, stats = run_annotator(docs(), factory, store, chunk_size, workers,
                                       Progress(label) if progress else None)
    rows = []
    for d in order:
        r = done[d.doc_id]
        rows.append({"doc_id": d.doc_id, "lang": d.lang, "skip": r.skip,
                     **{c: (r.values or {}).get(c) for c in columns}})
    if not part.whole:
        summary = make_summary(str(out), rows, columns, stats.to_dict(), run_key)
        store.finalize(rows, ("doc_id", "lang", *columns, "skip"), summary)
        return summary
    summary = make_summary(f"{shard.prefix}.meta.parquet", rows, columns, stats.to_dict(), run_key)
    store.finalize_with(lambda: _write_sidecar(shard.prefix, rows, columns), summary)
    return summary


def merge_shard(prefix: str | Path, columns: tuple[str, ...], what: str) -> dict[str, Any]:
    """Write the sidecar columns of a shard from the parts of a sharded run, then its summary."""
    import cpt.shards as shards
    from cpt.io import write_json_atomic

    shard = shards.open(prefix)
    base = Path(f"{shard.prefix}.{what}")
    merged = read_parts(base)
    check_doc_ids(merged.rows, [str(d) for d in shard.metadata(["doc_id"]).column("doc_id").to_pylist()],
                  str(shard.prefix))
    summary = {**make_summary(f"{shard.prefix}.meta.parquet", merged.rows, columns, merged.stats,
                              merged.run_key), **merge_note(merged)}
    _write_sidecar(shard.prefix, merged.rows, columns)
    write_json_atomic(base.with_name(base.name + ".summary.json"), summary)
    return summary


def merge_corpus(out: str | Path, columns: tuple[str, ...]) -> dict[str, Any]:
    """Write the table `out` from the parts of a sharded run over a raw corpus, then its summary.

    The parts of one call cover its documents contiguously in task order, so their concatenation is
    the one-run table; the doc ids were checked unique within each part, and are again here.
    """
    from cpt.io import write_json_atomic

    out = Path(out)
    merged = read_parts(out)
    ids = [r["doc_id"] for r in merged.rows]
    if len(set(ids)) != len(ids):
        dup = next(i for i, c in Counter(ids).items() if c > 1)
        raise MergeError(f"{out}: doc_id {dup!r} is in more than one part")
    summary = {**make_summary(str(out), merged.rows, columns, merged.stats, merged.run_key), **merge_note(merged)}
    write_table(out, merged.rows, ("doc_id", "source", "lang", *columns, "skip"))
    write_json_atomic(ResultStore(out, merged.run_key).summary_path, summary)
    return summary


def _write_sidecar(prefix: str | Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    import pyarrow as pa

    import cpt.shards as shards

    arrays = {}
    for c in columns:
        kind = pa.string() if c == "topic" else pa.float64()
        arrays[c] = pa.array([row[c] for row in rows], type=kind)
    shards.update_metadata(prefix, arrays)


def make_summary(output: str, rows: list[dict[str, Any]], columns: tuple[str, ...],
                 stats: dict[str, Any], run_key: dict[str, Any]) -> dict[str, Any]:
    """Counts, plus per-language distributions: topic histograms, ppl quantiles."""
    summary: dict[str, Any] = {"output": output, "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                               "stats": stats, "run_key": run_key}
    if "topic" in columns:
        hist: dict[str, Counter] = defaultdict(Counter)
        for r in rows:
            if r["topic"] is not None:
                hist[r["lang"]][r["topic"]] += 1
        summary["topic_histogram"] = {lang: dict(c.most_common()) for lang, c in sorted(hist.items())}
    if "ppl" in columns:
        by_lang: dict[str, list[float]] = defaultdict(list)
        for r in rows:
            if r["ppl"] is not None:
                by_lang[r["lang"]].append(r["ppl"])
        summary["ppl_distribution"] = {lang: ppl_stats(v) for lang, v in sorted(by_lang.items())}
    return summary


def ppl_stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    q = np.percentile(v, [10, 25, 50, 75, 90])
    return {"n": int(len(v)), "p10": float(q[0]), "p25": float(q[1]), "median": float(q[2]),
            "p75": float(q[3]), "p90": float(q[4]), "geo_mean": float(math.exp(np.log(v).mean()))}


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable end of a run: counts, skips by reason, histograms / distributions."""
    s = summary["stats"]
    lines = [f"{summary['output']}: read {s['read']}, annotated {s['annotated']} "
             f"(resumed {s['resumed_from_checkpoint']}), skipped {s['skipped'] or 0} in {s['seconds']:.1f}s"]
    for lang, hist in summary.get("topic_histogram", {}).items():
        total = sum(hist.values())
        lines.append(f"topic histogram [{lang}] ({total} docs)")
        for topic, n in hist.items():
            lines.append(f"  {topic:<20} {n:>7} {100 * n / total:5.1f}% " + "#" * round(40 * n / total))
    for lang, d in summary.get("ppl_distribution", {}).items():
        lines.append(f"ppl [{lang}] n={d['n']} p10={d['p10']:.1f} p25={d['p25']:.1f} median={d['median']:.1f} "
                     f"p75={d['p75']:.1f} p90={d['p90']:.1f} geo_mean={d['geo_mean']:.1f}")
    return "\n".join(lines)


__all__ = ["annotate_corpus", "annotate_shard", "format_summary", "make_summary", "merge_corpus", "merge_shard",
           "Result"]
