"""Proxy experiments: arms x seeds of a recipe (or a pipeline of stages) -> results -> a report with
confidence intervals.

    cpt sweep SWEEP.yaml [--out SWEEP_DIR] [--executor local|ray|slurm|submitit-local ...]
    cpt sweep report SWEEP_DIR [--baseline ARM]

`spec` reads the sweep file, `plan` resolves every run's stage recipes, `runner` is the launch task
of one run (its stages as `cpt train` commands, resumable, committed by result.json), `collect`
reads the final evaluation into results.jsonl, `stats` and `report` turn it into means, t intervals
and paired differences, `driver` ties them to the executor seam (cpt.launch), `reuse` gives a run
the stages another sweep already trained the same way (`--reuse-from`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from cpt.lazy import lazy_exports

if TYPE_CHECKING:
    from cpt.sweep.driver import finish_sweep, report_sweep, run_sweep
    from cpt.sweep.spec import SweepError, SweepSpec, load_sweep

_WHERE = {"finish_sweep": "driver", "report_sweep": "driver", "run_sweep": "driver", "SweepError": "spec",
          "SweepSpec": "spec", "load_sweep": "spec"}

__all__ = sorted(_WHERE)


# Imported on first use: a run's task (cpt.sweep.runner) needs neither the planner nor YAML.
__getattr__ = lazy_exports(__name__, _WHERE)
