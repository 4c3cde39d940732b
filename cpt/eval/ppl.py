"""Per-stream perplexity of a causal LM on documents, and the before/after comparison of two runs.

Scoring reuses cpt.annotate.perplexity: the model's own tokenizer (`hf_encoder`), the window rule
for long documents (`make_windows`) and a `Scorer` (length-bucketed batches). Here each document
gives its NLL sum and scored-token count, and a stream aggregates them two ways:
  ppl           exp(total NLL / total tokens): token-weighted, what a validation loss measures
  mean_doc_ppl  the mean of the documents' own perplexities: every document counts the same
A document shared by several streams (overlapping filters) is scored once; `overall` is the
union of the streams' documents. The order of documents is fixed, so a rerun gives the same sums.
"""
from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from cpt.annotate.perplexity import Encode, Scorer, Window, make_windows
from cpt.eval.heldout import StreamDocuments

DocKey = tuple[str, int]
"""(shard prefix, document index)."""


@dataclass(frozen=True, slots=True)
class DocScore:
    nll: float
    """Sum of the NLL (nats) of the scored tokens."""
    tokens: int
    """Scored tokens (all but the first of each document, see cpt.annotate.perplexity)."""


def score_documents(texts: Sequence[str], scorer: Scorer, encode: Encode, stride: int | None = None,
                    max_doc_tokens: int | None = None) -> list[DocScore | str]:
    """A DocScore per text, or the reason it was skipped (`empty`, `too_few_tokens`)."""
    stride = stride or max(1, scorer.max_length // 2)
    out: list[DocScore | str] = ["empty"] * len(texts)
    todo = [i for i, t in enumerate(texts) if t.strip()]
    windows: list[Window] = []
    owner: list[int] = []
    for i, ids in zip(todo, encode([texts[i] for i in todo]) if todo else []):
        doc_windows = make_windows(ids[:max_doc_tokens] if max_doc_tokens else ids, scorer.max_length, stride)
        if not doc_windows:
            out[i] = "too_few_tokens"
        windows += doc_windows
        owner += [i] * len(doc_windows)
    if windows:
        sums, counts = scorer.score(windows)
        nll = np.zeros(len(texts))
        n = np.zeros(len(texts), dtype=np.int64)
        np.add.at(nll, owner, sums)
        np.add.at(n, owner, counts)
        for i in sorted(set(owner)):
            out[i] = DocScore(float(nll[i]), int(n[i]))
    return out


def read_texts(keys: Iterable[DocKey]) -> dict[DocKey, str]:
    """Source text of each document, re-read from the inputs its shard was made from."""
    from cpt import shards

    opened: dict[str, Any] = {}
    out = {}
    for prefix, index in keys:
        if prefix not in opened:
            opened[prefix] = shards.open(prefix)
        out[(prefix, index)] = shards.document_text(opened[prefix], index)
    return out


def score_keys(keys: Sequence[DocKey], scorer: Scorer, encode: Encode, stride: int | None = None,
               max_doc_tokens: int | None = None, chunk: int = 256,
               progress: Callable[[int, int], None] | None = None) -> dict[DocKey, DocScore | str]:
    """Score documents by key, `chunk` documents at a time (bounded memory, progress between chunks)."""
    out: dict[DocKey, DocScore | str] = {}
    for start in range(0, len(keys), chunk):
        part = list(keys[start:start + chunk])
        texts = read_texts(part)
        scored = score_documents([texts[k] for k in part], scorer, encode, stride, max_doc_tokens)
        out.update(zip(part, scored))
        if progress is not None:
            progress(len(out), len(keys))
    return out


def aggregate(scores: Sequence[DocScore | str]) -> dict[str, Any]:
    """documents, tokens, nll, ppl (token-weighted), mean_doc_ppl, skipped {reason: count}."""
    done = [s for s in scores if isinstance(s, DocScore)]
    skipped: dict[str, int] = {}
    for s in scores:
        if isinstance(s, str):
            skipped[s] = skipped.get(s, 0) + 1
    tokens = sum(s.tokens for s in done)
    nll = math.fsum(s.nll for s in done)
    return {
        "documents": len(done),
        "tokens": tokens,
        "nll": nll,
        "ppl": math.exp(nll / tokens) if tokens else None,
        "mean_doc_ppl": math.fsum(math.exp(s.nll / s.tokens) for s in done) / len(done) if done else None,
        "skipped": skipped,
    }


def stream_perplexity(streams: Sequence[StreamDocuments], scorer: Scorer, encode: Encode,
                      stride: int | None = None, max_doc_tokens: int | None = None,
                      progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """{streams: {name: aggregate + matching/held_out/filter}, overall: aggregate} over the held-out documents."""
    keys = list(dict.fromkeys(k for s in streams for k in s.keys()))  # union, first-seen order
    scores = score_keys(keys, scorer, encode, stride, max_doc_tokens, progress=progress)
    per_stream = {}
    for s in streams:
        per_stream[s.name] = {**aggregate([scores[k] for k in s.keys()]), "filter": s.filter,
                              "matching": s.matching, "held_out": s.held_out}
    return {"streams": per_stream, "overall": aggregate([scores[k] for k in keys])}


def print_progress(done: int, total: int) -> None:
    print(f"\rscored {done}/{total} documents", end="\n" if done == total else "", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------- comparison


def result_rows(report: Mapping[str, Any], where: str) -> dict[str, Mapping[str, Any]]:
    """{stream: row} plus `overall` of a `cpt eval ppl` result; ValueError naming `where` if it is not one."""
    streams = report.get("streams")
    if not isinstance(streams, dict) or not isinstance(report.get("overall"), dict):
        raise ValueError(f"{where}: not a `cpt eval ppl` result (no 'streams' / 'overall')")
    return {**streams, "overall": report["overall"]}


def compare(before: Mapping[str, Any], after: Mapping[str, Any], before_name: str = "before",
            after_name: str = "after") -> list[dict[str, Any]]:
    """One row per stream (after's order, then streams only before has, then overall): ppl both sides, % change.

    `same_tokens` is False when the two runs scored different token counts (other documents, or
    a different tokenizer): their perplexities are then not over the same tokens."""
    a, b = result_rows(before, before_name), result_rows(after, after_name)
    names = [n for n in b if n != "overall"] + [n for n in a if n not in b and n != "overall"] + ["overall"]
    rows = []
    for name in names:
        pa_, pb = (a.get(name) or {}).get("ppl"), (b.get(name) or {}).get("ppl")
        change = 100.0 * (pb - pa_) / pa_ if pa_ and pb is not None else None
        ta, tb = (a.get(name) or {}).get("tokens"), (b.get(name) or {}).get("tokens")
        rows.append({"stream": name, "before": pa_, "after": pb, "change_pct": change,
                     "documents": (b.get(name) or a.get(name) or {}).get("documents"),
                     "same_tokens": ta == tb})
    return rows


def format_compare(rows: Sequence[Mapping[str, Any]]) -> str:
    """A fixed-width before/after table; `*` marks rows whose token counts differ."""
    def num(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    width = max([len("stream")] + [len(r["stream"]) for r in rows])
    lines = [f"{'stream':<{width}}  {'docs':>6}  {'ppl before':>11}  {'ppl after':>11}  {'change':>8}"]
    for r in rows:
        change = "-" if r["change_pct"] is None else f"{r['change_pct']:+.1f}%"
        mark = "" if r["same_tokens"] else " *"
        lines.append(f"{r['stream']:<{width}}  {num(r['documents'], 'd'):>6}  {num(r['before'], '.3f'):>11}  "
                     f"{num(r['after'], '.3f'):>11}  {change:>8}{mark}")
    if any(not r["same_tokens"] for r in rows):
        lines.append("* token counts differ between the runs (other documents or tokenizer): not the same tokens")
    return "\n".join(lines)
