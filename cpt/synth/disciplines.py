"""The nine disciplines of scientific QA, and how a tagger's topic names map onto them.

Llama-3-SynE synthesizes QA for mathematics, physics, chemistry, biology, astronomy, earth science,
medicine, computer science and liberal arts. Each discipline carries the data its two fallback
filters need when a document has no `topic`: keywords (counted as whole words) and a one-line
description (embedded once and compared against snippets). Keeping all of it here means adding a
discipline is one entry plus one prompt file.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Discipline:
    """One discipline: its canonical name, filter vocabulary, and the topic labels that mean it."""

    name: str
    """Canonical name; also the stem of its prompt file (`prompts/<name>.v<N>.txt`)."""
    description: str
    """One sentence embedded by the embedding filter as this discipline's prototype."""
    keywords: tuple[str, ...]
    """Lower-case whole words (or short phrases) counted by the keyword filter."""
    aliases: tuple[str, ...] = ()
    """Topic labels (lower-case) that taggers may use for this discipline."""


DISCIPLINES: tuple[Discipline, ...] = (
    Discipline(
        "mathematics",
        "Mathematics: numbers, algebra, geometry, calculus, proofs, theorems and equations.",
        ("theorem", "proof", "equation", "algebra", "geometry", "calculus", "integral", "derivative",
         "matrix", "polynomial", "prime", "lemma", "function", "vector", "probability", "topology",
         "number theory", "integer", "fraction", "triangle"),
        ("math", "maths", "mathematics"),
    ),
    Discipline(
        "physics",
        "Physics: forces, energy, motion, fields, waves, particles, quantum mechanics and relativity.",
        ("force", "energy", "momentum", "velocity", "acceleration", "quantum", "relativity", "electron",
         "photon", "magnetic", "electric", "thermodynamics", "particle", "wave", "gravity", "mass",
         "newton", "friction", "entropy", "optics"),
        ("physics",),
    ),
    Discipline(
        "chemistry",
        "Chemistry: atoms, molecules, chemical reactions, bonds, elements and compounds.",
        ("molecule", "atom", "reaction", "compound", "element", "bond", "acid", "base", "oxidation",
         "catalyst", "ion", "solution", "periodic table", "organic", "polymer", "electron", "valence",
         "isotope", "reagent", "ph"),
        ("chemistry", "chem"),
    ),
    Discipline(
        "biology",
        "Biology: living organisms, cells, genes, evolution, ecology and physiology.",
        ("cell", "gene", "dna", "protein", "organism", "species", "evolution", "enzyme", "bacteria",
         "photosynthesis", "ecosystem", "mitochondria", "chromosome", "plant", "animal", "tissue",
         "mutation", "genome", "membrane", "virus"),
        ("biology", "bio", "life science"),
    ),
    Discipline(
        "astronomy",
        "Astronomy: stars, planets, galaxies, the solar system, telescopes and cosmology.",
        ("star", "planet", "galaxy", "orbit", "telescope", "comet", "asteroid", "nebula", "supernova",
         "cosmology", "solar", "lunar", "moon", "black hole", "universe", "astronomer", "light-year",
         "constellation", "jupiter", "mars"),
        ("astronomy", "astrophysics", "space"),
    ),
    Discipline(
        "earth_science",
        "Earth science: geology, rocks, earthquakes, volcanoes, oceans, weather and climate.",
        ("rock", "mineral", "earthquake", "volcano", "plate", "tectonic", "ocean", "climate", "weather",
         "sediment", "erosion", "glacier", "atmosphere", "geology", "magma", "river", "soil",
         "fossil", "crust", "rainfall"),
        ("earth science", "earth_science", "geology", "geography", "geoscience", "environment"),
    ),
    Discipline(
        "medicine",
        "Medicine: diseases, patients, diagnosis, treatment, drugs, anatomy and public health.",
        ("disease", "patient", "treatment", "diagnosis", "symptom", "drug", "therapy", "clinical",
         "infection", "vaccine", "surgery", "cancer", "hospital", "dose", "physician", "syndrome",
         "chronic", "medication", "blood", "heart"),
        ("medicine", "medical", "health", "healthcare", "medicine_health"),
    ),
    Discipline(
        "computer_science",
        "Computer science: algorithms, data structures, programming, software, networks and computation.",
        ("algorithm", "computer", "software", "program", "programming", "data structure", "compiler",
         "database", "network", "complexity", "binary", "memory", "processor", "code", "recursion",
         "array", "operating system", "internet", "encryption", "machine learning"),
        ("computer science", "computer_science", "cs", "computing", "technology", "code", "programming"),
    ),
    Discipline(
        "liberal_arts",
        "Liberal arts: history, philosophy, literature, art, music, language, law and society.",
        ("history", "philosophy", "literature", "poet", "poem", "novel", "art", "music", "painting",
         "century", "empire", "war", "king", "religion", "culture", "language", "author", "society",
         "politics", "law"),
        ("liberal arts", "liberal_arts", "history", "philosophy", "literature", "arts", "humanities",
         "social science", "law", "politics", "humanities_history", "law_politics"),
    ),
)

BY_NAME: dict[str, Discipline] = {d.name: d for d in DISCIPLINES}


def discipline_names() -> tuple[str, ...]:
    """Canonical discipline names, in their fixed order."""
    return tuple(d.name for d in DISCIPLINES)


def get(name: str) -> Discipline:
    """The discipline called `name` (canonical or alias); `ValueError` listing the choices if none."""
    found = from_topic(name)
    if found is None:
        raise ValueError(f"unknown discipline {name!r}; choose from {', '.join(discipline_names())}")
    return found


def from_topic(topic: str) -> Discipline | None:
    """Map a topic label (canonical name or alias, any case, `-`/`_`/space alike) to a discipline."""
    key = topic.strip().lower().replace("-", " ").replace("_", " ")
    for d in DISCIPLINES:
        if key == d.name.replace("_", " ") or key in {a.replace("_", " ") for a in d.aliases}:
            return d
    return None
