"""`--executor slurm` on a real Slurm cluster (sbatch, squeue): runs where `sinfo` answers, e.g. after
`tools/slurm_local.sh` (a one-node cluster without accounting storage, so sacct does not answer and
the driver must notice a killed job through squeue). The slices' array job and the dependent merge
job give the one-process bytes, also when a slice's process is SIGKILLed mid-slice."""
from __future__ import annotations

import shutil
import subprocess

import pytest

from cpt.cli import main
from launch_fixtures import corpus, killed_slice_launch, single  # noqa: F401


def _cluster_answers() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not _cluster_answers(), reason="no Slurm cluster answers here (tools/slurm_local.sh)")]


def test_slurm_array_and_merge_job_equal_one_process_after_a_killed_slice(corpus, single, tmp_path, monkeypatch):
    _, task = killed_slice_launch(corpus, single, tmp_path, monkeypatch, "slurm")
    assert "ended without a result" in task["attempts"][0]["error"] or "FAILED" in task["attempts"][0]["error"]


def test_slurm_sweep_runs_each_arm_as_a_job_and_equals_the_local_executor(tmp_path):
    """`cpt sweep --executor slurm`: every (arm, seed) a job whose `cpt train` trains; the collection
    is the dependent job; the results equal the local executor's run for run (runs are deterministic)."""
    import json

    from sweep_fixtures import write_base, write_sweep

    sweep = write_sweep(tmp_path, write_base(tmp_path / "base"), seeds=[1], report={})
    rows = {}
    for executor in ("slurm", "local"):
        out = tmp_path / executor
        assert main(["sweep", str(sweep), "--out", str(out), "--executor", executor, "--max-retries", "0"]) == 0
        rows[executor] = {(r["arm"], r["seed"]): r["metrics"]
                          for r in map(json.loads, (out / "results.jsonl").read_text().splitlines())}
    assert sorted(rows["slurm"]) == [("hi", 1), ("lo", 1)] and rows["slurm"] == rows["local"]
    summary = json.loads((tmp_path / "slurm" / "launch" / "summary.json").read_text())
    assert summary["spec"]["executor"] == "slurm" and summary["succeeded"] == 2
