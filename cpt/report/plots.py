"""The report's PNG plots, all against consumed tokens with the stage boundaries marked.

Figures are built with matplotlib's object API on the Agg canvas (no pyplot, no display, no
global figure state), so a report can be made on a headless node or inside another program.
Each `plot_*` function returns a Figure, or a string saying why its data is missing; the caller
skips that plot and puts the reason in the summary.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, Union

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import blended_transform_factory

from cpt.io import atomic_open
from cpt.report.runs import RunData, finite
from cpt.report.units import human
from cpt.report.summary import StreamTokens, overall_series

FIGSIZE = (9.0, 5.0)
DPI = 110
PlotResult = Union[Figure, str]


def smooth(values: Sequence[float]) -> list[float]:
    """Debiased exponential moving average (TensorBoard's), its span ~5% of the points."""
    span = max(1, round(len(values) / 20))
    alpha = 2.0 / (span + 1.0)
    out, avg, weight = [], 0.0, 0.0
    for v in values:
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out


def _axes(title: str, ylabel: str, run: RunData):
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_title(title)
    ax.set_xlabel("consumed tokens")
    ax.set_ylabel(ylabel)
    ax.xaxis.set_major_formatter(FuncFormatter(human))
    ax.grid(True, alpha=0.3)
    return fig, ax


def _stage_lines(ax, run: RunData) -> None:
    """A dashed vertical line with the stage's name where each stage starts."""
    label_at = blended_transform_factory(ax.transData, ax.transAxes)
    for stage in run.stages:
        ax.axvline(stage.start_tokens, linestyle="--", color="0.45", linewidth=1.0, zorder=3)
        ax.text(stage.start_tokens, 0.98, f" {stage.name}", transform=label_at, rotation=90,
                va="top", ha="left", fontsize=8, color="0.3", clip_on=True)


def _finish(fig: Figure, ax, run: RunData, legend: str = "inside") -> Figure:
    """Stage lines, legend ("inside" | "outside": on the right, in reverse so that it reads top-down
    like a stack of areas | "none"), tight layout."""
    _stage_lines(ax, run)
    if legend != "none" and ax.get_legend_handles_labels()[0]:
        if legend == "outside":
            ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), reverse=True)
        else:
            ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def _log_if_wide(ax, values: Sequence[float]) -> None:
    positive = [v for v in values if v > 0]
    if positive and max(positive) / min(positive) > 10:
        ax.set_yscale("log")


def plot_loss(run: RunData) -> PlotResult:
    points = [(r.tokens, finite(r.fields.get("loss"))) for r in run.kind("train")]
    points = [(x, y) for x, y in points if y is not None]
    if not points:
        return "no finite training loss logged"
    xs, ys = zip(*points)
    fig, ax = _axes("Training loss", "loss (nats/token)", run)
    ax.plot(xs, ys, color="tab:blue", alpha=0.25, linewidth=0.8, label="raw")
    ax.plot(xs, smooth(ys), color="tab:blue", linewidth=1.8, label="smoothed (EMA)")
    return _finish(fig, ax, run)


def plot_lr(run: RunData) -> PlotResult:
    points = [(r.tokens, finite(r.fields.get("lr"))) for r in run.kind("train")]
    points = [(x, y) for x, y in points if y is not None]
    if not points:
        return "no learning rate in the train records"
    xs, ys = zip(*points)
    fig, ax = _axes("Learning rate", "learning rate", run)
    ax.plot(xs, ys, color="tab:orange", linewidth=1.6, label="lr")
    ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
    return _finish(fig, ax, run, legend="none")


def plot_valid_ppl(run: RunData) -> PlotResult:
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in run.kind("eval"):
        for name, figures in sorted(r.fields.get("streams", {}).items()):
            ppl = finite(figures.get("ppl"))
            if ppl is not None:
                lines.setdefault(name, []).append((r.tokens, ppl))
    series = overall_series(run)
    overall = [(r.tokens, ppl) for r, ppl in series.points]
    if not lines and not overall:
        return "no eval records with a perplexity"
    fig, ax = _axes("Validation perplexity per stream", "perplexity", run)
    for name, pts in sorted(lines.items()):
        ax.plot(*zip(*pts), marker="o", markersize=3, linewidth=1.4, label=name)
    if overall:
        label = "overall" if series.left_out is None else f"overall without {', '.join(series.left_out)}"
        ax.plot(*zip(*overall), color="black", linestyle=":", marker="s", markersize=3, linewidth=2.0,
                label=label)
    _log_if_wide(ax, [y for pts in [*lines.values(), overall] for _, y in pts])
    return _finish(fig, ax, run)


def plot_mixture(run: RunData) -> PlotResult:
    records = [r for r in run.kind("data") if r.fields.get("weights")]
    if not records:
        return "no data records with stream weights"
    streams = sorted({s for r in records for s in r.fields["weights"]})
    # Weights are in force from the step after their record until the next record: a step plot,
    # held until the last consumed token of the run.
    xs = [r.tokens for r in records] + [max(records[-1].tokens, run.stages[-1].end_tokens)]
    fig, ax = _axes("Data mixture (stream weights)", "share of samples", run)
    bottom = [0.0] * len(xs)
    for s in streams:
        shares = [float(r.fields["weights"].get(s, 0.0)) for r in records]
        shares.append(shares[-1])
        top = [b + w for b, w in zip(bottom, shares)]
        ax.fill_between(xs, bottom, top, step="post", alpha=0.85, label=s, linewidth=0)
        bottom = top
    ax.set_ylim(0, 1)
    left = min(xs[0], run.stages[0].start_tokens)  # every stage line inside the fixed x range
    ax.set_xlim(left, max(xs[-1], left + 1))
    return _finish(fig, ax, run, legend="outside")


def plot_stream_tokens(run: RunData, st: StreamTokens) -> PlotResult:
    if not st.points:
        return "no data records with per-stream sample counts"
    streams = sorted({s for _, values in st.points for s in values})
    ylabel = "tokens drawn" if st.unit == "tokens" else "samples drawn (no recipe.yaml: seq_length unknown)"
    fig, ax = _axes(f"Cumulative {st.unit} per stream", ylabel, run)
    xs = [x for x, _ in st.points]
    for s in streams:
        ax.plot(xs, [values.get(s, 0) for _, values in st.points], marker="o", markersize=3,
                linewidth=1.4, label=f"{s} ({human(st.points[-1][1].get(s, 0))})")
    ax.yaxis.set_major_formatter(FuncFormatter(human))
    return _finish(fig, ax, run)


def save_png(fig: Figure, path: Path) -> None:
    """Render to a temporary name in the same folder, then rename: a reader never sees half a PNG."""
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png")


PLOTS: dict[str, tuple[str, Callable[..., PlotResult]]] = {
    "loss": ("loss.png", plot_loss),
    "lr": ("lr.png", plot_lr),
    "valid_ppl": ("valid_ppl.png", plot_valid_ppl),
    "mixture": ("mixture.png", plot_mixture),
    "stream_tokens": ("stream_tokens.png", plot_stream_tokens),
}


def write_plots(run: RunData, st: StreamTokens, out: Path) -> tuple[dict[str, str], dict[str, str]]:
    """({plot: file name} written into `out`, {plot: why skipped}).

    A skipped plot's file from an earlier report in the same folder is removed, so the folder
    never shows a plot of other data than its summary.
    """
    written, skipped = {}, {}
    for name, (filename, build) in PLOTS.items():
        result = build(run, st) if name == "stream_tokens" else build(run)
        path = out / filename
        if isinstance(result, str):
            skipped[name] = result
            if path.exists():
                path.unlink()
            continue
        save_png(result, path)
        written[name] = filename
    return written, skipped

