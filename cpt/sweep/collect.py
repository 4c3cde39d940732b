"""What a run measured, and the sweep's results file.

A run's measures are the trainer's own evaluation at the run's final step (the last `eval` record
of its last stage's metrics.jsonl; a resumed run may repeat a step, the later record wins):

    ppl, loss              over all validation data (`overall_of` says of what)
    ppl/STREAM, loss/STREAM  per stream, on its held-out documents (data.valid_holdout)
    NAME/KEY               the numbers under `metrics` of the sweep's eval NAME (RUN/evals/NAME.json,
                           e.g. `cpt eval qa-nll`'s answer_nll, `cpt eval lm-eval`'s TASK/acc); the
                           keys the output lists under `higher_is_better` go to the run's
                           `higher_is_better`, which the report reads as those metrics' direction

`SWEEP_DIR/results.jsonl` holds one line per finished run (arm and seed order of the sweep file),
rewritten whole and atomically from the runs' committed `result.json` files, so it is never torn
and never lists a run that did not finish.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable

RESULTS_FILE = "results.jsonl"


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def final_eval_metrics(metrics_path: Path) -> tuple[dict[str, float], dict[str, Any]]:
    """({metric: value}, {"step", "consumed_tokens", "overall_of"}) of the final evaluation."""
    from cpt.report.runs import read_metrics

    if not metrics_path.is_file():
        raise ValueError(f"{metrics_path}: no metrics file (did the stage train?)")
    records, _ = read_metrics(metrics_path)
    evals = [r for _, r in records if r.get("kind") == "eval"]
    if not evals:
        raise ValueError(f"{metrics_path}: no eval record; a sweep compares held-out figures: give the recipe "
                         f"validation data (data.valid_holdout with streams, or data.valid_blend)")
    last_step = max(int(r["step"]) for r in evals)
    final = [r for r in evals if int(r["step"]) == last_step][-1]
    metrics: dict[str, float] = {}
    for key in ("ppl", "loss"):
        if _finite(final.get(key)) is not None:
            metrics[key] = _finite(final[key])
    for stream, figures in sorted((final.get("streams") or {}).items()):
        for key in ("ppl", "loss"):
            value = _finite(figures.get(key)) if isinstance(figures, dict) else None
            if value is not None:
                metrics[f"{key}/{stream}"] = value
    return metrics, {"step": last_step, "consumed_tokens": final.get("consumed_tokens"),
                     "overall_of": final.get("overall_of")}


def _eval_output(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("metrics"), dict):
        raise ValueError(f"{path}: no 'metrics' mapping (the sweep collects an eval's numbers from there)")
    return data


def eval_output_metrics(path: Path, name: str) -> dict[str, float]:
    """NAME/KEY -> value for every finite number under the `metrics` mapping of an eval's output JSON."""
    figures = _eval_output(path)["metrics"]
    return {f"{name}/{key}": _finite(value) for key, value in sorted(figures.items()) if _finite(value) is not None}


def eval_output_higher_is_better(path: Path, name: str) -> list[str]:
    """NAME/KEY for the keys of `metrics` that the eval's output lists under `higher_is_better`
    (e.g. lm-eval accuracies); every other metric is lower-is-better."""
    data = _eval_output(path)
    keys = data.get("higher_is_better") or []
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise ValueError(f"{path}: 'higher_is_better' must be a list of metric names")
    return [f"{name}/{key}" for key in keys if key in data["metrics"]]


def read_results(sweep_dir: Path) -> list[dict[str, Any]]:
    """The rows of SWEEP_DIR/results.jsonl; a malformed line is an error naming file:line."""
    path = sweep_dir / RESULTS_FILE
    if not path.is_file():
        raise ValueError(f"{path}: no results yet (run `cpt sweep SWEEP.yaml --out {sweep_dir}` first)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: not JSON ({exc})") from None
        for key, kind in (("arm", str), ("seed", int), ("metrics", dict)):
            if not isinstance(row.get(key), kind):
                raise ValueError(f"{path}:{number}: field '{key}' must be {kind.__name__}")
        rows.append(row)
    return rows


def write_results(sweep_dir: Path, run_folders: Iterable[Path]) -> tuple[int, list[str]]:
    """Rewrite results.jsonl from the runs' result.json files: (rows written, runs without a result)."""
    from cpt.io import write_jsonl_atomic
    from cpt.sweep.runner import RESULT_FILE

    rows, missing = [], []
    for folder in run_folders:
        path = Path(folder) / RESULT_FILE
        if path.is_file():
            rows.append(json.loads(path.read_text()))
        else:
            missing.append(f"{Path(folder).parent.name}/{Path(folder).name}")
    write_jsonl_atomic(sweep_dir / RESULTS_FILE, rows)
    return len(rows), missing


__all__ = ["RESULTS_FILE", "eval_output_higher_is_better", "eval_output_metrics", "final_eval_metrics", "read_results", "write_results"]
