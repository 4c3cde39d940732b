"""Findings' lines are decided by measured paired verdicts only, and findings.yaml names real sweeps,
arms and baselines."""
from __future__ import annotations

from pathlib import Path

import pytest

from cpt.sweep.findings import (WALL_FILE, Claim, decide, finished_runs, load_findings, measured_verdict,
                                 record_wall, wall_minutes)
from cpt.sweep.report import compare
from cpt.sweep.runner import DEFAULT_TRAIN_COMMAND
from cpt.sweep.spec import load_sweep

ROOT = Path(__file__).resolve().parents[1]
ND = "no significant difference"


@pytest.mark.parametrize("pairs, line", [
    ([("better", "better"), ("better", "better")], "reproduced"),
    ([("better", "better"), ("better", ND)], "not resolved at this scale"),
    ([("better", "better"), ("better", "worse")], "contradicted"),
    ([(ND, ND), ("worse", "worse")], "reproduced"),
    ([(ND, "worse"), ("worse", "worse")], "contradicted"),
    ([(ND, "better"), ("worse", ND)], "not resolved at this scale"),
    ([("worse", "better")], "contradicted"),
    ([("better", None)], "not run yet"),
    ([], "not run yet"),
])
def test_decide(pairs, line):
    assert decide(pairs) == line


def test_measured_verdict_reads_the_paired_difference():
    # arm b is lower than a by 1.0 +- 0.1 on three seeds: significantly better (lower is better)
    rows = [{"arm": arm, "seed": s, "metrics": {"ppl": 10.0 + s - ((1.0 + 0.1 * (s % 2)) if arm == "b" else 0.0)}}
            for arm in ("a", "b") for s in (1, 2, 3)]
    report = compare(rows, ["a", "b"], ["ppl"], "a")
    assert measured_verdict(report, Claim("ppl", "b", "a", "better")) == "better"
    assert measured_verdict(report, Claim("ppl/zh", "b", "a", "better")) is None


def test_shipped_findings_name_real_sweeps_arms_and_metrics():
    findings = load_findings(ROOT / "sweeps/llama3_synE_proxy/findings.yaml")
    assert sorted(f.key for f in findings) == ["1", "2", "3", "4", "4b", "4p", "5", "6"]  # 4p: finding 4 over one pass; 4b: banded
    for f in findings:
        spec = load_sweep(ROOT / f.sweep, DEFAULT_TRAIN_COMMAND)
        arms = {a.name for a in spec.arms}
        evals = {e.name for e in spec.evals}
        for c in f.claims:
            assert {c.arm, c.baseline} <= arms, (f.key, c)
            assert c.metric == "ppl" or c.metric.startswith("ppl/") or c.metric.split("/")[0] in evals, (f.key, c)
        assert f.out == f"runs/sweeps/{spec.name}"


def test_a_resumed_sweeps_wall_time_says_it_covers_only_the_runs_it_ran(tmp_path):
    """A sweep rerun after some runs finished times only the rest: the docs must not present that as the
    sweep's wall time."""
    import json

    for arm, seed in (("a", 1), ("a", 2), ("b", 1)):
        (tmp_path / "runs" / arm / f"seed-{seed}").mkdir(parents=True)
    (tmp_path / "runs" / "a" / "seed-1" / "result.json").write_text("{}")
    (tmp_path / "runs" / "a" / "seed-2" / "result.json").write_text("{}")
    assert finished_runs(tmp_path) == 2  # b/seed-1 has not committed
    record_wall(tmp_path, 90.0, [1.0], [2.0], "cpt sweep x", runs_ran=1, runs_done=2)
    wall = json.loads((tmp_path / WALL_FILE).read_text())
    assert wall_minutes(wall) == "1.5 min for 1 of 2 runs (the others ran in an earlier call)"
    record_wall(tmp_path, 90.0, [1.0], [2.0], "cpt sweep x", runs_ran=2, runs_done=2)
    assert wall_minutes(json.loads((tmp_path / WALL_FILE).read_text())) == "1.5 min"
    assert wall_minutes({"seconds": 90.0}) == "1.5 min"  # recorded before the counts were


def test_the_gpu_size_section_names_real_findings_and_says_how_to_run_them(monkeypatch, tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import proxy_findings

    findings = load_findings(ROOT / "sweeps/llama3_synE_proxy/findings.yaml")
    assert set(proxy_findings.GPU_SIZE_RUNS) <= {f.key for f in findings}
    monkeypatch.setattr(proxy_findings, "ROOT", tmp_path)  # no runs here
    summary: list[str] = []
    lines = proxy_findings.gpu_size_section(findings, summary)
    assert len(summary) == len(proxy_findings.GPU_SIZE_RUNS) and all("not run yet" in s for s in summary)
    text = "\n".join(lines)
    assert proxy_findings.PREPARE_GPU in text
    for key, folder in proxy_findings.GPU_SIZE_RUNS.items():
        sweep = next(f.sweep for f in findings if f.key == key)
        assert f"cpt sweep {sweep} --workdir runs/proxy_gpu --out {folder}" in text


def test_the_gpu_size_section_names_the_sweeps_whose_runs_were_reused(monkeypatch, tmp_path):
    import sys

    sys.path.insert(0, str(ROOT / "tools"))
    import proxy_findings

    monkeypatch.setattr(proxy_findings, "ROOT", tmp_path)
    rows = [{"arm": "clean", "seed": s,
             "reused_stages": {"bilingual": str(tmp_path / f"runs/g/share/runs/syn20/seed-{s}/bilingual")}}
            for s in (1, 2)]
    rows += [{"arm": "c30", "seed": 1},
             {"arm": "x", "seed": 1, "reused_stages": {"s1": "/elsewhere/sw/runs/a/seed-1/s1"}}]
    assert proxy_findings.reused_sweeps(rows) == {"runs/g/share": 2, "/elsewhere/sw": 1}
