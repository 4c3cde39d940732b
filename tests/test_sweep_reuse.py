"""`cpt sweep --reuse-from`: a run takes the stages another sweep trained from the same recipe files
(paths of the two sweeps aside) instead of training them, hard-linked and marked with their source;
a different recipe, training command or workdir, or a run already started here, takes nothing."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from cpt.cli import main
from cpt.sweep.driver import write_plan
from cpt.sweep.plan import plan_runs
from cpt.sweep.reuse import match, read_sources, stage_keys, take
from cpt.sweep.runner import DEFAULT_TRAIN_COMMAND
from cpt.sweep.spec import load_sweep
from sweep_fixtures import write_base, write_sweep
from train_fixtures import stream_recipe, write_recipe

LO, HI, MID = {"schedule.lr_max": 1e-3}, {"schedule.lr_max": 5e-3}, {"schedule.lr_max": 2e-3}


def _planned(folder: Path, recipe: Path, arms: dict, name: str = "tiny", **extra):
    """A sweep file in `folder`, planned into folder/out (its files written, nothing trained)."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = load_sweep(write_sweep(folder, recipe, seeds=[1], arms=arms, report={}, name=name, **extra),
                      DEFAULT_TRAIN_COMMAND)
    runs = plan_runs(spec, (folder / "out").absolute())
    write_plan(spec, (folder / "out").absolute(), runs)
    return spec, {r.arm: r for r in runs}


def _fake_done(run, stage: str, seconds: float = 12.5) -> None:
    """A stage as its training leaves it: a checkpoint file and the done marker."""
    (run.stage_dir(stage) / "checkpoints").mkdir(parents=True)
    (run.stage_dir(stage) / "checkpoints" / "weights.bin").write_bytes(b"w" * 64)
    (run.folder / f"{stage}.done.json").write_text(json.dumps({"stage": stage, "seconds": seconds}))


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    recipe = stream_recipe("data/bilingual", tmp_path / "x", training={"train_tokens": 1024})
    return write_recipe(tmp_path / "base.yaml", recipe)


def test_keys_ignore_where_the_sweeps_are_but_not_what_they_train(tmp_path, base):
    a_spec, a = _planned(tmp_path / "a", base, {"lo": LO, "hi": HI})
    b_spec, b = _planned(tmp_path / "b" / "deeper", base, {"same": LO, "other": MID}, name="another")

    def keys(run, spec):
        texts = [(run.folder / f"{s}.yaml").read_text() for s, _ in run.stages]
        return stage_keys(texts, spec.train_command, spec.workdir, run.folder)

    assert str(a["lo"].folder) in (a["lo"].folder / "s1.yaml").read_text()  # the files do differ as text
    assert keys(a["lo"], a_spec) == keys(b["same"], b_spec)
    assert keys(a["lo"], a_spec) != keys(b["other"], b_spec)
    assert keys(a["lo"], a_spec) != keys(a["hi"], a_spec)
    assert stage_keys(["x"], ["cpt", "train"], "w", a["lo"].folder) != stage_keys(["x"], ["torchrun", "train"], "w",
                                                                                   a["lo"].folder)


def test_only_done_stages_of_an_equal_recipe_go_to_runs_not_started(tmp_path, base):
    _, a = _planned(tmp_path / "a", base, {"lo": LO, "hi": HI})
    _fake_done(a["lo"], "s1")
    a["hi"].stage_dir("s1").mkdir(parents=True)  # hi started but never finished: nothing to take
    spec, b = _planned(tmp_path / "b", base, {"same": LO, "again": HI, "started": LO})
    b["started"].stage_dir("s1").mkdir(parents=True)
    found = match(list(b.values()), spec.train_command, spec.workdir, read_sources([tmp_path / "a" / "out"]))
    assert list(found) == [str(b["same"].folder)]
    source, count = found[str(b["same"].folder)]
    assert source.folder == a["lo"].folder and count == 1

    (b["same"].folder / ".reuse-tmp-s1").mkdir()  # a copy killed half-way: removed, then done again
    assert take(b["same"], source, count) == ["s1"]
    copied = b["same"].stage_dir("s1") / "checkpoints" / "weights.bin"
    original = a["lo"].stage_dir("s1") / "checkpoints" / "weights.bin"
    assert os.stat(copied).st_ino == os.stat(original).st_ino  # hard links: no second copy of a checkpoint
    marker = json.loads((b["same"].folder / "s1.done.json").read_text())
    assert marker == {"stage": "s1", "seconds": 12.5, "reused_from": str(a["lo"].stage_dir("s1"))}
    assert not list(b["same"].folder.glob(".reuse-tmp-*"))
    # taken once, the run is started: a second look takes nothing
    assert match([b["same"]], spec.train_command, spec.workdir, read_sources([tmp_path / "a" / "out"])) == {}


def test_a_pipeline_takes_the_done_prefix_of_one_source_run(tmp_path, base):
    two = [{"stage": "s1", "recipe": str(base)},
           {"stage": "s2", "recipe": str(base), "overrides": {"training.train_tokens": 2048}}]
    _, a = _planned(tmp_path / "a", base, {"lo": LO}, base=two)
    _fake_done(a["lo"], "s1")  # s2 not done there
    spec, b = _planned(tmp_path / "b", base, {"lo": LO}, base=two)
    [(source, count)] = match([b["lo"]], spec.train_command, spec.workdir,
                              read_sources([tmp_path / "a" / "out"])).values()
    assert count == 1 and source.stages == ["s1", "s2"]
    # s2 loads its own run's s1: the files differ by that path, the keys of both stages do not
    assert str(b["lo"].stage_dir("s1")) in (b["lo"].folder / "s2.yaml").read_text()
    ours = stage_keys([(b["lo"].folder / f"{s}.yaml").read_text() for s in ("s1", "s2")], spec.train_command,
                      spec.workdir, b["lo"].folder)
    assert ours == source.keys


def test_a_folder_that_is_not_a_sweep_is_refused(tmp_path):
    with pytest.raises(ValueError, match="not a sweep folder"):
        read_sources([tmp_path])


@pytest.mark.slow
def test_a_sweep_reusing_another_trains_only_its_new_arm(tmp_path, capsys):
    base = write_base(tmp_path / "base")
    first = tmp_path / "first"
    first.mkdir()
    assert main(["sweep", str(write_sweep(first, base, seeds=[1], report={})), "--out", str(first / "out"),
                 "--local-cpus", "2", "--max-retries", "0"]) == 0
    second = tmp_path / "second"
    second.mkdir()
    sweep = write_sweep(second, base, seeds=[1], arms={"same": LO, "mid": MID}, report={"baseline": "same"})
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--out", str(second / "out"), "--reuse-from", str(first / "out"), "--plan"]) == 0
    plan = capsys.readouterr().out
    assert f"(reuses s1 of {first / 'out' / 'runs' / 'lo' / 'seed-1'})" in plan and plan.count("reuses") == 1
    assert main(["sweep", str(sweep), "--out", str(second / "out"), "--reuse-from", str(first / "out"),
                 "--local-cpus", "2", "--max-retries", "0"]) == 0
    rows = {r["arm"]: r for r in map(json.loads, (second / "out" / "results.jsonl").read_text().splitlines())}
    before = json.loads((first / "out" / "runs" / "lo" / "seed-1" / "result.json").read_text())
    assert rows["same"]["metrics"] == before["metrics"] and rows["same"]["stage_seconds"] == before["stage_seconds"]
    assert rows["same"]["reused_stages"] == {"s1": str(first / "out" / "runs" / "lo" / "seed-1" / "s1")}
    assert not (second / "out" / "runs" / "same" / "seed-1" / "logs" / "s1.log").exists()  # never trained here
    assert (second / "out" / "runs" / "mid" / "seed-1" / "logs" / "s1.log").is_file()
    assert "reused_stages" not in rows["mid"]
    assert rows["mid"]["metrics"]["ppl"] != rows["same"]["metrics"]["ppl"]
