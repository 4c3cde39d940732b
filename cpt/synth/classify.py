"""Choosing a snippet's discipline: the tagger's topic when present, else keywords or embeddings.

The topic tagger's taxonomy (cpt/annotate/taxonomy.yaml) is coarser than our nine disciplines in
places: its `physics` also covers astronomy, and earth science hides in `other_general`. A topic
therefore maps to candidate disciplines, and keywords pick among several candidates. Topics with
no scientific discipline (engineering, economics, ...) give None and the snippet is skipped and
counted, never forced into a discipline it is not about.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Protocol, Sequence

from cpt.synth.disciplines import BY_NAME, DISCIPLINES, Discipline, from_topic

# topic -> (candidate disciplines, whether a keyword hit is required to accept any of them)
TOPIC_CANDIDATES: dict[str, tuple[tuple[str, ...], bool]] = {
    "physics": (("physics", "astronomy"), False),
    "other_general": (("earth_science",), True),
}

_WORD_RE = re.compile(r"[a-z][a-z\-]+")


class DisciplineFilter(Protocol):
    """Picks the discipline of each text, or None when it is about none of them."""

    def classify(self, texts: Sequence[str]) -> list[Discipline | None]: ...


def keyword_scores(text: str, among: Sequence[Discipline] = DISCIPLINES) -> Counter[str]:
    """How many keyword occurrences of each discipline the text contains (whole words/phrases)."""
    lowered = text.lower()
    words = Counter(_WORD_RE.findall(lowered))
    scores: Counter[str] = Counter()
    for d in among:
        for kw in d.keywords:
            hits = lowered.count(kw) if " " in kw else words[kw] + words[kw + "s"]
            if hits:
                scores[d.name] += hits
    return scores


class KeywordFilter:
    """The discipline with the most keyword hits, if it has at least `min_hits` and leads clearly.

    `min_margin` is the share of all hits the winner must hold, so a text that mentions a little of
    everything is left out rather than guessed.
    """

    def __init__(self, min_hits: int = 3, min_margin: float = 0.4) -> None:
        self.min_hits = min_hits
        self.min_margin = min_margin

    def classify(self, texts: Sequence[str]) -> list[Discipline | None]:
        return [self.one(t) for t in texts]

    def one(self, text: str, among: Sequence[Discipline] = DISCIPLINES) -> Discipline | None:
        scores = keyword_scores(text, among)
        if not scores:
            return None
        (name, best), = scores.most_common(1)
        if best < self.min_hits or best / sum(scores.values()) < self.min_margin:
            return None
        return BY_NAME[name]


class EmbeddingFilter:
    """Nearest discipline description by cosine similarity of MiniLM sentence embeddings.

    Mean-pooled, normalized embeddings of the model in `model_dir` (all-MiniLM-L6-v2 by default,
    from `cpt.assets.minilm_dir()`); a snippet is kept only if its best similarity reaches
    `min_similarity`.
    """

    def __init__(self, model_dir: str | None = None, min_similarity: float = 0.25,
                 batch_size: int = 32) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if model_dir is None:
            from cpt.assets import minilm_dir

            model_dir = str(minilm_dir())
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModel.from_pretrained(model_dir).eval()
        self.min_similarity = min_similarity
        self.batch_size = batch_size
        self.prototypes = self.embed([d.description for d in DISCIPLINES])

    def embed(self, texts: Sequence[str]):
        """Normalized mean-pooled embeddings, shape (len(texts), dim)."""
        torch = self._torch
        chunks = []
        with torch.inference_mode():
            for i in range(0, len(texts), self.batch_size):
                enc = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True,
                                     max_length=256, return_tensors="pt")
                hidden = self.model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                chunks.append(torch.nn.functional.normalize(pooled, dim=-1))
        return torch.cat(chunks) if chunks else torch.empty(0, 0)

    def similarities(self, texts: Sequence[str]):
        """Cosine similarity of each text to each discipline, shape (len(texts), 9)."""
        return self.embed(texts) @ self.prototypes.T

    def classify(self, texts: Sequence[str]) -> list[Discipline | None]:
        if not texts:
            return []
        sims = self.similarities(texts)
        best, idx = sims.max(dim=1)
        return [DISCIPLINES[int(i)] if float(b) >= self.min_similarity else None
                for b, i in zip(best, idx)]


def from_tagged_topic(topic: str, text: str) -> Discipline | None:
    """The discipline a tagger's topic means for this text (see TOPIC_CANDIDATES)."""
    key = topic.strip().lower()
    if key in TOPIC_CANDIDATES:
        names, need_hits = TOPIC_CANDIDATES[key]
        among = [BY_NAME[n] for n in names]
        scores = keyword_scores(text, among)
        if scores:
            return BY_NAME[scores.most_common(1)[0][0]]
        return None if need_hits else among[0]
    return from_topic(key)
