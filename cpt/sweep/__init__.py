"""Proxy experiments: arms x seeds of a recipe (or a pipeline of stages) -> results -> a report with
confidence intervals.

    cpt sweep SWEEP.yaml [--out SWEEP_DIR] [--executor local|ray|slurm|submitit-local ...]
    cpt sweep report SWEEP_DIR [--baseline ARM]

`spec` reads the sweep file, `plan` resolves every run's stage recipes, `runner` is the launch task
of one run (its stages as `cpt train` commands, resumable, committed by result.json), `collect`
reads the final evaluation into results.jsonl, `stats` and `report` turn it into means, t intervals
and paired differences, `driver` ties them to the executor seam (cpt.launch).
"""
from cpt.sweep.driver import finish_sweep, report_sweep, run_sweep
from cpt.sweep.spec import SweepError, SweepSpec, load_sweep

__all__ = ["SweepError", "SweepSpec", "finish_sweep", "load_sweep", "report_sweep", "run_sweep"]
