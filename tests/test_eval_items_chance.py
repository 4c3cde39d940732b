"""The next-sentence items are fair: a scorer that ignores the context scores chance (0.25).

A model that has not learned a language ranks the choices mostly by length, and the old
construction (distractors from a window centred on the answer's length) let such a model score
0.07-0.15: the answer was the shortest choice about 1 time in 8. Two context-free scorers stand
in for such a model here: "the shortest choice" and a character unigram model of the language.
"""
from __future__ import annotations

import collections
import math
from typing import Callable

import pytest

from cpt import assets
from cpt.eval.tasks.next_sentence import SENTENCE_OK, chinese_paragraphs, english_documents, make_items

ITEMS = 200
"""Items per language: binomial standard error of a chance score about 0.03."""


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


@pytest.fixture(scope="module")
def items() -> dict[str, tuple[list[dict], list[str]]]:
    """Per language: ITEMS items from its source documents, and every sentence of those documents."""
    zh_docs = [(f"pd{i}", chinese_paragraphs(d)) for i, d in enumerate(assets.people_daily_documents()[::10])]
    out = {}
    for lang, docs in (("zh", zh_docs), ("en", english_documents())):
        sentences = [s for _, paragraphs in docs for p in paragraphs for s in p]
        out[lang] = (make_items(lang, docs, ITEMS, SENTENCE_OK[lang]), sentences)
    return out


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_preferring_the_shortest_choice_scores_chance(items, lang):
    chosen, _ = items[lang]
    assert _credit(chosen, lambda s: -len(s)) == pytest.approx(0.25, abs=0.05)  # old construction: 0.07 (zh), 0.14 (en)


@pytest.mark.parametrize("lang", ["zh", "en"])
def test_a_unigram_model_of_the_language_scores_chance(items, lang):
    chosen, sentences = items[lang]
    assert _credit(chosen, _unigram(sentences)) == pytest.approx(0.25, abs=0.07)  # old construction: 0.115 (zh), 0.15 (en)
