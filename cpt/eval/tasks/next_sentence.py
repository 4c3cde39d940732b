"""`cpt_next_sentence_{en,zh}`: which of four sentences follows the context sentence?

Each item is two consecutive sentences of one real document (gensim's English Wikipedia sample;
People's Daily, January 1998) - the first is the context, the second the answer - and three
distractors: the answers of three other items, from other documents. lm-evaluation-harness scores
the four continuations by log-likelihood (`acc`) and by log-likelihood per byte (`acc_norm`);
chance is 0.25, and a model that ignores the context must score chance.

That last point decides how distractors are chosen. Items come in sets of four whose answers are
neighbours in length, and every item of a set shows the same four sentences (in its own seeded
order), its own answer among them. A scorer that ignores the context ranks the four the same way in
all four items, so it is right in exactly one of them: any such scorer scores exactly 0.25 (ties
shared), whatever it prefers - the shortest sentence, frequent characters, a sentence it memorised.
Earlier constructions drew distractors from all the source's other sentences, which are not drawn
like answers (a document's opening pair): a window centred on the answer's length left the answer
the median length (a length-led scorer got 0.07-0.15), and exact-length distractors still let a
character-unigram model get 0.40 on the built-in Chinese items. tests/test_eval_items_chance.py
checks the exact 0.25.

Items are spread over documents (the first good pair of each document, then the second, ...) and
everything random is seeded by the item's id, so the same packages give the same items byte for
byte. The four items of a set are written next to each other, so the first N items (lm-eval's
`--limit N`, N a multiple of 4) are whole sets and keep the exact 0.25. Nothing is downloaded: the
text comes from installed packages through `cpt.assets`.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Iterable, Sequence

CHOICES = 4
"""Answer + distractors per item, and items per choice set: a task's item count is a multiple of it."""
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

    Raises ValueError when `n` is not a multiple of CHOICES, or the documents do not hold `n` usable
    sentence pairs in enough documents to make choice sets of answers from different documents."""
    name = task or f"cpt_next_sentence_{lang}"
    if n <= 0 or n % CHOICES:
        raise ValueError(f"{name}: {n} items asked; items come in choice sets of {CHOICES}, "
                         f"so ask for a positive multiple of {CHOICES}")
    pairs: list[list[tuple[str, str]]] = []  # per document, its consecutive good pairs
    for _, paragraphs in documents:
        doc_pairs = []
        for sentences in paragraphs:
            good = [sentence_ok(s) for s in sentences]
            doc_pairs += [(a, b) for a, b, oka, okb in zip(sentences, sentences[1:], good, good[1:]) if oka and okb]
        pairs.append(doc_pairs)
    chosen = list(_round_robin(pairs))[:n]
    if len(chosen) < n:
        raise ValueError(f"{name}: the source text gives {len(chosen)} sentence pairs, {n} needed")
    answers = [answer for _, (_, answer) in chosen]
    sets = _choice_sets([d for d, _ in chosen], answers, name)
    items = []
    # set by set (in the order of each set's first item), so a prefix of whole sets is a fair subset
    by_set = sorted(range(len(chosen)), key=lambda k: (min(sets[k]), k))
    for k in by_set:
        d, (context, answer) = chosen[k]
        item_id = f"{lang}-{k:03d}"
        rng = random.Random(item_id)  # str seeds hash with sha512: the same on every run and machine
        choices = [answers[j] for j in sets[k]]
        rng.shuffle(choices)
        items.append({"id": item_id, "context": context, "choices": choices, "label": choices.index(answer),
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


def _choice_sets(docs: Sequence[int], answers: Sequence[str], task: str) -> list[list[int]]:
    """Per item, the CHOICES items whose answers are its choices (itself included): the items fall into
    sets of CHOICES different answers of different documents, neighbours in length, and every item of
    a set shows the set's answers (module doc). Items sorted by answer length are cut into consecutive
    sets; an item that shares a document (or its answer's text) with another of its set is swapped
    with the nearest set's item that leaves both sets free of such a clash."""
    order = sorted(range(len(docs)), key=lambda k: (len(answers[k]), k))
    sets = [order[i:i + CHOICES] for i in range(0, len(order), CHOICES)]

    def clash(members: list[int], k: int) -> bool:
        return any(docs[j] == docs[k] or answers[j] == answers[k] for j in members if j != k)

    for g, members in enumerate(sets):
        for slot in range(CHOICES):
            if not clash(members, members[slot]):
                continue
            swap = next(((h, t) for h in sorted(range(len(sets)), key=lambda h: (abs(h - g), h)) if h != g
                         for t in range(CHOICES)
                         if not clash(members[:slot] + [sets[h][t]] + members[slot + 1:], sets[h][t])
                         and not clash(sets[h][:t] + [members[slot]] + sets[h][t + 1:], members[slot])), None)
            if swap is None:
                raise ValueError(f"{task}: the {len(docs)} sentence pairs come from {len(set(docs))} documents, "
                                 f"too few for sets of {CHOICES} different answers of different documents")
            h, t = swap
            members[slot], sets[h][t] = sets[h][t], members[slot]
    set_of = {k: members for members in sets for k in members}
    return [set_of[k] for k in range(len(docs))]
