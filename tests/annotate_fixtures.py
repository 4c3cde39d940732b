"""Real labelled text for the annotator tests: newsgroups, Wikipedia passages with assigned topics,
and a mixed Chinese + English corpus. Everything comes from installed packages (cpt.assets)."""
from __future__ import annotations

import random
from functools import lru_cache

from cpt import assets
from cpt.annotate.checksets import (  # noqa: F401  (re-exported for the tests)
    WIKI_TOPICS, en_check_set, enwiki, passages, wiki_split, zh_check_set, zh_check_split)
from cpt.annotate.docs import Labeled

NEWSGROUP_TOPICS = {"alt.atheism": "religion", "sci.space": "space"}


def _own_words(body: str) -> str:
    """A post without quoted lines (`>`, `|`) and attribution lines (`... writes:`), as scikit-learn's
    `remove=("quotes",)` does: what is left is the poster's own text."""
    keep = [line for line in body.splitlines()
            if line.strip() and not line.lstrip().startswith((">", "|", ":"))
            and not line.rstrip().endswith(("writes:", "wrote:"))]
    return "\n".join(keep)


@lru_cache(maxsize=None)
def newsgroup_split(n_train: int = 96, n_held: int = 64) -> tuple[list[Labeled], list[Labeled]]:
    """Post bodies (headers, quotes dropped) shuffled with a fixed seed: n_train to train, the next
    n_held held out (160 of the 200 posts: CPU time)."""
    posts = [Labeled(_own_words(body)[:1500], NEWSGROUP_TOPICS[group], "en")
             for group, body in assets.newsgroup_documents()]
    random.Random(0).shuffle(posts)
    return posts[:n_train], posts[n_train:n_train + n_held]


NEWSGROUP_TAXONOMY = """\
name: newsgroups-2
topics:
  - {lang: en, id: religion, name: Religion, description: "religion, atheism, god, belief, the bible, morality", subjects: []}
  - {lang: en, id: space, name: Space, description: "space flight, NASA, rockets, satellites, planets, orbits", subjects: []}
"""


def mixed_corpus(n_zh: int = 12, n_en: int = 12) -> list[dict]:
    """A real Chinese + English corpus: People's Daily documents and Wikipedia passages."""
    zh = [{"text": t, "lang": "zh"} for t in assets.people_daily_documents(limit=n_zh)]
    en_articles = list(enwiki().values())
    en = []
    for text in en_articles:
        en += [{"text": p, "lang": "en"} for p in passages(text, 1, min_chars=400)]
        if len(en) == n_en:
            break
    return zh + en


def zero_shot_classifier(out):
    """The untrained MiniLM classifier (its head: the topic descriptions' embeddings), saved as
    `cpt tag-train` saves one: a real `cpt tag --model` folder in under a second, no training."""
    from cpt.annotate import taxonomy
    from cpt.annotate.classifier import TopicClassifier

    return TopicClassifier.from_encoder(str(assets.minilm_dir()), taxonomy.load(), "cpu", 32).save(out)
