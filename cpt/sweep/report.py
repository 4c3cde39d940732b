"""`cpt sweep report`: per arm the mean and t interval of each metric over seeds, and each arm's paired
difference with the baseline arm on the seeds both ran, labelled better / worse / no significant
difference (see cpt.sweep.stats for the rule). Writes `report.md`, `report.json` and one PNG per
metric (values by arm with their intervals and seeds; the differences against zero).

A metric's direction: lower is better unless it is listed in `higher_is_better` (perplexity and
loss, which the trainer measures, are lower-is-better). Runs that have not finished are listed,
never guessed: an arm's n is the number of seeds that finished.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence

from cpt.sweep.stats import NO_DIFFERENCE, mean_interval, paired_difference, verdict


def default_metrics(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Every collected perplexity (overall first, then per stream), then every eval's metric."""
    names = {m for r in rows for m in r["metrics"] if m == "ppl" or ("/" in m and not m.startswith("loss/"))}
    return sorted(names, key=lambda m: (m != "ppl", not m.startswith("ppl/"), m))


def _by_arm(rows: Sequence[dict[str, Any]], metric: str, arms: Sequence[str]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {a: {} for a in arms}
    for r in rows:
        value = r["metrics"].get(metric)
        if value is not None and r["arm"] in out:
            out[r["arm"]][r["seed"]] = float(value)
    return out


def compare(rows: Sequence[dict[str, Any]], arms: Sequence[str], metrics: Sequence[str], baseline: Optional[str],
            higher_is_better: Sequence[str] = (), confidence: float = 0.95) -> dict[str, Any]:
    """The report's figures as a JSON-able dict (see the module docstring)."""
    if baseline is not None and baseline not in arms:
        raise ValueError(f"--baseline {baseline!r} is not an arm of this sweep (arms: {', '.join(arms)})")
    out: dict[str, Any] = {"confidence": confidence, "baseline": baseline, "arms": list(arms), "metrics": {}}
    for metric in metrics:
        values = _by_arm(rows, metric, arms)
        lower = metric not in higher_is_better
        entry: dict[str, Any] = {"lower_is_better": lower, "arms": {}}
        for arm in arms:
            seeds = values[arm]
            if not seeds:
                entry["arms"][arm] = {"n": 0, "seeds": {}}
                continue
            stat = mean_interval([seeds[s] for s in sorted(seeds)], confidence).to_json()
            entry["arms"][arm] = {**stat, "seeds": {str(s): seeds[s] for s in sorted(seeds)}}
            if baseline is not None and arm != baseline and values[baseline]:
                entry["arms"][arm]["vs_baseline"] = _paired(seeds, values[baseline], confidence, lower)
        out["metrics"][metric] = entry
    return out


def _paired(arm: dict[int, float], base: dict[int, float], confidence: float, lower: bool) -> dict[str, Any]:
    try:
        diff, seeds = paired_difference(arm, base, confidence)
    except ValueError:
        return {"n": 0, "verdict": NO_DIFFERENCE, "note": "no seed in common with the baseline"}
    base_mean = sum(base[s] for s in seeds) / len(seeds)
    return {**diff.to_json(), "seeds": seeds, "relative": diff.mean / base_mean if base_mean else None,
            "verdict": verdict(diff, lower)}


def _fmt(x: Optional[float], digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}g}"


def _ci(d: dict[str, Any]) -> str:
    return "–" if d.get("low") is None else f"[{_fmt(d['low'])}, {_fmt(d['high'])}]"


def render_markdown(report: dict[str, Any], title: str, missing: Sequence[str]) -> str:
    conf = round(report["confidence"] * 100)
    base = report["baseline"]
    lines = [f"# Sweep {title}", "",
             f"Mean over seeds with its {conf}% t interval; " +
             (f"paired differences against **{base}** on the same seeds ({conf}% t interval), "
              f"a claim only when the interval excludes 0." if base else "no baseline given (no comparisons)."), ""]
    for metric, entry in report["metrics"].items():
        direction = "lower is better" if entry["lower_is_better"] else "higher is better"
        lines += [f"## {metric} ({direction})", ""]
        header = ["arm", "n", "mean", f"{conf}% CI"] + (["Δ vs " + base, f"Δ {conf}% CI", "Δ %", "verdict"] if base else [])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for arm in report["arms"]:
            a = entry["arms"][arm]
            row = [arm, str(a["n"]), _fmt(a.get("mean")), _ci(a)]
            if base:
                v = a.get("vs_baseline")
                if arm == base:
                    row += ["(baseline)", "", "", ""]
                elif v is None or not v.get("n"):
                    row += ["–", "–", "–", (v or {}).get("verdict", NO_DIFFERENCE)]
                else:
                    pct = "–" if v["relative"] is None else f"{100 * v['relative']:+.2f}%"
                    row += [f"{v['mean']:+.4g}", _ci(v), pct, f"**{v['verdict']}**" if v["verdict"] != NO_DIFFERENCE
                            else v["verdict"]]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    if missing:
        lines += [f"Runs without a result (not counted): {', '.join(missing)}", ""]
    return "\n".join(lines)


def plot_metric(report: dict[str, Any], metric: str, path: Path) -> None:
    """Values by arm (mean, interval, each seed) and, with a baseline, the paired differences."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cpt.io import atomic_open

    entry, arms, base = report["metrics"][metric], report["arms"], report["baseline"]
    fig = Figure(figsize=(10.0 if base else 6.0, 4.2), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2 if base else 1, squeeze=False)[0]
    ax = axes[0]
    for i, arm in enumerate(arms):
        a = entry["arms"][arm]
        ax.scatter([i] * len(a["seeds"]), list(a["seeds"].values()), s=14, color="0.6", zorder=2)
        if a["n"]:
            err = [[a["mean"] - a["low"]], [a["high"] - a["mean"]]] if a.get("low") is not None else None
            ax.errorbar([i], [a["mean"]], yerr=err, fmt="o", color="C0", capsize=5, zorder=3)
    ax.set_xticks(range(len(arms)), arms, rotation=20)
    ax.set_xlim(-0.5, len(arms) - 0.5)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric}: mean and {round(report['confidence'] * 100)}% CI over seeds")
    if base:
        ax = axes[1]
        others = [a for a in arms if a != base]
        for i, arm in enumerate(others):
            v = entry["arms"][arm].get("vs_baseline") or {}
            if v.get("n"):
                err = [[v["mean"] - v["low"]], [v["high"] - v["mean"]]] if v.get("low") is not None else None
                color = {"better": "C2", "worse": "C3"}.get(v["verdict"], "0.4")
                ax.errorbar([i], [v["mean"]], yerr=err, fmt="o", color=color, capsize=5)
        ax.axhline(0.0, color="0.3", linewidth=0.8)
        ax.set_xticks(range(len(others)), others, rotation=20)
        ax.set_xlim(-0.5, max(len(others), 1) - 0.5)
        ax.set_ylabel(f"{metric} - {base}")
        ax.set_title(f"paired Δ vs {base} (same seeds)")
    fig.tight_layout()
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


def write_report(rows: Sequence[dict[str, Any]], out: Path, title: str, arms: Sequence[str], metrics: Sequence[str],
                 baseline: Optional[str], higher_is_better: Sequence[str] = (), confidence: float = 0.95,
                 missing: Sequence[str] = ()) -> dict[str, Any]:
    """report.json, report.md and plots/METRIC.png under `out`; returns the report dict."""
    from cpt.io import write_json_atomic, write_text_atomic

    if not rows:
        raise ValueError(f"no finished run to report on ({len(missing)} runs without a result)")
    metrics = list(metrics) or default_metrics(rows)
    known = sorted({m for r in rows for m in r["metrics"]})
    unknown = [m for m in metrics if m not in known]
    if unknown:
        raise ValueError(f"metric(s) {', '.join(unknown)} not in the results (they have: {', '.join(known)})")
    report = compare(rows, arms, metrics, baseline, higher_is_better, confidence)
    report["missing"], report["plots"] = list(missing), {}
    for metric in metrics:
        name = f"plots/{metric.replace('/', '__')}.png"
        plot_metric(report, metric, out / name)
        report["plots"][metric] = name
    write_text_atomic(out / "report.md", render_markdown(report, title, missing))
    write_json_atomic(out / "report.json", report, sort_keys=False)
    return report


__all__ = ["compare", "default_metrics", "plot_metric", "render_markdown", "write_report"]
