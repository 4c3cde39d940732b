"""The topic taxonomy: which topics exist, per language, and what each one covers.

The taxonomy is data (`taxonomy.yaml` beside this module, replaceable with `--taxonomy FILE`), not
code, so a user can change the topic set without touching the classifier: the classifier's label
set is `Taxonomy.labels`, and a trained classifier folder carries the taxonomy it was trained on.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BUILTIN_PATH = Path(__file__).with_name("taxonomy.yaml")
FILE_NAME = "cpt_taxonomy.yaml"  # name of the taxonomy inside a classifier folder


class TaxonomyError(ValueError):
    """A taxonomy file is malformed or does not match what it is used with."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Topic:
    lang: str
    """Language code of the documents this topic applies to (`en`, `zh`, ...)."""
    id: str
    """Stable label written into metadata (`topic` column); shared across languages."""
    name: str
    """Human-readable name in the topic's language."""
    description: str
    """What documents on this topic talk about; embedded by zero-shot labelling, shown to LLMs."""
    subjects: tuple[str, ...] = ()
    """Benchmark subjects (MMLU for en, CMMLU for zh) this topic covers."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Taxonomy:
    name: str
    """Name of the taxonomy, stored with classifiers and in run summaries."""
    topics: tuple[Topic, ...]
    """All topics of all languages, in file order."""
    labels: tuple[str, ...] = field(init=False)
    """Distinct topic ids in first-appearance order: the classifier's label set."""

    def __post_init__(self) -> None:
        if not self.topics:
            raise TaxonomyError(f"taxonomy {self.name!r} has no topics")
        seen: set[tuple[str, str]] = set()
        for t in self.topics:
            if (t.lang, t.id) in seen:
                raise TaxonomyError(f"taxonomy {self.name!r}: topic {t.id!r} appears twice for lang {t.lang!r}")
            seen.add((t.lang, t.id))
        object.__setattr__(self, "labels", tuple(dict.fromkeys(t.id for t in self.topics)))

    @property
    def langs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(t.lang for t in self.topics))

    def for_lang(self, lang: str) -> tuple[Topic, ...]:
        """Topics of one language; unknown languages fall back to the first language's topics."""
        chosen = tuple(t for t in self.topics if t.lang == lang)
        return chosen or self.for_lang(self.langs[0])

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": 1,
            "name": self.name,
            "topics": [
                {"lang": t.lang, "id": t.id, "name": t.name, "description": t.description,
                 "subjects": list(t.subjects)}
                for t in self.topics
            ],
        }

    def save(self, path: Path) -> None:
        path.write_text(yaml.safe_dump(self.to_dict(), allow_unicode=True, sort_keys=False), encoding="utf-8")

    def fingerprint(self) -> str:
        """Identity of the label set, for checking a classifier against a taxonomy."""
        return json.dumps(list(self.labels))


def from_dict(data: Any, source: str) -> Taxonomy:
    """Validate a parsed taxonomy document; errors name the file and the offending entry."""
    if not isinstance(data, dict) or not isinstance(data.get("topics"), list):
        raise TaxonomyError(f"{source}: expected a mapping with a 'topics' list")
    topics = []
    for i, raw in enumerate(data["topics"]):
        if not isinstance(raw, dict):
            raise TaxonomyError(f"{source}: topics[{i}] is not a mapping")
        missing = [k for k in ("lang", "id", "name", "description") if not raw.get(k)]
        if missing:
            raise TaxonomyError(f"{source}: topics[{i}] lacks {', '.join(missing)}")
        unknown = set(raw) - {"lang", "id", "name", "description", "subjects"}
        if unknown:
            raise TaxonomyError(f"{source}: topics[{i}] has unknown keys {sorted(unknown)}")
        topics.append(Topic(lang=str(raw["lang"]), id=str(raw["id"]), name=str(raw["name"]),
                            description=str(raw["description"]),
                            subjects=tuple(str(s) for s in raw.get("subjects") or ())))
    return Taxonomy(name=str(data.get("name") or Path(source).stem), topics=tuple(topics))


def load(path: str | Path | None = None) -> Taxonomy:
    """Load a taxonomy file (YAML or JSON); `None` loads the built-in MMLU/CMMLU taxonomy."""
    path = Path(path) if path is not None else BUILTIN_PATH
    if path.is_dir():
        path = path / FILE_NAME
    if not path.is_file():
        raise TaxonomyError(f"taxonomy file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise TaxonomyError(f"{path}: not valid YAML/JSON: {e}") from e
    return from_dict(data, str(path))
