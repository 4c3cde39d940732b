"""Judging parsed pairs: every rejected pair gets exactly one reason, and every reason is counted.

Checks run in a fixed order and the first failure names the reason: `empty`, `too_short`,
`too_long`, `ungrounded`, then the two that depend on what was kept before, `exact_duplicate` and
`near_duplicate`. (`malformed` is decided by the parser, `generation_failed` by the backend.) The
duplicate indexes live here, so judging the same pairs in the same order always gives the same
result: finalization replays the journal in key order, whatever order generation finished in.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cpt.synth.minhash import MinHashLSH

REJECTION_REASONS = ("generation_failed", "malformed", "empty", "too_short", "too_long", "ungrounded",
                     "exact_duplicate", "near_duplicate")

_WORD_RE = re.compile(r"\w+")
_STOPWORDS = frozenset(
    "the a an and or of to in on at by for with from as is are was were be been being this that these "
    "those it its into than then there their they them which who whom whose what when where why how "
    "can could would should may might must will shall do does did done has have had not no yes also "
    "such other more most many much some any each both all very so if but because about between".split()
)


@dataclass(frozen=True, slots=True, kw_only=True)
class FilterConfig:
    """Limits a kept pair must meet (lengths in characters)."""

    min_question_chars: int = 10
    """Shorter questions are `too_short`."""
    max_question_chars: int = 1000
    """Longer questions are `too_long`."""
    min_answer_chars: int = 10
    """Shorter answers are `too_short`."""
    max_answer_chars: int = 4000
    """Longer answers are `too_long`."""
    min_grounding: float = 0.5
    """Share of the answer's content words that must occur in the snippet; 0 turns the check off."""
    near_duplicate_threshold: float = 0.8
    """Estimated Jaccard similarity (word 3-grams) at which a pair is a near duplicate; 1 turns it off."""

    def __post_init__(self) -> None:
        for lo, hi in (("min_question_chars", "max_question_chars"), ("min_answer_chars", "max_answer_chars")):
            if getattr(self, lo) > getattr(self, hi):
                raise ValueError(f"{lo} ({getattr(self, lo)}) must be <= {hi} ({getattr(self, hi)})")
        if not 0 <= self.min_grounding <= 1:
            raise ValueError(f"min_grounding must be in [0, 1], got {self.min_grounding}")


def content_words(text: str) -> list[str]:
    """Lower-case words that carry meaning: numbers, and words of 3+ letters not in a stop list."""
    return [w for w in _WORD_RE.findall(text.lower())
            if w.isdigit() or (len(w) >= 3 and w not in _STOPWORDS)]


def grounding(answer: str, snippet: str) -> float:
    """Share of the answer's content words found in the snippet (1.0 for an answer without any)."""
    words = content_words(answer)
    if not words:
        return 1.0
    vocab = set(content_words(snippet))
    return sum(w in vocab for w in words) / len(words)


def normalize(text: str) -> str:
    """Lower case, words only: the form exact duplicates are compared in."""
    return " ".join(_WORD_RE.findall(text.lower()))


class PairFilter:
    """Stateful judge of pairs; one instance per finalization pass."""

    def __init__(self, config: FilterConfig) -> None:
        self.config = config
        self.seen: set[bytes] = set()
        self.lsh = MinHashLSH(threshold=config.near_duplicate_threshold) \
            if config.near_duplicate_threshold < 1 else None

    def judge(self, question: str, answer: str, snippet: str | None,
              question_generated: bool = True) -> str | None:
        """The rejection reason of a pair, or None if it is kept (and then remembered for dedup).

        `snippet` None skips the grounding check, and `question_generated=False` the question's
        length limits: in code QA the question is the given problem and the solution is not in it.
        """
        c = self.config
        if not question.strip() or not answer.strip():
            return "empty"
        q_len = len(question) if question_generated else c.min_question_chars
        if q_len < c.min_question_chars or len(answer) < c.min_answer_chars:
            return "too_short"
        if q_len > c.max_question_chars or len(answer) > c.max_answer_chars:
            return "too_long"
        if snippet is not None and c.min_grounding > 0 and grounding(answer, snippet) < c.min_grounding:
            return "ungrounded"
        text = f"{question}\n{answer}"
        digest = hashlib.sha1(normalize(text).encode()).digest()
        if digest in self.seen:
            return "exact_duplicate"
        if self.lsh is not None and self.lsh.is_near_duplicate(text):
            return "near_duplicate"
        self.seen.add(digest)
        return None
