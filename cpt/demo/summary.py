"""What the demo prints at the end: where everything is, what improved, and one JSON line.

The numbers come from the files the steps wrote (eval/ppl_before.json, eval/ppl_after.json,
eval/lm_eval_*.json, the stage run folders), so the summary of a resumed demo is the same as an
uninterrupted one's.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping


def _read(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.is_file() else None


def stream_ppl(result: Mapping[str, Any]) -> dict[str, float]:
    """{stream: ppl} of a `cpt eval ppl` result, plus `overall`; streams without a value are left out."""
    rows = {**result.get("streams", {}), "overall": result.get("overall", {})}
    return {name: round(float(r["ppl"]), 4) for name, r in rows.items() if r.get("ppl") is not None}


def change_pct(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {k: round(100.0 * (after[k] - before[k]) / before[k], 2) for k in before if k in after and before[k]}


LM_EVAL_METRICS = ("acc", "acc_norm")


def lm_eval_scores(result: Mapping[str, Any] | None) -> dict[str, float]:
    """{task/metric: value} of a `cpt eval lm-eval` result: the accuracy metrics only (not stderr,
    sample counts or task versions, which are numbers too)."""
    out: dict[str, float] = {}
    for task, metrics in sorted(((result or {}).get("tasks") or {}).items()):
        for k in LM_EVAL_METRICS:
            if isinstance(metrics.get(k), (int, float)):
                out[f"{task}/{k}"] = round(float(metrics[k]), 4)
    return out


PROBE = "en_general"
"""The demo recipes' probe stream: English (Usenet posts) that no stage trains on (weight 0)."""


def language_change(result: Mapping[str, Any] | None, before: Mapping[str, Any] | None) -> dict[str, float]:
    """Held-out PPL change in % per side ("zh": the zh_* streams; "en": every other stream the stages
    train on, code included; synthetic left out: it is new in stage 2; `PROBE`: the English no stage
    trains on), pooled over tokens (exp of the token-weighted mean NLL), from two `cpt eval ppl` results."""
    import math

    def side_of(name: str) -> str | None:
        if name == "synthetic":
            return None
        return "zh" if name.startswith("zh_") else PROBE if name == PROBE else "en"

    def pooled(res: Mapping[str, Any], side: str) -> float | None:
        nll = tokens = 0.0
        for name, row in (res.get("streams") or {}).items():
            if side_of(name) != side:
                continue
            if row.get("nll") is not None and row.get("tokens"):
                nll, tokens = nll + float(row["nll"]), tokens + float(row["tokens"])
        return math.exp(nll / tokens) if tokens else None

    out: dict[str, float] = {}
    for side in ("zh", "en", PROBE):
        b, a = pooled(before or {}, side), pooled(result or {}, side)
        if a is not None and b is not None:
            out[side] = round(100.0 * (a - b) / b, 2)
    return out


def bench_record(root: Path, seconds: float, steps_seconds: Mapping[str, float],
                 skipped: list[str], steps_cpu_seconds: Mapping[str, float] | None = None) -> dict[str, Any]:
    """The final JSON object: timing and per-stream PPL before/after."""
    before = _read(root / "eval" / "ppl_before.json") or {}
    after = _read(root / "eval" / "ppl_after.json") or {}
    pb, pa = stream_ppl(before), stream_ppl(after)
    return {
        "bench": "demo",
        "seconds": round(seconds, 1),
        "steps_seconds": {k: round(v, 1) for k, v in steps_seconds.items()},
        "steps_cpu_seconds": {k: round(v, 1) for k, v in (steps_cpu_seconds or {}).items()},
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "skipped_steps": skipped,
        "ppl_before": pb,
        "ppl_after": pa,
        "change_pct": change_pct(pb, pa),
        "change_pct_by_language": language_change(after, before),
        "lm_eval_before": lm_eval_scores(_read(root / "eval" / "lm_eval_before.json")),
        "lm_eval_after": lm_eval_scores(_read(root / "eval" / "lm_eval_after.json")),
    }


def final_stage_state(root: Path, stage: str) -> dict[str, Any]:
    """trainer_state.json of a stage's latest checkpoint ({} when there is none)."""
    from cpt.train.checkpoint import find_latest

    folder = find_latest(root / stage / "checkpoints")
    if folder is None or not (folder / "trainer_state.json").is_file():
        return {}
    return json.loads((folder / "trainer_state.json").read_text())


def describe(root: Path, record: Mapping[str, Any]) -> str:
    """Human-readable closing text: locations, the PPL table, lm-eval before/after."""
    lines = [f"demo folder: {root}"]
    for label, rel in (("corpus (jsonl)", "corpus"), ("token shards", "data"), ("topic classifier", "models/topic_clf"),
                       ("synthetic QA (jsonl)", "synth"), ("imported base model (megatron)", "models/base_mcore"),
                       ("stage 1 run", "stage1"), ("stage 2 run", "stage2"), ("exported model (HF)", "models/export"),
                       ("evaluations", "eval"), ("report (markdown + plots)", "report/summary.md"),
                       ("step logs", "logs"),
                       ("this summary; its JSON record", "summary.txt; result.json")):
        lines.append(f"  {label:<32} {root / rel}")
    for stage in ("stage1", "stage2"):
        st = final_stage_state(root, stage)
        if st:
            lines.append(f"  {stage}: ended at step {st.get('step')}, {st.get('consumed_tokens')} tokens consumed")
    pb, pa, ch = record["ppl_before"], record["ppl_after"], record["change_pct"]
    if pb:
        width = max(len(k) for k in pb)
        lines.append("")
        lines.append("held-out perplexity per stream (the imported model before -> the exported model after):")
        lines.append(f"  {'stream':<{width}}  {'before':>10}  {'after':>10}  {'change':>8}")
        for k in pb:
            after = pa.get(k)
            lines.append(f"  {k:<{width}}  {pb[k]:>10.3f}  {after if after is not None else float('nan'):>10.3f}  "
                         f"{ch.get(k, float('nan')):>+7.1f}%")
    by_lang = record.get("change_pct_by_language") or {}
    if by_lang:
        lines.append("")
        names = {"zh": "Chinese", "en": "English + code", PROBE: "English never trained on (Usenet posts)"}
        lines.append("what changed: " + "; ".join(f"{names[k]} held-out PPL {v:+.1f}%" for k, v in by_lang.items()))
    lb, la = record["lm_eval_before"], record["lm_eval_after"]
    if lb or la:
        lines.append("")
        lines.append("lm-eval (before -> after):")
        for k in sorted(set(lb) | set(la)):
            lines.append(f"  {k}: {lb.get(k, '-')} -> {la.get(k, '-')}")
    return "\n".join(lines)
