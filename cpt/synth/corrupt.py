"""Error injection for quality studies: make a chosen fraction of answers wrong, and say which.

Llama-3-SynE measures how training tolerates 30% / 50% wrong synthetic answers. We make an answer
wrong by giving its question the answer of another question of the same discipline (fluent, on
topic, and wrong), so a model cannot spot the corruption from style alone. Exactly
`round(rate * n)` pairs are chosen overall, spread over disciplines in proportion to their size
(largest remainders), with a seeded generator: the same kept pairs give the same corruption.

Training holds out part of the synthetic stream for validation (`valid_holdout` of its recipe: a
hash of each record's `doc_id`, so which pairs are held out is known before preprocessing). Given
that split (`HoldoutSplit`), injection works on the trained pairs only: the rate counts them,
wrong answers come only from them, and held-out pairs stay as generated. Otherwise a trained pair
could carry a held-out pair's answer under another question, and a metric scored on the held-out
answers would reward the corrupted arm for that leak rather than measure its tolerance of errors.
"""
from __future__ import annotations

import hashlib
import math
from collections import defaultdict
from dataclasses import dataclass, field

from pathlib import Path

import numpy as np

from cpt.corpus.identity import doc_id, source_of
from cpt.sampling.holdout import held_out
from cpt.synth.filters import normalize


@dataclass(frozen=True, slots=True)
class HoldoutSplit:
    """The validation split training will apply to an output file, known before it is preprocessed.

    A record at line `i` (1-based) of the file is the document `doc_id(source, i)` for `cpt preprocess`
    run with the same corpus root, and is held out when `held_out(doc_id, fraction, seed)`.
    """

    source: str
    """the output's path relative to the corpus root `cpt preprocess` will be given"""
    fraction: float
    """the stream's `valid_holdout`"""
    seed: int
    """the recipe's `valid_holdout_seed`"""

    @classmethod
    def for_output(cls, output: str | Path, corpus_root: str | Path | None, fraction: float,
                   seed: int) -> "HoldoutSplit":
        """The split of `output`; the corpus root defaults to its folder (`cpt preprocess`'s default)."""
        return cls(source_of(output, corpus_root if corpus_root is not None else Path(output).parent),
                   fraction, seed)

    def mask(self, n: int) -> np.ndarray:
        """Held out or not, for the records at lines 1..n."""
        return held_out(np.array([doc_id(self.source, line) for line in range(1, n + 1)], dtype=np.uint64),
                        self.fraction, self.seed)


@dataclass
class CorruptionReport:
    """What error injection did, for the run summary."""

    rate: float
    eligible: int = 0
    targeted: int = 0
    corrupted: int = 0
    impossible: int = 0
    """Targeted pairs whose discipline had no other, different answer to give them."""
    held_out: int = 0
    """Pairs the validation split holds out: never corrupted, never a donor, not in `eligible`."""
    by_discipline: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        achieved = self.corrupted / self.eligible if self.eligible else 0.0
        return {"rate": self.rate, "eligible": self.eligible, "targeted": self.targeted,
                "corrupted": self.corrupted, "impossible": self.impossible, "held_out": self.held_out,
                "achieved_rate": round(achieved, 6), "by_discipline": dict(sorted(self.by_discipline.items()))}


def allocate(sizes: dict[str, int], rate: float) -> dict[str, int]:
    """How many pairs to corrupt per discipline: sum is round(rate * total), shares by largest remainder."""
    total = round(rate * sum(sizes.values()))
    exact = {d: rate * n for d, n in sizes.items()}
    counts = {d: math.floor(x) for d, x in exact.items()}
    leftover = total - sum(counts.values())
    for d in sorted(exact, key=lambda d: (-(exact[d] - counts[d]), d))[:max(0, leftover)]:
        counts[d] += 1
    return counts


def corrupt(records: list[dict], rate: float, seed: int = 0, split: HoldoutSplit | None = None) -> CorruptionReport:
    """Set `corrupt`, and for chosen records replace `answer` (and `text`), in place.

    Each record needs `discipline`, `question`, `answer`, `id`; `records[i]` is line i+1 of the output.
    With a `split`, only the records it trains on are chosen or give answers. A corrupted record
    keeps its original answer in `original_answer` and names the donor in `corrupt_source`.
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"--corrupt-rate must be in [0, 1], got {rate}")
    held = split.mask(len(records)) if split is not None else np.zeros(len(records), dtype=bool)
    report = CorruptionReport(rate=rate, eligible=int((~held).sum()), held_out=int(held.sum()))
    for r in records:
        r["corrupt"] = False
    groups: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(records):
        if not held[i]:
            groups[r["discipline"]].append(i)
    originals = [r["answer"] for r in records]
    for discipline, count in allocate({d: len(ix) for d, ix in groups.items()}, rate).items():
        if count == 0:
            continue
        members = groups[discipline]
        digest = hashlib.sha256(f"{seed}:{discipline}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        order = [members[j] for j in rng.permutation(len(members))]
        report.targeted += count
        done = 0
        for pos, i in enumerate(order[:count]):
            donor = _donor(order, pos, originals)
            if donor is None:
                report.impossible += 1
                continue
            rec = records[i]
            rec["original_answer"] = rec["answer"]
            rec["answer"] = originals[donor]
            rec["text"] = format_pair(rec["question"], rec["answer"])
            rec["corrupt"] = True
            rec["corrupt_source"] = records[donor]["id"]
            done += 1
        report.corrupted += done
        report.by_discipline[discipline] = done
    return report


def _donor(order: list[int], pos: int, answers: list[str]) -> int | None:
    """The next record after `pos` (cyclically) whose answer differs from this one's."""
    mine = normalize(answers[order[pos]])
    for step in range(1, len(order)):
        cand = order[(pos + step) % len(order)]
        if normalize(answers[cand]) != mine:
            return cand
    return None


def format_pair(question: str, answer: str) -> str:
    """The plain-text form of a pair that training reads (the paper's format)."""
    return f"Question: {question}\nAnswer: {answer}"
