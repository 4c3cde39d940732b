"""Built-in lm-evaluation-harness tasks that run offline, built from installed text packages.

`builtin_task_dir()` writes each task as an lm-eval task YAML whose dataset is a local jsonl
(`dataset_path: json`), into a cache folder keyed on the builder version and item count, and
returns the folder (an lm-eval `--include_path`). The folder is made under a temporary name and
renamed when complete, so a half-built one is never used.

Tasks (tag `cpt_next_sentence` selects both):
  cpt_next_sentence_en   48 items, gensim's English Wikipedia sample
  cpt_next_sentence_zh   48 items, People's Daily (January 1998)
See `cpt.eval.tasks.next_sentence` for how items are made. Metrics: acc, acc_norm (chance 0.25).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from cpt.io import atomic_dir
from cpt.eval.tasks.next_sentence import LANGUAGES, SENTENCE_OK, make_items

VERSION = 4
"""Bump when the items or the YAML change: the cache key changes with it."""
ITEMS_PER_LANGUAGE = 48
TAG = "cpt_next_sentence"
TASK_NAMES: tuple[str, ...] = tuple(f"{TAG}_{code}" for code in LANGUAGES)
BUILTIN_NAMES: frozenset[str] = frozenset((TAG, *TASK_NAMES))
"""Names (tasks and tag) that need `builtin_task_dir()` on lm-eval's include path."""


def task_yaml(name: str, data_file: Path, delimiter: str, tag: str = TAG) -> dict:
    """The lm-eval task config of one language: multiple choice by log-likelihood over a local jsonl."""
    return {
        "task": name,
        "tag": tag,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "{{context}}",
        "doc_to_choice": "choices",
        "doc_to_target": "label",
        "target_delimiter": delimiter,
        "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": True} for m in ("acc", "acc_norm")],
        "metadata": {"version": float(VERSION)},
    }


def write_task(tmp: Path, final: Path, name: str, rows: list[dict], delimiter: str, tag: str = TAG,
               data_name: str | None = None) -> None:
    """Write task `name` (its items, as `data_name` or NAME.jsonl, and its YAML) into `tmp`, the folder
    being built that becomes `final`: the YAML points at the items' path under `final`, where lm-eval
    reads them."""
    data = tmp / (data_name or f"{name}.jsonl")
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    config = task_yaml(name, final / data.name, delimiter, tag)
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config, allow_unicode=True, sort_keys=False))


def builtin_task_dir(root: Path | None = None, items: int = ITEMS_PER_LANGUAGE) -> Path:
    """The folder holding the built-in tasks (built on first use, ~10 s; then read from the cache)."""
    from cpt.assets import cache_root

    root = Path(root) if root is not None else cache_root() / "eval_tasks"
    final = root / f"{TAG}-v{VERSION}-n{items}"
    if (final / "COMPLETE").is_file():
        return final
    if final.exists():  # an incomplete leftover of a killed build
        shutil.rmtree(final)
    # "keep": a concurrent builder that committed the same tasks first wins
    with atomic_dir(final, exist="keep") as tmp:
        for code, lang in LANGUAGES.items():
            rows = make_items(code, lang.documents(), items, SENTENCE_OK[code])
            write_task(tmp, final, f"{TAG}_{code}", rows, lang.delimiter, data_name=f"{code}.jsonl")
        (tmp / "COMPLETE").write_text(json.dumps({"version": VERSION, "items": items}) + "\n")
    return final


__all__ = ["BUILTIN_NAMES", "ITEMS_PER_LANGUAGE", "TAG", "TASK_NAMES", "VERSION", "builtin_task_dir", "task_yaml", "write_task"]
