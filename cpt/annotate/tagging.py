"""Batch topic tagging: the annotator that fills `topic` and `topic_conf` from a trained classifier.

Texts are truncated to the classifier's `max_length` (the head of a document decides its topic).
Documents that are empty, or whose text tokenizes to nothing in the classifier's encoder (only
whitespace or characters the tokenizer drops), are skipped with a reason rather than given a
confident guess.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from cpt.annotate.classifier import TopicClassifier
from cpt.annotate.docs import Doc
from cpt.annotate.store import Result


class TopicAnnotator:
    columns = ("topic", "topic_conf")

    def __init__(self, classifier: TopicClassifier, batch_size: int = 64):
        self.classifier, self.batch_size = classifier, batch_size

    def __call__(self, docs: Sequence[Doc]) -> list[Result]:
        results: list[Result | None] = [None] * len(docs)
        nonempty = []
        for i, doc in enumerate(docs):
            if doc.text.strip():
                nonempty.append(i)
            else:
                results[i] = Result(doc.doc_id, None, "empty")
        texts = [docs[i].text for i in nonempty]
        keep = []
        for i, has in zip(nonempty, self.classifier.encoder.has_tokens(texts)):
            if has:
                keep.append(i)
            else:
                results[i] = Result(docs[i].doc_id, None, "no_tokens")
        if keep:
            topics, conf = self.classifier.predict([docs[i].text for i in keep], [docs[i].lang for i in keep],
                                                   batch_size=self.batch_size)
            for i, topic, c in zip(keep, topics, conf):
                results[i] = Result(docs[i].doc_id, {"topic": topic, "topic_conf": float(c)})
        return [r for r in results if r is not None]


@dataclass(frozen=True)
class TopicAnnotatorFactory:
    """Picklable recipe for building the annotator inside a worker process."""

    columns: ClassVar[tuple[str, ...]] = TopicAnnotator.columns
    model_dir: str
    taxonomy_path: str | None = None
    device: str | None = None
    max_length: int | None = None
    batch_size: int = 64
    encoder: str | None = None
    """When set, the encoder the classifier must have been trained with (refused otherwise)."""

    def sources(self) -> tuple[str, ...]:
        """What the annotator is read from (`cpt.annotate.model_cache` keys on their files)."""
        return (self.model_dir,) + ((self.taxonomy_path,) if self.taxonomy_path else ())

    def __call__(self) -> TopicAnnotator:
        from cpt.annotate import taxonomy

        tax = taxonomy.load(self.taxonomy_path) if self.taxonomy_path else None
        clf = TopicClassifier.load(self.model_dir, tax, self.device, self.max_length, self.encoder)
        return TopicAnnotator(clf, self.batch_size)
