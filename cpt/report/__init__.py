"""The run report: plots and a summary of one or more stage folders.

    runs.py      metrics.jsonl (+ recipe.yaml) of each folder -> deduplicated per-kind series, stages
    summary.py   the numbers (stages, throughput, loss, per-stream PPL change, mixture, stream tokens)
    plots.py     loss / lr / valid_ppl / mixture / stream_tokens PNGs against consumed tokens
    markdown.py  summary.md from the numbers
    units.py     1.2M-style numbers
    build.py     write_report(): all of it into one folder, summary.json last

`cpt report RUN_DIR [RUN_DIR ...] --out DIR` is the command-line face (cpt/commands/report.py).
"""
from cpt.lazy import lazy_exports
from cpt.report.runs import RunData, load_run
from cpt.report.summary import summarize

__all__ = ["RunData", "load_run", "summarize", "write_report"]


# write_report needs matplotlib, slow to import: only when asked for, so reading numbers stays fast
__getattr__ = lazy_exports(__name__, {"write_report": "build"})
