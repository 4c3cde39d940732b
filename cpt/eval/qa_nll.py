"""Answer NLL on held-out QA pairs: the proxy's stand-in for scientific-reasoning benchmarks.

Llama-3-SynE reports its synthetic-data findings on science benchmarks, which a few-million
parameter proxy cannot answer above chance. What it can show is how likely the correct answer is
given the question: for each held-out pair (question q, answer a),

    context   "Question: {q}\\nAnswer:"          (cpt.synth.corrupt.format_pair's prefix)
    target    " {a}"                               tokenized separately, then appended
    NLL       sum over the target tokens of -log p(token | context, earlier target tokens)

and the metrics are

    answer_nll       total NLL / total answer tokens (nats per token, token-weighted)
    pair_nll         mean over pairs of each pair's NLL per token (every pair counts the same)
    pairs, answer_tokens, truncated (pairs whose question was cut from the left to fit max_length)

The pairs are the held-out documents of a recipe stream (the rule training uses, cpt.eval.heldout:
the model never trained on them), optionally narrowed by a metadata expression (`--where`), with
their `question` and `answer` read from the shard metadata (`cpt preprocess --keep-fields
question,answer`). Lower is better.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from cpt.annotate.perplexity import Scorer, Window

PREFIX = "Question: {question}\nAnswer:"


@dataclass(frozen=True, slots=True)
class QAPair:
    question: str
    answer: str


def pair_window(pair: QAPair, encode: Callable[[str], list[int]], max_length: int) -> tuple[Window, bool]:
    """The window scoring `pair`'s answer tokens (the question cut from the left if needed)."""
    if not pair.answer.strip():
        raise ValueError(f"empty answer for question {pair.question[:60]!r}")
    context = encode(PREFIX.format(question=pair.question))
    target = encode(" " + pair.answer)
    target = target[: max_length - 1]
    keep = max_length - len(target)
    truncated = len(context) > keep
    context = context[-keep:] if keep > 0 else []
    if not context:
        raise ValueError(f"max_length {max_length} leaves no room for the question")
    tokens = np.asarray(context + target, dtype=np.int64)
    return Window(tokens=tokens, first_target=len(context)), truncated


def answer_nll(pairs: Sequence[QAPair], scorer: Scorer, encode: Callable[[str], list[int]]) -> dict[str, Any]:
    """The metrics of the module docstring over `pairs`."""
    if not pairs:
        raise ValueError("no QA pairs to score")
    built = [pair_window(p, encode, scorer.max_length) for p in pairs]
    nll, counts = scorer.score([w for w, _ in built])
    nll, counts = np.asarray(nll, dtype=np.float64), np.asarray(counts, dtype=np.int64)
    return {"answer_nll": float(nll.sum() / counts.sum()), "pair_nll": float(np.mean(nll / counts)),
            "pairs": len(pairs), "answer_tokens": int(counts.sum()), "truncated": sum(t for _, t in built)}


def heldout_pairs(stream_spec: Any, fraction: float, seed: int, where: str | None = None) -> list[QAPair]:
    """The held-out QA pairs of one recipe stream (and `where`), in shard order."""
    from dataclasses import replace

    from cpt.eval.heldout import heldout_documents
    from cpt.shards.metadata import read_metadata

    if where:
        combined = f"({stream_spec.filter}) and ({where})" if stream_spec.filter else where
        stream_spec = replace(stream_spec, filter=combined)
    (docs,) = heldout_documents([stream_spec], fraction, seed) or [None]
    if docs is None:
        raise ValueError(f"stream {stream_spec.name!r} holds out no document (its valid_holdout is 0)")
    tables: dict[str, dict[str, list]] = {}
    pairs = []
    for prefix, index in docs.keys():
        if prefix not in tables:
            table = read_metadata(prefix)
            missing = {"question", "answer"} - set(table.column_names)
            if missing:
                raise ValueError(f"{prefix}.meta.parquet: no {sorted(missing)} column (preprocess the QA jsonl "
                                 f"with --keep-fields question,answer)")
            tables[prefix] = table.select(["question", "answer"]).to_pydict()
        q, a = tables[prefix]["question"][index], tables[prefix]["answer"][index]
        if q and a:
            pairs.append(QAPair(str(q), str(a)))
    return pairs


__all__ = ["PREFIX", "QAPair", "answer_nll", "heldout_pairs", "pair_window"]
