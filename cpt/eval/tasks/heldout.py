"""`cpt_heldout_next_sentence_<lang>`: the next-sentence task built from a recipe's held-out documents.

The built-in `cpt_next_sentence_zh` draws its items from People's Daily (January 1998), which is
also what the proxy sweeps train on: a run may have read the very sentences it is asked about. This
task is made the same way (`cpt.eval.tasks.next_sentence.make_items`: two consecutive sentences of a
document, three distractors that are other items' answers from other documents) but only from the
documents the recipe's streams hold out (`cpt.eval.heldout`, the rule training uses), so no run of that recipe
has trained on any of its sentences. Each document's text is re-read from its source
(`cpt.shards.document_text`), not decoded from tokens, so the items do not depend on the tokenizer.

The folder is written atomically with a COMPLETE file recording where the items came from (recipe,
streams, held-out share and seed, documents); `cpt eval lm-eval --heldout-from` builds it beside the
results and puts it on lm-eval's include path.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from cpt.eval.tasks import write_task
from cpt.eval.tasks.next_sentence import LANGUAGES, SENTENCE_OK, make_items

HELDOUT_TAG = "cpt_heldout_next_sentence"


def heldout_task_name(lang: str) -> str:
    """The lm-eval name of the held-out task in language `lang`."""
    return f"{HELDOUT_TAG}_{lang}"


def heldout_texts(recipe_path: str | Path, streams: Sequence[str]) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    """(source, text) of every document the named streams of the recipe hold out, in shard order
    (a document in two streams once), and what was read (for the task's provenance)."""
    from cpt import shards
    from cpt.config import load_recipe
    from cpt.eval.heldout import heldout_documents

    recipe = load_recipe(recipe_path)
    by_name = {s.name: s for s in recipe.data.streams}
    unknown = [s for s in streams if s not in by_name]
    if unknown or not streams:
        raise ValueError(f"{recipe_path}: no stream {', '.join(map(repr, unknown)) or '(none given)'} "
                         f"(streams: {', '.join(by_name)})")
    fraction, seed = recipe.data.valid_holdout, recipe.data.valid_holdout_seed
    held = heldout_documents([by_name[s] for s in streams], fraction, seed)
    keys = sorted({key for stream in held for key in stream.keys()})
    opened: dict[str, Any] = {}
    texts = []
    for prefix, index in keys:
        if prefix not in opened:
            opened[prefix] = shards.open(prefix)
        texts.append((f"{prefix}#{index}", shards.document_text(opened[prefix], index)))
    info = {"recipe": str(recipe_path), "streams": list(streams), "valid_holdout": fraction,
            "valid_holdout_seed": seed, "held_out_documents": len(keys),
            "per_stream": {s.name: s.held_out for s in held}}
    return texts, info


def build_heldout_task(recipe_path: str | Path, streams: Sequence[str], lang: str, items: int,
                       folder: Path) -> dict[str, Any]:
    """Write the task into `folder` (atomically) and return its provenance (also its COMPLETE file)."""
    from cpt.io import atomic_dir

    if lang not in LANGUAGES:
        raise ValueError(f"--heldout-lang {lang!r}: expected one of {', '.join(LANGUAGES)}")
    name = heldout_task_name(lang)
    texts, info = heldout_texts(recipe_path, streams)
    documents = [(source, LANGUAGES[lang].paragraphs(text)) for source, text in texts]
    rows = make_items(lang, documents, items, SENTENCE_OK[lang], task=name)
    info = {"task": name, "items": len(rows), "documents_used": len({r["source"] for r in rows}), **info}
    with atomic_dir(folder) as tmp:
        write_task(tmp, folder, name, rows, LANGUAGES[lang].delimiter, tag=HELDOUT_TAG)
        (tmp / "COMPLETE").write_text(json.dumps(info) + "\n")
    return info


__all__ = ["HELDOUT_TAG", "build_heldout_task", "heldout_task_name", "heldout_texts"]
