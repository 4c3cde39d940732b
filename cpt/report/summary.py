"""The run's numbers: stages, throughput, loss, per-stream validation PPL, mixture and tokens per stream.

Everything here is computed from `RunData` alone and returned as plain JSON-ready dicts, so
`summary.json`, `summary.md` and the plots show the same figures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

from cpt.report.runs import Record, RunData, Stage, finite

SUMMARY_VERSION = 1


@dataclass(frozen=True, slots=True)
class StreamTokens:
    """Per-stream consumption after each `data` record, cumulative over stages.

    `unit` is "tokens" (samples x the stage's seq_length) or "samples" when a folder has no
    recipe.yaml to read seq_length from.
    """

    unit: str
    points: list[tuple[int, dict[str, int]]]
    """(consumed tokens of the run, {stream: cumulative amount}) per data record"""
    as_of_step: Optional[int]


def stream_tokens(run: RunData) -> StreamTokens:
    """Tokens (or samples) drawn per stream, from the `data` records' cumulative sample counts.

    Counts are taken relative to the `data` record a stage writes at train start (at the stage's
    first consumed token), so a stage that restarts its blender at zero and one that inherits the
    previous stage's counts are both counted once. A stage without that record counts from zero.
    """
    in_tokens = run.seq_lengths_known
    unit = "tokens" if in_tokens else "samples"
    carried: dict[str, int] = {}
    points: list[tuple[int, dict[str, int]]] = []
    as_of: Optional[int] = None
    for stage in run.stages:
        records = [r for r in run.kind("data") if r.stage == stage.name and r.fields.get("samples")]
        if not records:
            continue
        baseline = records[0].fields["samples"] if records[0].tokens == stage.start_tokens else {}
        delta: dict[str, int] = {}
        for r in records:
            scale = run.folders[r.folder].seq_length if in_tokens else 1
            delta = {s: (n - baseline.get(s, 0)) * scale for s, n in r.fields["samples"].items()}
            streams = set(carried) | set(delta)
            points.append((r.tokens, {s: carried.get(s, 0) + delta.get(s, 0) for s in sorted(streams)}))
            as_of = r.step
        for s, n in delta.items():
            carried[s] = carried.get(s, 0) + n
    return StreamTokens(unit, points, as_of)


def _point(r: Record, ppl: float) -> dict[str, Any]:
    return {"ppl": ppl, "step": r.step, "tokens": r.tokens, "stage": r.stage}


def _change(first: dict[str, Any], last: dict[str, Any]) -> dict[str, Any]:
    pct = 100.0 * (last["ppl"] - first["ppl"]) / first["ppl"] if first["ppl"] else None
    return {"first": first, "last": last, "change_pct": pct}


@dataclass(frozen=True, slots=True)
class OverallSeries:
    """The overall validation PPL of each eval, comparable from one eval to the next.

    The trainer's overall PPL is token-weighted over the streams it validated (`overall_of:
    "streams"`) or over `data.valid_blend`. Over streams, it changes meaning when the set of streams
    changes (stage 2 adds a synthetic stream with a low PPL: the overall would drop with no model
    change), so it is recomputed over the streams every eval validated, and `streams` names them."""

    points: list[tuple[Record, float]]
    streams: Optional[list[str]] = None
    """None: the trainer's own overall (one stream set, or a fixed valid_blend)"""
    left_out: Optional[list[str]] = None
    """streams some evals did not validate, left out of the recomputed overall"""


def overall_series(run: RunData) -> OverallSeries:
    """The eval records' overall PPL, recomputed over the common streams where the stream set changed."""
    evals = [r for r in run.kind("eval") if finite(r.fields.get("ppl")) is not None]
    sets = [frozenset(r.fields.get("streams", {})) for r in evals]
    by_streams = evals and all(r.fields.get("overall_of") == "streams" for r in evals)
    if not by_streams or len(set(sets)) <= 1:
        return OverallSeries([(r, float(r.fields["ppl"])) for r in evals])
    common = sorted(frozenset.intersection(*sets))
    points = []
    for r in evals:
        figures = [r.fields["streams"][name] for name in common]
        tokens = sum(f.get("tokens") or 0 for f in figures)
        losses = [finite(f.get("loss")) for f in figures]
        if tokens and None not in losses:
            mean = sum(loss * (f.get("tokens") or 0) for loss, f in zip(losses, figures)) / tokens
            points.append((r, math.exp(min(mean, 50.0))))
    return OverallSeries(points, common, sorted(frozenset.union(*sets).difference(common)))


def validation(run: RunData) -> dict[str, Any]:
    """PPL at the first and last eval that measured it, per stream and overall ("what improved")."""
    firsts: dict[str, dict[str, Any]] = {}
    lasts: dict[str, dict[str, Any]] = {}
    overall = overall_series(run)
    overall_ppl = {id(r): ppl for r, ppl in overall.points}
    for r in run.kind("eval"):
        figures = {name: finite(v.get("ppl")) for name, v in r.fields.get("streams", {}).items()}
        figures["overall"] = overall_ppl.get(id(r))
        for name, ppl in figures.items():
            if ppl is None:
                continue
            firsts.setdefault(name, _point(r, ppl))
            lasts[name] = _point(r, ppl)
    streams = {name: _change(firsts[name], lasts[name]) for name in sorted(firsts) if name != "overall"}
    change = _change(firsts["overall"], lasts["overall"]) if "overall" in firsts else None
    if change is not None and overall.streams is not None:
        change.update(over_streams=overall.streams, left_out=overall.left_out)
    return {"evals": len(run.kind("eval")), "overall": change, "streams": streams}


def _stage_summary(run: RunData, stage: Stage) -> dict[str, Any]:
    train = [r for r in run.kind("train") if r.stage == stage.name]
    speeds = [v for v in (finite(r.fields.get("tokens_per_s")) for r in train) if v is not None]
    wall = stage.end_time - stage.start_time
    tokens = stage.end_tokens - stage.start_tokens
    return {
        "name": stage.name,
        "folders": [str(run.folders[i].path) for i in stage.folders],
        "first_step": stage.first_step,
        "last_step": stage.last_step,
        "steps": stage.last_step - stage.first_step,
        "train_records": len(train),
        "start_tokens": stage.start_tokens,
        "end_tokens": stage.end_tokens,
        "tokens": tokens,
        "wall_time_s": wall,
        "tokens_per_s_mean": sum(speeds) / len(speeds) if speeds else None,
        "tokens_per_wall_s": tokens / wall if wall > 0 else None,
    }


def _train(run: RunData) -> dict[str, Any]:
    records = run.kind("train")
    losses = [(r, finite(r.fields.get("loss"))) for r in records]
    losses = [(r, v) for r, v in losses if v is not None]
    first = {"loss": losses[0][1], "step": losses[0][0].step, "tokens": losses[0][0].tokens} if losses else None
    last = {"loss": losses[-1][1], "step": losses[-1][0].step, "tokens": losses[-1][0].tokens} if losses else None
    # one step's loss is a few samples of a changing mix (noisy): the means of the first and last
    # fifth of the logged steps (at most 100) say whether the loss went down
    window = max(1, min(100, len(losses) // 5))
    return {
        "records": len(records),
        "skipped_steps": sum(1 for r in records if r.fields.get("skipped") is True),
        "first": first,
        "last": last,
        "first_mean": _mean_loss(losses[:window]) if losses else None,
        "last_mean": _mean_loss(losses[-window:]) if losses else None,
    }


def _mean_loss(losses: list[tuple[Record, float]]) -> dict[str, Any]:
    return {"loss": sum(v for _, v in losses) / len(losses), "steps": len(losses),
            "from_step": losses[0][0].step, "to_step": losses[-1][0].step}


def _changed(r: Record) -> bool:
    """Whether a controller call changed the mixture: its `updated` flag, else before != after."""
    if isinstance(r.fields.get("updated"), bool):
        return r.fields["updated"]
    return r.fields.get("weights_after") != r.fields.get("weights_before")


def _mixture(run: RunData) -> dict[str, Any]:
    weights_records = [r for r in run.kind("data") if r.fields.get("weights")]
    calls = run.kind("mixture")
    final, as_of = None, None
    if weights_records:
        final, as_of = dict(weights_records[-1].fields["weights"]), weights_records[-1].step
    elif calls:
        final, as_of = dict(calls[-1].fields.get("weights_after", {})) or None, calls[-1].step
    per_hook: dict[str, dict[str, Any]] = {}
    for r in calls:
        entry = per_hook.setdefault(r.fields["hook"], {"calls": 0, "updates": 0, "update_steps": []})
        entry["calls"] += 1
        if _changed(r):
            entry["updates"] += 1
            entry["update_steps"].append(r.step)
    return {"final_weights": final, "as_of_step": as_of, "calls": len(calls),
            "updates": sum(e["updates"] for e in per_hook.values()), "per_hook": per_hook}


def summarize(run: RunData) -> dict[str, Any]:
    """Every number of the report, JSON-ready (None where the run did not log what it needs)."""
    stages = [_stage_summary(run, s) for s in run.stages]
    speeds = [v for v in (finite(r.fields.get("tokens_per_s")) for r in run.kind("train")) if v is not None]
    wall = sum(s["wall_time_s"] for s in stages)
    tokens = sum(s["tokens"] for s in stages)
    st = stream_tokens(run)
    return {
        "version": SUMMARY_VERSION,
        "folders": [
            {"path": str(f.path), "seq_length": f.seq_length, "records": f.records,
             "torn_last_line": f.torn_last_line, "records_without_tokens": f.without_tokens}
            for f in run.folders
        ],
        "duplicates_replaced": run.duplicates_replaced,
        "stages": stages,
        "totals": {
            "steps": sum(s["steps"] for s in stages),
            "tokens": tokens,
            "final_step": run.stages[-1].last_step,
            "final_tokens": run.stages[-1].end_tokens,
            "wall_time_s": wall,
            "tokens_per_s_mean": sum(speeds) / len(speeds) if speeds else None,
            "tokens_per_wall_s": tokens / wall if wall > 0 else None,
        },
        "train": _train(run),
        "validation": validation(run),
        "mixture": _mixture(run),
        "stream_tokens": {
            "unit": st.unit,
            "as_of_step": st.as_of_step,
            "values": st.points[-1][1] if st.points else {},
        },
    }
