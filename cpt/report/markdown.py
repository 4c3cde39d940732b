"""`summary.md`: the numbers of `summary.json` as a page a person reads, with the plots embedded."""
from __future__ import annotations

from typing import Any, Optional

from cpt.report.units import human

PLOT_TITLES = {
    "loss": "Training loss",
    "lr": "Learning rate",
    "valid_ppl": "Validation perplexity per stream",
    "mixture": "Data mixture",
    "stream_tokens": "Tokens per stream",
}


def _num(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _pct(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:+.1f}%"


def _rate(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


def _steps(steps: list[int], show: int = 8) -> str:
    head = ", ".join(str(s) for s in steps[:show])
    return head + (f", … ({len(steps) - show} more)" if len(steps) > show else "")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return out + [""]


def _stages(s: dict[str, Any]) -> list[str]:
    rows = [
        [st["name"], "<br>".join(f"`{f}`" for f in st["folders"]), f"{st['first_step']}→{st['last_step']}",
         str(st["steps"]), f"{human(st['start_tokens'])}→{human(st['end_tokens'])}", human(st["tokens"]),
         _duration(st["wall_time_s"]), _rate(st["tokens_per_s_mean"])]
        for st in s["stages"]
    ]
    t = s["totals"]
    rows.append(["**total**", "", "", str(t["steps"]), "", human(t["tokens"]), _duration(t["wall_time_s"]),
                 _rate(t["tokens_per_s_mean"])])
    lines = ["## Stages", ""]
    lines += _table(["stage", "folders", "steps (from→to)", "steps", "tokens (from→to)", "tokens", "wall time",
                     "mean tokens/s"], rows)
    lines.append("Wall time is first to last record of a stage (downtime between a crash and its resume "
                 "included); mean tokens/s is the mean of the logged per-step throughput"
                 + (f"; tokens per wall-clock second overall: {_rate(t['tokens_per_wall_s'])}."
                    if t["tokens_per_wall_s"] else "."))
    return lines + [""]


def _train(s: dict[str, Any]) -> list[str]:
    tr = s["train"]
    lines = ["## Training loss", ""]
    if tr["first"] is None:
        return lines + ["No finite training loss was logged.", ""]
    lines.append(f"- first: **{_num(tr['first']['loss'], 4)}** at step {tr['first']['step']} "
                 f"({human(tr['first']['tokens'])} tokens)")
    lines.append(f"- last: **{_num(tr['last']['loss'], 4)}** at step {tr['last']['step']} "
                 f"({human(tr['last']['tokens'])} tokens)")
    a, b = tr["first_mean"], tr["last_mean"]
    lines.append(f"- mean of the first {a['steps']} logged steps ({a['from_step']}–{a['to_step']}): "
                 f"**{_num(a['loss'], 4)}**; of the last {b['steps']} ({b['from_step']}–{b['to_step']}): "
                 f"**{_num(b['loss'], 4)}** (one step's loss is a few samples of a changing mix)")
    if tr["skipped_steps"]:
        lines.append(f"- steps skipped for non-finite values: {tr['skipped_steps']}")
    return lines + [""]


def _validation(s: dict[str, Any]) -> list[str]:
    v = s["validation"]
    lines = ["## Validation perplexity: what improved", ""]
    entries = list(v["streams"].items()) + ([("**overall**", v["overall"])] if v["overall"] else [])
    if not entries:
        return lines + ["No eval records with a perplexity.", ""]
    rows = [
        [name, _num(e["first"]["ppl"]), f"{e['first']['step']} ({human(e['first']['tokens'])})",
         _num(e["last"]["ppl"]), f"{e['last']['step']} ({human(e['last']['tokens'])})", _pct(e["change_pct"])]
        for name, e in entries
    ]
    lines += _table(["stream", "first PPL", "at step (tokens)", "last PPL", "at step (tokens)", "change"], rows)
    lines.append(f"{v['evals']} evaluations; a negative change is an improvement.")
    if v["overall"] and v["overall"].get("left_out"):
        lines.append(f"Overall: token-weighted over the streams every evaluation validated "
                     f"({', '.join(v['overall']['over_streams'])}); {', '.join(v['overall']['left_out'])} "
                     f"joined later and would change its meaning.")
    if not v["streams"]:
        lines.append("No per-stream validation was logged (data.valid_holdout = 0): overall only.")
    return lines + [""]


def _mixture(s: dict[str, Any]) -> list[str]:
    m, st = s["mixture"], s["stream_tokens"]
    lines = ["## Data mixture", ""]
    streams = sorted(set(m["final_weights"] or {}) | set(st["values"]))
    if streams:
        unit = st["unit"]
        rows = [[name, _num((m["final_weights"] or {}).get(name), 4),
                 f"{st['values'][name]:,}" if name in st["values"] else "n/a"] for name in streams]
        lines += _table(["stream", f"final weight (step {m['as_of_step']})",
                         f"{unit} drawn (as of step {st['as_of_step']})"], rows)
        if unit == "samples":
            lines.append("A run folder has no recipe.yaml, so seq_length is unknown: per-stream consumption "
                         "is in samples, not tokens.")
            lines.append("")
    else:
        lines += ["No data records (stream weights / samples) were logged.", ""]
    if m["per_hook"]:
        lines.append(f"Mixture updates: {m['updates']} (in {m['calls']} controller calls)")
        for hook, e in sorted(m["per_hook"].items()):
            n, steps = e["updates"], e["update_steps"]
            where = f" at step{'s' if len(steps) > 1 else ''} {_steps(steps)}" if steps else ""
            lines.append(f"- `{hook}`: {n} update{'' if n == 1 else 's'} in {e['calls']} call{'' if e['calls'] == 1 else 's'}{where}")
    else:
        lines.append("Mixture updates: none logged.")
    return lines + [""]


def render(s: dict[str, Any]) -> str:
    """The whole page; plots by path relative to summary.md (they sit beside it)."""
    lines = ["# Run report", ""]
    lines += [f"- `{f['path']}`" + ("" if f["seq_length"] else " (no recipe.yaml)") for f in s["folders"]]
    lines.append(f"- final step {s['totals']['final_step']}, {human(s['totals']['final_tokens'])} consumed tokens; "
                 f"{s['duplicates_replaced']} train/eval records superseded by a later one of the same stage "
                 f"and step (a resume repeats the steps after its checkpoint)")
    lines.append("")
    lines += _stages(s) + _train(s) + _validation(s) + _mixture(s)
    lines += ["## Plots", ""]
    for name, filename in s["plots"].items():
        lines += [f"### {PLOT_TITLES.get(name, name)}", "", f"![{PLOT_TITLES.get(name, name)}]({filename})", ""]
    if s["skipped_plots"] or s["notes"]:
        lines += ["## Notes", ""]
        lines += [f"- {PLOT_TITLES.get(n, n)} plot skipped: {why}" for n, why in s["skipped_plots"].items()]
        lines += [f"- {note}" for note in s["notes"]]
        lines.append("")
    return "\n".join(lines)
