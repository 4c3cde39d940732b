"""The run report: plots and a summary of one or more stage folders.

    runs.py      metrics.jsonl (+ recipe.yaml) of each folder -> deduplicated per-kind series, stages
    summary.py   the numbers (stages, throughput, loss, per-stream PPL change, mixture, stream tokens)
    plots.py     loss / lr / valid_ppl / mixture / stream_tokens PNGs against consumed tokens
    markdown.py  summary.md from the numbers
    units.py     1.2M-style numbers
    build.py     write_report(): all of it into one folder, summary.json last

`cpt report RUN_DIR [RUN_DIR ...] --out DIR` is the command-line face (cpt/commands/report.py).
"""
from typing import Any

from cpt.report.runs import RunData, load_run
from cpt.report.summary import summarize

__all__ = ["RunData", "load_run", "summarize", "write_report"]


def __getattr__(name: str) -> Any:
    # write_report needs matplotlib (~1-3 s to import): only when asked for, so reading numbers stays fast
    if name == "write_report":
        from cpt.report.build import write_report

        return write_report
    raise AttributeError(f"module 'cpt.report' has no attribute {name!r}")
