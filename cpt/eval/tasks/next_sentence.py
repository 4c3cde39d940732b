"""`cpt_next_sentence_{en,zh}`: which of four sentences follows the context sentence?

Each item is two consecutive sentences of one real document (gensim's English Wikipedia sample;
People's Daily, January 1998) - the first is the context, the second the answer - and three
distractors: sentences of other documents of the answer's length. lm-evaluation-harness scores the
four continuations by log-likelihood (`acc`) and by log-likelihood per byte (`acc_norm`); chance is
0.25, and a model that ignores the context must score chance.

That last point decides how distractors are chosen. A sentence's log-likelihood is dominated by its
length, so a model that has not learned the language mostly prefers the shortest choice. Distractors
drawn from a window centred on the answer's length leave the answer the median: it is the shortest
of the four only when all three distractors are longer (1 in 8), so such a model scored well below
chance, a score that measured the items, not the model. So the distractors have exactly the answer's
length in characters where three such sentences exist; otherwise they come from a window that holds
the answer's length at a seeded uniform position, so the answer is no likelier than a distractor to
be the shortest. tests/test_eval_items_chance.py checks this with two context-free scorers.

Items are spread over documents (the first good pair of each document, then the second, ...) and
everything random is seeded by the item's id, so the same packages give the same items byte for
byte. Nothing is downloaded: the text comes from installed packages through `cpt.assets`.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Sequence

CHOICES = 4
"""Answer + distractors per item."""
LENGTH_TOLERANCE = 0.25
"""Without three sentences of the answer's exact length, distractors come from a length window
2 x this share of the answer's length wide (doubled until it holds three)."""
_EN_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")
_ZH_SPLIT = re.compile(r"(?<=[。！？])")


@dataclass(frozen=True)
class Language:
    """How one language's items are made."""

    code: str
    """Language code; the task is `cpt_next_sentence_<code>`."""
    documents: Callable[[], list[tuple[str, list[list[str]]]]]
    """(title, paragraphs as lists of sentences) of the source documents, in a fixed order."""
    paragraphs: Callable[[str], list[list[str]]]
    """One document's text as paragraphs of sentences (what `documents` applies to each source text)."""
    delimiter: str
    """What joins context and continuation (lm-eval's target_delimiter): a space, or nothing for Chinese."""


def _en_sentence_ok(s: str) -> bool:
    # gensim's markup filter leaves holes where templates were ("(; , Akhilleus, )"): skip those.
    return (40 <= len(s) <= 220 and s[0].isupper() and s.endswith(".")
            and not re.search(r"\(\s*[;,)]|\s[,;.]|\s{2}|[{}|=\[\]]", s)
            and sum(c.isascii() for c in s) >= 0.97 * len(s))


def english_paragraphs(text: str) -> list[list[str]]:
    """Prose paragraphs of one English document (no headings, lists, tables) split into sentences."""
    paragraphs = []
    for para in text.split("\n"):
        para = para.strip()
        if len(para) < 200 or para[0] in "*|{!=#:;":
            continue
        paragraphs.append([s.strip() for s in _EN_SPLIT.split(para)])
    return paragraphs


@lru_cache(maxsize=1)
def english_documents() -> list[tuple[str, list[list[str]]]]:
    """gensim's Wikipedia articles, as `english_paragraphs`.

    Cached: parsing the dump takes ~10 s, and the result is the same every time."""
    from cpt import assets

    return [(title, english_paragraphs(text)) for title, text in assets.enwiki_plain_articles()]


def _zh_sentence_ok(s: str) -> bool:
    return 12 <= len(s) <= 80 and s[-1] in "。！？" and not re.search(r"[A-Za-z]", s)


def chinese_paragraphs(text: str) -> list[list[str]]:
    """The lines of one Chinese document, each split after 。！？."""
    return [[s for s in _ZH_SPLIT.split(p) if s] for p in text.split("\n")]


def chinese_documents(limit: int = 400) -> list[tuple[str, list[list[str]]]]:
    """People's Daily documents (paragraphs joined up to ~400 characters), as `chinese_paragraphs`."""
    from cpt import assets

    return [(f"people_daily_{i}", chinese_paragraphs(doc))
            for i, doc in enumerate(assets.people_daily_documents(limit=limit))]


LANGUAGES: dict[str, Language] = {
    "en": Language("en", english_documents, english_paragraphs, " "),
    "zh": Language("zh", chinese_documents, chinese_paragraphs, ""),
}
SENTENCE_OK: dict[str, Callable[[str], bool]] = {"en": _en_sentence_ok, "zh": _zh_sentence_ok}


def make_items(lang: str, documents: Sequence[tuple[str, list[list[str]]]], n: int,
               sentence_ok: Callable[[str], bool], task: str | None = None) -> list[dict]:
    """`n` items (dicts with id, context, choices, label, source) from `documents`; `task` names
    the task in errors (default `cpt_next_sentence_<lang>`).

    Raises ValueError when the documents do not hold `n` usable sentence pairs."""
    pairs: list[list[tuple[str, str]]] = []  # per document, its consecutive good pairs
    pool: list[tuple[int, str]] = []  # (document, sentence) of every good sentence
    for d, (_, paragraphs) in enumerate(documents):
        doc_pairs = []
        for sentences in paragraphs:
            good = [sentence_ok(s) for s in sentences]
            pool += [(d, s) for s, ok in zip(sentences, good) if ok]
            doc_pairs += [(a, b) for a, b, oka, okb in zip(sentences, sentences[1:], good, good[1:]) if oka and okb]
        pairs.append(doc_pairs)
    chosen = list(_round_robin(pairs))[:n]
    if len(chosen) < n:
        raise ValueError(f"{task or f'cpt_next_sentence_{lang}'}: the source text gives {len(chosen)} sentence pairs, {n} needed")
    items = []
    for k, (d, (context, answer)) in enumerate(chosen):
        item_id = f"{lang}-{k:03d}"
        rng = random.Random(item_id)  # str seeds hash with sha512: the same on every run and machine
        choices = _distractors(answer, d, pool, rng)
        label = rng.randrange(CHOICES)
        choices.insert(label, answer)
        items.append({"id": item_id, "context": context, "choices": choices, "label": label,
                      "source": documents[d][0]})
    return items


def _round_robin(pairs: list[list[tuple[str, str]]]) -> Iterable[tuple[int, tuple[str, str]]]:
    """The first pair of every document, then the second of every document, ...: items spread out."""
    depth = 0
    while any(len(p) > depth for p in pairs):
        for d, doc_pairs in enumerate(pairs):
            if len(doc_pairs) > depth:
                yield d, doc_pairs[depth]
        depth += 1


def _distractors(answer: str, doc: int, pool: list[tuple[int, str]], rng: random.Random) -> list[str]:
    """CHOICES - 1 sentences of other documents for `answer`: of its exact length when there are
    enough, else from the narrowest length window around it (placed at random, see the module doc)."""
    length = len(answer)
    others = sorted({s for d, s in pool if d != doc and s != answer})
    exact = [s for s in others if len(s) == length]
    if len(exact) >= CHOICES - 1:
        return rng.sample(exact, CHOICES - 1)
    width = max(2, round(2 * LENGTH_TOLERANCE * length))
    while width <= 8 * length:
        low = length - rng.randint(0, width)  # the answer sits anywhere in [low, low + width]
        near = [s for s in others if low <= len(s) <= low + width]
        if len(near) >= CHOICES - 1:
            return rng.sample(near, CHOICES - 1)
        width *= 2
    raise ValueError(f"not enough distractor sentences for {answer[:40]!r}")
