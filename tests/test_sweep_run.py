"""`cpt sweep` end to end on a tiny real sweep (2 arms x 2 seeds, two training steps per run): through
the local executor and submitit's local executor (the Slurm code path), a rerun that trains nothing,
a SIGKILLed run that resumes from its checkpoint, and a report whose figures are the hand-computed
means, t intervals and paired differences of results.jsonl."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import psutil
import pytest

from cpt.cli import main
from sweep_fixtures import IMPORT, write_base, write_imported_base, write_sweep

pytestmark = pytest.mark.slow

T_975_DF1 = 12.706204736174694  # Student's t, 0.975 quantile, 1 degree of freedom (2 seeds)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return write_base(tmp_path_factory.mktemp("sweep_base"))


def _rows(sweep_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep_dir / "results.jsonl").read_text().splitlines()]


def _attempts(log: str) -> list[str]:
    """A stage log split at each start of its command (the first piece precedes the first start)."""
    return re.split(r"^\[sweep\] \d{4}-\d\d-\d\d ", log, flags=re.M)


def _train_starts(sweep_dir: Path) -> int:
    return sum(len(_attempts(p.read_text())) - 1 for p in sweep_dir.glob("runs/*/*/logs/*.log"))


def _check_report(sweep_dir: Path, rows: list[dict]) -> None:
    report = json.loads((sweep_dir / "report" / "report.json").read_text())
    by = {(r["arm"], r["seed"]): r["metrics"] for r in rows}
    for metric in ("ppl", "ppl/en", "ppl/zh"):
        entry = report["metrics"][metric]
        lo, hi = [by[("lo", s)][metric] for s in (1, 2)], [by[("hi", s)][metric] for s in (1, 2)]
        for arm, values in (("lo", lo), ("hi", hi)):
            mean = (values[0] + values[1]) / 2
            half = T_975_DF1 * abs(values[0] - values[1]) / math.sqrt(2) / math.sqrt(2)  # sd of 2 = |a-b|/sqrt 2
            assert entry["arms"][arm]["mean"] == pytest.approx(mean, rel=1e-12)
            assert entry["arms"][arm]["half_width"] == pytest.approx(half, rel=1e-9)
        d = [hi[0] - lo[0], hi[1] - lo[1]]
        diff = entry["arms"]["hi"]["vs_baseline"]
        assert diff["mean"] == pytest.approx(sum(d) / 2, rel=1e-12)
        assert diff["half_width"] == pytest.approx(T_975_DF1 * abs(d[0] - d[1]) / 2, rel=1e-9)
        low, high = diff["mean"] - diff["half_width"], diff["mean"] + diff["half_width"]
        expected = "no significant difference" if low <= 0 <= high else ("better" if high < 0 else "worse")
        assert diff["verdict"] == expected
        assert (sweep_dir / "report" / report["plots"][metric]).stat().st_size > 1000
    md = (sweep_dir / "report" / "report.md").read_text()
    assert "## ppl/zh (lower is better)" in md and "(baseline)" in md


def test_local_sweep_end_to_end_and_rerun_trains_nothing(base, tmp_path, capsys):
    sweep = write_sweep(tmp_path, base)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--local-cpus", "2", "--max-retries", "0"]) == 0
    rows = _rows(out)
    assert [(r["arm"], r["seed"]) for r in rows] == [("lo", 1), ("lo", 2), ("hi", 1), ("hi", 2)]
    for r in rows:
        assert r["step"] == 2 and r["overall_of"] == "streams"
        assert {"ppl", "loss", "ppl/en", "ppl/zh", "loss/en", "loss/zh"} <= set(r["metrics"])
        assert all(math.isfinite(v) and v > 0 for v in r["metrics"].values())
    # the seeds reached the recipes: a different seed, different figures
    assert rows[0]["metrics"]["ppl/zh"] != rows[1]["metrics"]["ppl/zh"]
    recipe = (out / "runs" / "hi" / "seed-2" / "s1.yaml").read_text()
    assert "lr_max: 0.005" in recipe and "seed: 2" in recipe
    _check_report(out, rows)
    summary = json.loads((out / "launch" / "summary.json").read_text())
    assert summary["succeeded"] == 4 and summary["merge"]["ran"]
    assert _train_starts(out) == 4
    # the same command again: every run has its result, nothing trains, results identical
    before = (out / "results.jsonl").read_bytes()
    assert main(["sweep", str(sweep), "--out", str(out)]) == 0
    assert _train_starts(out) == 4 and (out / "results.jsonl").read_bytes() == before
    # the report command alone, against the other arm
    capsys.readouterr()
    assert main(["sweep", "report", str(out), "--baseline", "hi", "--metric", "ppl/zh"]) == 0
    assert "ppl/zh: lo " in capsys.readouterr().out
    assert list(json.loads((out / "report" / "report.json").read_text())["metrics"]) == ["ppl/zh"]


def test_lm_eval_scores_of_each_run_reach_results_and_the_report_as_higher_is_better(tmp_path):
    """`cpt eval lm-eval` as a sweep eval: each run's checkpoint (exported on the fly, its tokenizer the
    import's) answers the built-in next-sentence tasks; the scores land in results.jsonl as
    lm/TASK/METRIC (no stderr, no counts), and the report takes lm-eval's word that higher is better:
    hand-computed means and paired differences, verdicts in that direction."""
    pytest.importorskip("lm_eval")
    workdir = tmp_path / "work"
    base = write_imported_base(workdir)
    sweep = write_sweep(tmp_path, base, workdir=str(workdir), model_from=IMPORT, evals=[
        {"name": "lm", "args": ["eval", "lm-eval", "{checkpoints}", "--tasks", "cpt_next_sentence", "--limit", "4",
                                "--device", "cpu"]}])
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--local-cpus", "2", "--max-retries", "0"]) == 0
    rows = _rows(out)
    keys = [f"lm/cpt_next_sentence_{code}/{m}" for code in ("en", "zh") for m in ("acc", "acc_norm")]
    for r in rows:
        assert r["higher_is_better"] == sorted(keys)
        assert [k for k in r["metrics"] if k.startswith("lm/")] == keys
        assert all(r["metrics"][k] in (0.0, 0.25, 0.5, 0.75, 1.0) for k in keys)  # 4 items each
        scored = json.loads((out / "runs" / r["arm"] / f"seed-{r['seed']}" / "evals" / "lm.json").read_text())
        assert scored["checkpoint_step"] == 2 and scored["tasks"]["cpt_next_sentence_zh"]["samples"] == 4
    report = json.loads((out / "report" / "report.json").read_text())
    by = {(r["arm"], r["seed"]): r["metrics"] for r in rows}
    for key in keys:
        entry = report["metrics"][key]
        assert entry["lower_is_better"] is False
        for arm in ("lo", "hi"):
            assert entry["arms"][arm]["mean"] == pytest.approx((by[(arm, 1)][key] + by[(arm, 2)][key]) / 2)
        d = [by[("hi", s)][key] - by[("lo", s)][key] for s in (1, 2)]
        diff = entry["arms"]["hi"]["vs_baseline"]
        assert diff["mean"] == pytest.approx(sum(d) / 2)
        low, high = diff["low"], diff["high"]
        assert diff["verdict"] == ("better" if low > 0 else "worse" if high < 0 else "no significant difference")
    assert report["metrics"]["ppl/en"]["lower_is_better"] is True
    assert "## lm/cpt_next_sentence_en/acc (higher is better)" in (out / "report" / "report.md").read_text()


def test_submitit_local_sweep_end_to_end(base, tmp_path):
    pytest.importorskip("submitit")
    sweep = write_sweep(tmp_path, base)
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--executor", "submitit-local", "--max-retries", "0"]) == 0
    rows = _rows(out)
    assert sorted((r["arm"], r["seed"]) for r in rows) == [("hi", 1), ("hi", 2), ("lo", 1), ("lo", 2)]
    _check_report(out, rows)
    assert any((out / "launch" / "submitit").iterdir())


@pytest.mark.slow
def test_ray_sweep_end_to_end(base, tmp_path):
    """The same seam through Ray: the command starts a local Ray (2 CPUs), each run is a Ray task
    whose `cpt train` child trains; its results equal what the local executor gives."""
    pytest.importorskip("ray")
    sweep = write_sweep(tmp_path, base, seeds=[1], report={})
    out = tmp_path / "out"
    assert main(["sweep", str(sweep), "--out", str(out), "--executor", "ray", "--local-cpus", "2",
                 "--max-retries", "0"]) == 0
    rows = _rows(out)
    assert sorted((r["arm"], r["seed"]) for r in rows) == [("hi", 1), ("lo", 1)]
    summary = json.loads((out / "launch" / "summary.json").read_text())
    assert summary["spec"]["executor"] == "ray" and summary["succeeded"] == 2
    local = tmp_path / "local"
    assert main(["sweep", str(sweep), "--out", str(local), "--executor", "local", "--local-cpus", "2"]) == 0
    by_run = {(r["arm"], r["seed"]): r["metrics"] for r in _rows(local)}
    assert all(r["metrics"] == by_run[(r["arm"], r["seed"])] for r in rows)  # runs are deterministic


def test_pipeline_run_killed_in_stage_two_resumes_from_its_checkpoint(tmp_path):
    """Stage s2 starts from s1's checkpoint; the task is SIGKILLed once s2 saved a step; the retry
    skips the finished s1 and resumes s2 from its checkpoint (steps 3..5 of the run)."""
    from launch_fixtures import SliceKiller

    base = write_base(tmp_path / "base", steps=2)
    sweep = write_sweep(tmp_path, base, seeds=[7], arms={"only": {}}, report={},
                        base=[{"stage": "s1", "recipe": str(base)},
                              {"stage": "s2", "recipe": str(base),
                               "overrides": {"training.train_tokens": 64 * 8 * 3, "training.save_every": 1}}])
    out = tmp_path / "out"
    run = out / "runs" / "only" / "seed-7"
    trainers: list = []
    helpers: list[str] = []

    def stage_two_saved() -> bool:
        if not (run / "s2" / "checkpoints" / "latest").is_file():
            return False
        task_pid = json.loads((out / "launch" / "progress" / "only.seed-7.json").read_text())["pid"]
        trainers.extend(psutil.Process(task_pid).children(recursive=True))  # `cpt train` of s2 and its helpers
        helpers.extend(" ".join(p.cmdline()) for p in trainers)
        return True

    killer = SliceKiller(out / "launch", "only.seed-7", stage_two_saved, timeout=300)
    killer.start()
    assert main(["sweep", str(sweep), "--out", str(out), "--max-retries", "1"]) == 0
    killer.join()
    assert killer.killed_pid is not None and trainers
    assert any("multiprocessing" in h for h in helpers)  # what a SIGKILLed trainer leaves behind
    # the training process died with its task (PR_SET_PDEATHSIG), and its helpers (megatron's checkpoint
    # manager) were killed before the retry started: nothing of the first attempt outlives it
    alive = [p for p in trainers if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    assert not alive, [(p.pid, p.ppid(), p.cmdline()[:6]) for p in alive]
    summary = json.loads((out / "launch" / "summary.json").read_text())
    assert [a["ok"] for a in summary["tasks"][0]["attempts"]] == [False, True]
    assert len(_attempts((run / "logs" / "s1.log").read_text())) == 2
    s2 = _attempts((run / "logs" / "s2.log").read_text())
    assert len(s2) == 3 and "step 3/5" in s2[1] and re.search(r"killed [1-9]\d* leftover process", s2[1])
    assert "resumed from" in s2[2] and "step 3/5" not in s2[2] and "step 5/5" in s2[2]
    [row] = _rows(out)
    assert row["step"] == 5 and math.isfinite(row["metrics"]["ppl/zh"])
    assert set(row["stage_seconds"]) == {"s1", "s2"}
