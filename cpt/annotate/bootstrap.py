"""Labels where none exist: zero-shot by embedding similarity, or by asking a generator LLM.

Both labellers map texts to taxonomy topic ids and report a confidence, so the classifier can be
trained on the confident part of an unlabelled corpus (`cpt tag-train --bootstrap ...`). Neither is
silent about failure: the LLM labeller returns `None` for an answer naming no topic, and the
caller counts those.

- `EmbeddingLabeler`: cosine similarity between the text's sentence embedding and each topic's
  "name: description" embedding (topics of the text's language); confidence is the softmax of the
  similarities at temperature 0.05 (the scale sentence-embedding similarities vary on).
- `LLMLabeler`: any `cpt.synth` generator backend is shown the topic list and asked for one id;
  the first topic id (or name) in the answer is the label.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

from cpt.annotate.encoder import TextEncoder
from cpt.annotate.taxonomy import Taxonomy, Topic


class EmbeddingLabeler:
    def __init__(self, encoder: TextEncoder, taxonomy: Taxonomy, temperature: float = 0.05):
        self.encoder, self.taxonomy, self.temperature = encoder, taxonomy, temperature
        self._topic_vectors: dict[str, tuple[tuple[Topic, ...], np.ndarray]] = {}

    def _topics(self, lang: str) -> tuple[tuple[Topic, ...], np.ndarray]:
        if lang not in self._topic_vectors:
            topics = self.taxonomy.for_lang(lang)
            vectors = self.encoder.embed([f"{t.name}: {t.description}" for t in topics])
            self._topic_vectors[lang] = (topics, vectors)
        return self._topic_vectors[lang]

    def label(self, texts: Sequence[str], langs: Sequence[str] | None = None) -> tuple[list[str], np.ndarray]:
        """Topic id and confidence for each text."""
        langs = list(langs) if langs is not None else [self.taxonomy.langs[0]] * len(texts)
        vectors = self.encoder.embed(texts)
        labels: list[str] = []
        conf = np.zeros(len(texts), dtype=np.float32)
        for i, (v, lang) in enumerate(zip(vectors, langs)):
            topics, topic_vectors = self._topics(lang)
            sims = topic_vectors @ v / self.temperature
            p = np.exp(sims - sims.max())
            p /= p.sum()
            best = int(p.argmax())
            labels.append(topics[best].id)
            conf[i] = p[best]
        return labels, conf


PROMPT = """Classify the document into exactly one topic. Answer with the topic id only.

Topics:
{topics}

Document:
{text}

Topic id:"""


class LLMLabeler:
    """Asks a generator (cpt.synth.generators: transformers, vLLM, OpenAI-compatible) for a topic id."""

    def __init__(self, generator, taxonomy: Taxonomy, max_chars: int = 1500):
        self.generator, self.taxonomy, self.max_chars = generator, taxonomy, max_chars

    def prompt(self, text: str, lang: str) -> str:
        topics = "\n".join(f"- {t.id}: {t.name} ({t.description})" for t in self.taxonomy.for_lang(lang))
        return PROMPT.format(topics=topics, text=text[:self.max_chars])

    def parse(self, answer: str, lang: str) -> str | None:
        """The topic whose id or name occurs first in the answer; None when none does."""
        lowered = answer.lower()
        best: tuple[int, str] | None = None
        for t in self.taxonomy.for_lang(lang):
            for key in {t.id, t.id.replace("_", " "), t.name.lower()}:
                m = re.search(re.escape(key.lower()), lowered)
                if m and (best is None or m.start() < best[0]):
                    best = (m.start(), t.id)
        return best[1] if best else None

    def label(self, texts: Sequence[str], langs: Sequence[str] | None = None) -> list[str | None]:
        """Topic id per text, None where the answer named no topic (or the request failed)."""
        from cpt.synth.generators.base import ChatRequest, SamplingParams

        langs = list(langs) if langs is not None else [self.taxonomy.langs[0]] * len(texts)
        requests = [ChatRequest(str(i), [{"role": "user", "content": self.prompt(t, lang)}])
                    for i, (t, lang) in enumerate(zip(texts, langs))]
        params = SamplingParams(max_new_tokens=8, temperature=0.0)  # a topic id is a few tokens
        out: list[str | None] = [None] * len(texts)
        for completion in self.generator.generate(requests, params):
            i = int(completion.key)
            out[i] = None if completion.error else self.parse(completion.text, langs[i])
        return out
