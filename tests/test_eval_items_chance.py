"""The next-sentence items are fair: any scorer that ignores the context scores exactly 0.25.

A model that has not learned a language ranks the choices by what it can see without the context:
length, frequent characters, sentences it memorised. Distractors drawn from the source's other
sentences let such a model beat or miss chance, because answers (a document's opening pair) are not
drawn like the rest: a window centred on the answer's length gave a length-led scorer 0.07-0.15, and
exact-length distractors gave a character-unigram model 0.40 on the built-in Chinese items. Items
now come in sets of four that show the same four answers, so the figure is exactly 0.25 for any
context-free scorer; three stand in for such models here.
"""
from __future__ import annotations

import collections
import hashlib
import math
from typing import Callable

import pytest

from cpt import assets
from cpt.eval.tasks import ITEMS_PER_LANGUAGE
from cpt.eval.tasks.next_sentence import (CHOICES, LANGUAGES, SENTENCE_OK, chinese_paragraphs, english_documents,
                                          make_items)

ITEMS = 200
"""Items per language in the larger sets."""


def _credit(items: list[dict], score: Callable[[str], float]) -> float:
    """Mean credit of picking the highest score (a tie shared among the tied choices)."""
    total = 0.0
    for item in items:
        scores = [score(c) for c in item["choices"]]
        best = [i for i, s in enumerate(scores) if s == max(scores)]
        total += (item["label"] in best) / len(best)
    return total / len(items)


def _unigram(texts: list[str]) -> Callable[[str], float]:
    counts = collections.Counter(ch for t in texts for ch in t)
    total, vocab = sum(counts.values()), len(counts) + 1
    return lambda s: sum(math.log((counts[ch] + 1) / (total + vocab)) for ch in s)


def _memorised(s: str) -> float:
    """An arbitrary fixed preference for some sentences over others."""
    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big")


@pytest.fixture(scope="module")
def item_sets() -> dict[str, tuple[list[dict], list[str]]]:
    """Per set: its items, and every sentence of the documents they come from (the unigram's text)."""
    zh_every10 = [(f"pd{i}", chinese_paragraphs(d)) for i, d in enumerate(assets.people_daily_documents()[::10])]
    sources = {"builtin_zh": ("zh", LANGUAGES["zh"].documents(), ITEMS_PER_LANGUAGE),
               "builtin_en": ("en", english_documents(), ITEMS_PER_LANGUAGE),
               "zh_200": ("zh", zh_every10, ITEMS), "en_200": ("en", english_documents(), ITEMS)}
    out = {}
    for name, (lang, docs, n) in sources.items():
        sentences = [s for _, paragraphs in docs for p in paragraphs for s in p]
        out[name] = (make_items(lang, docs, n, SENTENCE_OK[lang]), sentences)
    return out


@pytest.mark.parametrize("name", ["builtin_zh", "builtin_en", "zh_200", "en_200"])
def test_context_free_scorers_score_exactly_chance(item_sets, name):
    items, sentences = item_sets[name]
    # the old constructions: shortest 0.07 (zh) / 0.14 (en); unigram 0.115 / 0.15, and 0.40 on builtin_zh
    for scorer in (lambda s: -len(s), _unigram(sentences), _memorised):
        assert _credit(items, scorer) == pytest.approx(1 / CHOICES, abs=1e-12)
        # and so do the first 4m items (lm-eval's --limit): a set's items are written together
        for m in range(1, len(items) // CHOICES):
            assert _credit(items[:CHOICES * m], scorer) == pytest.approx(1 / CHOICES, abs=1e-12), m


@pytest.mark.parametrize("name", ["builtin_zh", "zh_200", "en_200"])
def test_each_choice_set_is_four_answers_of_different_documents_near_in_length(item_sets, name):
    items, _ = item_sets[name]
    answers = {item["choices"][item["label"]]: item for item in items}
    assert len(answers) == len(items)  # every answer differs
    shown = collections.Counter(frozenset(item["choices"]) for item in items)
    assert set(shown.values()) == {CHOICES}  # every set of four is shown by four items, one answer each
    for choice_set in shown:
        assert len({answers[c]["source"] for c in choice_set}) == CHOICES
    # neighbours in length: the spread within a set is small beside the length (a few sets at the sparse
    # ends of the length distribution spread wider)
    spread = [(max(map(len, c)) - min(map(len, c))) / min(map(len, c)) for c in shown]
    assert sum(spread) / len(spread) < 0.2


def _documents(pairs_per_document: list[int]) -> list[tuple[str, list[list[str]]]]:
    """Documents of one paragraph each, with the given number of consecutive good sentence pairs."""
    return [(f"d{d}", [[f"document {d} sentence {i} says something." for i in range(n + 1)]])
            for d, n in enumerate(pairs_per_document)]


def test_sets_never_pair_answers_of_one_document():
    # 3 documents give 6 pairs each, 9 give one: the sorted cut would put one document's answers together
    docs = _documents([6, 6, 6] + [1] * 9)
    items = make_items("en", docs, 24, lambda s: True, task="t")
    for item in items:
        assert len({c.split(" sentence")[0] for c in item["choices"]}) == CHOICES


def test_item_counts_that_cannot_make_choice_sets_are_refused_naming_the_task():
    docs = _documents([1] * 12)
    with pytest.raises(ValueError, match=r"^t: 10 items asked; items come in choice sets of 4, so ask for a positive multiple of 4$"):
        make_items("en", docs, 10, lambda s: True, task="t")
    with pytest.raises(ValueError, match=r"^t: the 8 sentence pairs come from 3 documents, too few for sets of 4"):
        make_items("en", _documents([4, 2, 2]), 8, lambda s: True, task="t")
