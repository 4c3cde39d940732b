"""Write a report folder: the plots, then summary.md, then summary.json (the commit marker) last.

Each file is written under a temporary name and renamed, so a reader sees either the previous
report's file or the new one; `summary.json` appearing last means everything it names is in place.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from cpt.io import write_text_atomic
from cpt.report.markdown import render
from cpt.report.plots import write_plots
from cpt.report.runs import load_run
from cpt.report.summary import stream_tokens, summarize


def write_report(folders: Sequence[str | Path], out: str | Path) -> dict[str, Any]:
    """Read the stage folders, write plots + summary.md + summary.json into `out`; return the summary."""
    run = load_run(list(folders))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(run)
    summary["plots"], summary["skipped_plots"] = write_plots(run, stream_tokens(run), out)
    summary["notes"] = list(run.notes)
    write_text_atomic(out / "summary.md", render(summary))
    # allow_nan=False: a NaN that slipped through would make the file unreadable for strict parsers
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    return summary
