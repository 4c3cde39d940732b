"""A bridge to lm-evaluation-harness (`lm-eval`, an optional dependency) for an HF model folder.

Offline by construction: the Hub and datasets libraries are switched to offline mode before they
are imported, the model loads from a local folder, and tasks come from include paths whose YAML
point at local files (`dataset_path: json` + `dataset_kwargs.data_files`), such as the built-in
`cpt_next_sentence` tasks. A task of lm-eval's own catalogue works too when its dataset is already
in the local datasets cache.

Indexing lm-eval's ~14,000 catalogue tasks takes ~20 s, so the include paths are indexed alone
first and the catalogue only when a requested name is not found there.
"""
from __future__ import annotations

import difflib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

LM_EVAL_REQUIREMENT = "lm-eval==0.4.13"
INSTALL_HINT = f'pip install "{LM_EVAL_REQUIREMENT}"   (or: pip install "cpt[eval]")'
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


class LmEvalMissing(RuntimeError):
    """lm-eval is not installed; the message says which pip command installs it."""


@dataclass(frozen=True, kw_only=True)
class HarnessConfig:
    """One lm-eval run over a local HF folder."""

    model_dir: str
    """Local HF causal LM folder (config, weights, tokenizer)."""
    tasks: tuple[str, ...]
    """Task, group or tag names (built-in `cpt_next_sentence*`, include-path tasks, lm-eval's own)."""
    include_paths: tuple[str, ...] = ()
    """Folders of extra task YAML files."""
    limit: int | None = None
    """Evaluate only the first N documents of each task (None: all)."""
    num_fewshot: int | None = None
    """Few-shot examples per prompt (None: each task's default)."""
    batch_size: int = 8
    """Requests per forward pass."""
    device: str = "cpu"
    """torch device (cpu, cuda, cuda:1)."""
    dtype: str = "float32"
    """Model dtype (float32, bfloat16, float16, auto)."""
    extra_model_args: dict[str, Any] = field(default_factory=dict)
    """More keyword arguments for lm-eval's HFLM (e.g. max_length)."""

    def __post_init__(self) -> None:
        if not self.tasks:
            raise ValueError("no task given: pass --tasks NAME[,NAME...] (e.g. cpt_next_sentence)")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")


def import_lm_eval() -> Any:
    """Import lm_eval in offline mode, or raise LmEvalMissing with the install command."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import lm_eval
    except ImportError as exc:
        raise LmEvalMissing(f"lm-eval is not installed ({exc}); install it with: {INSTALL_HINT}") from None
    return lm_eval


def task_manager(tasks: Sequence[str], include_paths: Sequence[str]) -> Any:
    """An lm-eval TaskManager that knows every name in `tasks`; ValueError naming the unknown ones."""
    from lm_eval.tasks import TaskManager

    paths = [str(p) for p in include_paths]
    manager = TaskManager(include_path=paths or None, include_defaults=False) if paths else None
    if manager is None or any(t not in manager.all_tasks for t in tasks):
        manager = TaskManager(include_path=paths or None)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, manager.all_tasks, n=3)
            hints.append(f"{name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ValueError(f"unknown lm-eval task {'; '.join(hints)}; include paths searched: {paths or 'none'}")
    return manager


def _metrics(values: dict[str, Any]) -> dict[str, Any]:
    """lm-eval's `acc,none` keys -> `acc` (a filter other than `none` stays: `exact_match,strict`)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in ("alias", "name"):
            continue
        if key == "sample_len":
            out["samples"] = value
            continue
        metric, _, filt = key.partition(",")
        out[metric if filt in ("", "none") else key] = value
    return out


def score_metrics(results: dict[str, dict[str, Any]], directions: dict[str, dict[str, bool]]
                  ) -> tuple[dict[str, float], list[str]]:
    """({"TASK/METRIC": value}, the keys where higher is better) of the scores lm-eval declares a
    direction for (acc, acc_norm, exact_match,strict, ...), leaving out what is no score (stderr,
    sample counts, versions): the flat `metrics` every `cpt eval` output carries for a sweep."""
    scores: dict[str, float] = {}
    higher: list[str] = []
    for name, values in sorted(results.items()):
        for key, value in sorted(values.items()):
            direction = (directions.get(name) or {}).get(key.partition(",")[0])
            if direction is None or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            scores[f"{name}/{key}"] = float(value)
            if direction:
                higher.append(f"{name}/{key}")
    return scores, higher


def run_harness(config: HarnessConfig) -> dict[str, Any]:
    """Run lm-eval; return {tasks: {task: {metric: value}}, groups, model, lm_eval_version, ...}."""
    from cpt.annotate.modelfiles import check_model_dir

    model_dir = check_model_dir(config.model_dir, "model")
    for path in config.include_paths:
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--include-path {path} is not a folder")
    lm_eval = import_lm_eval()
    from cpt.eval.tasks import BUILTIN_NAMES, builtin_task_dir

    include = list(config.include_paths)
    if BUILTIN_NAMES.intersection(config.tasks):
        include.insert(0, str(builtin_task_dir()))
    manager = task_manager(config.tasks, include)
    start = time.perf_counter()
    model_args = {"pretrained": str(model_dir), "dtype": config.dtype, **config.extra_model_args}
    results = lm_eval.simple_evaluate(
        model="hf", model_args=model_args, tasks=list(config.tasks), num_fewshot=config.num_fewshot,
        batch_size=config.batch_size, device=config.device, limit=config.limit, task_manager=manager,
        log_samples=False,
    )
    if results is None:  # lm-eval returns None on ranks other than 0 of a multi-process run
        raise RuntimeError("lm-eval returned no results (not rank 0 of a distributed run?)")
    n_shot, versions = results.get("n-shot", {}), results.get("versions", {})
    tasks = {name: {**_metrics(values), "num_fewshot": n_shot.get(name), "version": versions.get(name)}
             for name, values in results["results"].items()}
    groups = {name: _metrics(values) for name, values in (results.get("groups") or {}).items()}
    scores, higher = score_metrics({**tasks, **groups}, results.get("higher_is_better") or {})
    return {
        "model": str(model_dir.resolve()),
        "lm_eval_version": lm_eval_version(),
        "tasks": tasks,
        "groups": groups,
        "metrics": scores,
        "higher_is_better": higher,
        "limit": config.limit,
        "num_fewshot": config.num_fewshot,
        "batch_size": config.batch_size,
        "device": config.device,
        "dtype": config.dtype,
        "include_paths": include,
        "seconds": round(time.perf_counter() - start, 3),
        "time": time.time(),
    }


def lm_eval_version() -> str:
    from importlib.metadata import version

    return version("lm-eval")
